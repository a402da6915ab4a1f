"""Which runs a packed training job already holds: unchanged runs are kept, not retrained.

Snakemake re-runs a packed job as a whole when it gains a run (a new variant,
trial or seed in its range). Its runs are ``update()`` outputs, so the runs it
wrote last time are still in place, and its manifest (written last, so only by
a job that finished) lists each TSV with its SHA-256. A run is reused when

- the previous manifest lists its TSV and sidecar, the TSV still has the
  recorded SHA-256 and the sidecar is there; and
- the sidecar's ``settings_sha256`` equals the digest of what determines the
  run's numbers now (``settings_digest``): its settings (problem, loss,
  optimizer, variant, steps, schedule, file digests), seed, numerics mode,
  requested engine, threads, device, torch version and the training code.

Anything else is trained again. Standard library only (training jobs).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from optbench import runfiles

# Spec keys that say where the job runs from, not what it computes.
_LOCATION_KEYS = ("problems_dir", "optimizers_dir")


def settings_digest(spec: dict, seed: int, context: dict) -> str:
    """SHA-256 of everything that determines one run's numbers."""
    settings = {key: value for key, value in spec.items() if key not in _LOCATION_KEYS}
    text = json.dumps({"spec": settings, "seed": seed, **context}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def previous_runs(manifest: str | Path | None) -> dict[str, tuple[str, str]]:
    """TSV path -> (sidecar path, TSV SHA-256) of the job's last finished run; {} if none."""
    if not manifest:
        return {}
    try:
        entries = runfiles.read_manifest(manifest)
    except (OSError, runfiles.RunFileError):
        return {}
    return {tsv: (sidecar, digest) for tsv, sidecar, digest in entries}


def unchanged(tsv: str, sidecar: str, digest: str, previous: dict) -> bool:
    """Whether the run at ``tsv``/``sidecar`` is the one its settings ``digest`` asks for."""
    recorded = previous.get(tsv)
    if recorded is None or recorded[0] != sidecar:
        return False
    try:
        if hashlib.sha256(Path(tsv).read_bytes()).hexdigest() != recorded[1]:
            return False
        metadata = json.loads(Path(sidecar).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(metadata, dict) and metadata.get("settings_sha256") == digest
