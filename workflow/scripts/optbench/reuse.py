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

A run the job's own manifest does not hold is looked up by its settings
digest in the run index (``results/run-index``, shared by every study): the
index lists, per digest, where such runs were written, with their TSV's
SHA-256. The first one whose files are intact (same SHA-256, sidecar with that
digest) is used: in place when it is this run's own path, else copied into
place (copies follow the umask, as every file the pipeline writes). So a job
whose seed range grew (its name and manifest changed), a job of another
job_scope or seeds_per_job, and another study with the same settings all
reuse what was trained, and only new runs train.

Anything else is trained again. Standard library only (training jobs).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from pathlib import Path

from optbench import runfiles
from optbench.planning.run_settings import digested


def settings_digest(settings: Mapping, seed: int, context: dict, spec: dict | None = None) -> str:
    """SHA-256 of everything that determines one run's numbers: its settings
    (planning.run_settings, where it runs from left out), seed and job context.
    ``spec``: ``digested(settings)`` when the caller has it (once a cell, not a run)."""
    spec = digested(settings) if spec is None else spec
    text = json.dumps({"spec": spec, "seed": seed, **context}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


# Where a job's manifest is moved when one of its runs was changed by hand
# (planning.recovery.set_aside): the job then runs again and reads it here.
PREVIOUS = ".previous"


def previous_runs(manifest: str | Path | None) -> dict[str, tuple[str, str]]:
    """TSV path -> (sidecar path, TSV SHA-256) of the job's last finished run, from
    its manifest or, where that was set aside, <manifest>.previous; {} if none."""
    if not manifest:
        return {}
    for path in (manifest, f"{manifest}{PREVIOUS}"):
        try:
            entries = runfiles.read_manifest(path)
        except (OSError, runfiles.RunFileError):
            continue
        return {tsv: (sidecar, digest) for tsv, sidecar, digest in entries}
    return {}


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


# ------------------------------------------------ the run index, by digest

# Locations kept per digest: the newest first (more would only be older copies).
KEPT_LOCATIONS = 8


def index_entry(index: str | Path, digest: str) -> Path:
    """The index file of one settings digest (two-character folders keep each small)."""
    return Path(index, digest[:2], f"{digest}.json")


def locations(index: str | Path | None, digest: str) -> list[dict]:
    """Where runs of this digest were written: {tsv, sidecar, tsv_sha256} each, newest first."""
    if not index:
        return []
    try:
        listed = json.loads(index_entry(index, digest).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(listed, list):
        return []
    return [
        place
        for place in listed
        if isinstance(place, dict) and {"tsv", "sidecar", "tsv_sha256"} <= set(place)
    ]


def remember(index: str | Path | None, digest: str, tsv: str, sidecar: str) -> None:
    """Lists the run at ``tsv``/``sidecar`` (written, or put in place) under its digest."""
    if not index:
        return
    found = {"tsv": str(tsv), "sidecar": str(sidecar), "tsv_sha256": _sha256(tsv)}
    others = [place for place in locations(index, digest) if place["tsv"] != found["tsv"]]
    listed = [found, *others][:KEPT_LOCATIONS]
    runfiles.write_text_atomic(index_entry(index, digest), json.dumps(listed) + "\n")


def intact(tsv: str, sidecar: str, tsv_sha256: str, digest: str) -> bool:
    """Whether the run at ``tsv``/``sidecar`` still holds what was written for ``digest``."""
    try:
        if _sha256(tsv) != tsv_sha256:
            return False
        metadata = json.loads(Path(sidecar).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(metadata, dict) and metadata.get("settings_sha256") == digest


def find(index: str | Path | None, digest: str, tsv: str, sidecar: str) -> dict | None:
    """An intact run of this digest (its own path first), or None."""
    places = sorted(locations(index, digest), key=lambda place: place["tsv"] != str(tsv))
    for place in places:
        if intact(place["tsv"], place["sidecar"], place["tsv_sha256"], digest):
            return place
    return None


def put_in_place(place: dict, tsv: str, sidecar: str) -> bool:
    """Copies the run at ``place`` to ``tsv``/``sidecar`` (sidecar and held-out table
    first, TSV last, as runfiles.write_run); True when it was elsewhere."""
    if Path(place["tsv"]) == Path(tsv):
        return False
    for source, target in (
        (place["sidecar"], sidecar),
        (runfiles.heldout_path(place["tsv"]), runfiles.heldout_path(tsv)),
        (place["tsv"], tsv),
    ):
        if not Path(source).is_file():
            Path(target).unlink(missing_ok=True)  # a stale held-out table
            continue
        # Into a new file (runfiles.atomic_path): its mode follows the umask,
        # not the source's (shutil.copy would copy it).
        with runfiles.atomic_path(target) as temporary:
            shutil.copyfile(source, temporary)
    return True


def _sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
