"""Results across machines: a study's runs exported with their provenance into one
bundle, and bundles from several hosts merged into one study folder.

A **bundle** is one ``.tar.gz`` file: ``bundle.json`` (the provenance, below),
the study's record ``study.json`` where it has one, and every run's files under
``runs/`` as the study folder holds them (TSV, sidecar, held-out table). The
provenance says who made what: the host's name, the exporting checkout's code
digest (``planning.commands.training_code_digest``), and per run its path, its
settings digest (``settings_sha256``, which covers the settings, seed, numerics
mode, engine, threads, device, torch version and training code), the SHA-256 of
its TSV and held-out table, its torch version and its numerics record's CPU,
instruction sets and mode (``engines.numerics``).

The **merge** unpacks bundles into a new study folder. A run that several
bundles hold is compared byte for byte: runs with the same settings digest made
in the portable mode must be identical (that is the mode's promise), so any
difference is refused with the runs named and the fixes; so is a run whose
bundles disagree on its settings digest (other settings or code at one path).
``merge/reproducibility.tsv`` counts, per pair of hosts, the runs compared,
identical and differing; ``merge/runs.tsv`` says, per run, which hosts held it
and whose files were kept; ``merge/timing.tsv`` which host's timing pass each
(problem, loss, optimizer) carries. Each merged run is listed in the run index
(``reuse``), so the pipeline run on the merged study reuses it, trains nothing
that a bundle held, and makes the analysis.

Timing: the losses are the same bits on every host, the seconds are not. A
run's sidecar (with its ``step_timing``) is taken from the first bundle given
that holds it, so each run keeps one host's own timing pass, never a blend.

Standard library only.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import tarfile
import time
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path, PurePosixPath

from optbench import reuse, runfiles

FORMAT = 1
MANIFEST = "bundle.json"
STUDY_RECORD = "study.json"
RUNS = "runs"
MERGE_FOLDER = "merge"
REPRODUCIBILITY_HEADER = ("host_a", "host_b", "runs_compared", "identical", "differing")


class BundleError(ValueError):
    """A bundle cannot be written, read or merged; the message names the fix."""


@dataclass(frozen=True)
class Run:
    """One run of a bundle: where it sits in the study folder and what it is."""

    tsv: str  # relative to the study folder: runs/<problem>/<loss>/<optimizer>/<variant>/seedN.tsv
    settings_sha256: str | None
    tsv_sha256: str
    heldout_sha256: str | None
    numerics_mode: str | None
    torch_version: str | None
    cpu: str | None
    instruction_sets: tuple[str, ...]
    seconds_per_step: float | None

    @property
    def sidecar(self) -> str:
        return str(PurePosixPath(self.tsv).with_suffix(".json"))

    @property
    def heldout(self) -> str:
        return str(runfiles.heldout_path(PurePosixPath(self.tsv)).as_posix())

    @property
    def cell(self) -> tuple[str, ...]:
        """(problem, loss, optimizer) of the run, from its path."""
        return tuple(PurePosixPath(self.tsv).parts[1:4])


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def study_runs(study: Path) -> list[Path]:
    """Every run TSV under the study folder's runs/ (not the held-out tables)."""
    return sorted(
        path for path in (study / RUNS).rglob("seed*.tsv") if not path.name.endswith(".heldout.tsv")
    )


def _describe_run(study: Path, tsv: Path) -> Run:
    sidecar_path = tsv.with_suffix(".json")
    try:
        sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(
            f"{sidecar_path}: missing, so run {tsv} has no provenance. Fix: run the "
            "pipeline on the study again (it re-makes the run), then export."
        ) from None
    heldout = runfiles.heldout_path(tsv)
    numerics = sidecar.get("numerics") or {}
    timing = sidecar.get("step_timing") or {}
    return Run(
        tsv=tsv.relative_to(study).as_posix(),
        settings_sha256=sidecar.get("settings_sha256"),
        tsv_sha256=_sha256(tsv.read_bytes()),
        heldout_sha256=_sha256(heldout.read_bytes()) if heldout.is_file() else None,
        numerics_mode=numerics.get("mode"),
        torch_version=sidecar.get("torch_version"),
        cpu=numerics.get("host_cpu"),
        instruction_sets=tuple(numerics.get("host_instruction_sets") or ()),
        seconds_per_step=timing.get("seconds_per_step"),
    )


def provenance(study: Path, host: str, code_digest: str) -> dict:
    """The bundle's ``bundle.json``: who exported which runs, with what."""
    runs = [_describe_run(study, tsv) for tsv in study_runs(study)]
    if not runs:
        raise BundleError(
            f"{study / RUNS}: no run files (seed*.tsv). Fix: give the study's folder "
            "(results/ for the default study, results/<study>/ for another) after the "
            "pipeline has run."
        )
    record = study / STUDY_RECORD
    return {
        "format": FORMAT,
        "host": host,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "code_sha256": code_digest,
        "python_version": platform.python_version(),
        "study": json.loads(record.read_text(encoding="utf-8")) if record.is_file() else None,
        "torch_versions": sorted({run.torch_version for run in runs if run.torch_version}),
        "cpus": sorted({run.cpu for run in runs if run.cpu}),
        "numerics_modes": sorted({run.numerics_mode for run in runs if run.numerics_mode}),
        "runs": [vars(run) | {"instruction_sets": list(run.instruction_sets)} for run in runs],
    }


def export(study, bundle, host: str | None = None, code_digest: str = "") -> dict:
    """Writes the study folder's runs and provenance into the bundle file (atomically)."""
    study = Path(study)
    manifest = provenance(study, host or platform.node(), code_digest)
    with runfiles.atomic_path(bundle) as temporary, tarfile.open(temporary, "w:gz") as archive:
        _add_bytes(archive, MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
        if (study / STUDY_RECORD).is_file():
            archive.add(study / STUDY_RECORD, arcname=STUDY_RECORD)
        for entry in manifest["runs"]:
            run = _run_of(entry)
            for name in (run.sidecar, run.heldout, run.tsv):  # as written: the TSV last
                if (study / name).is_file():
                    archive.add(study / name, arcname=name)
    return manifest


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
    archive.addfile(info, io.BytesIO(data))


def _run_of(entry: dict) -> Run:
    return Run(**(entry | {"instruction_sets": tuple(entry.get("instruction_sets") or ())}))


@dataclass
class Bundle:
    """A bundle read back: its provenance, runs by TSV path, and its files' bytes."""

    path: str
    host: str
    manifest: dict
    runs: dict[str, Run]
    files: dict[str, bytes]


def read_bundle(path) -> Bundle:
    """A bundle, every file checked against the SHA-256 its provenance records."""
    try:
        with tarfile.open(path, "r:gz") as archive:
            files = {
                member.name: archive.extractfile(member).read()
                for member in archive.getmembers()
                if member.isfile()
            }
    except (OSError, tarfile.TarError) as error:
        raise BundleError(
            f"{path}: not a readable bundle ({error}). Fix: export it again "
            "(python3 tools/bundle.py export ...)."
        ) from None
    for name in files:
        parts = PurePosixPath(name).parts
        if PurePosixPath(name).is_absolute() or ".." in parts:
            raise BundleError(f"{path}: member {name!r} points outside the study folder.")
    if MANIFEST not in files:
        raise BundleError(f"{path}: no {MANIFEST}, so not a bundle of this pipeline.")
    manifest = json.loads(files[MANIFEST])
    if manifest.get("format") != FORMAT:
        raise BundleError(
            f"{path}: bundle format {manifest.get('format')!r}, this checkout reads "
            f"{FORMAT}. Fix: export it again with this checkout's tools/bundle.py."
        )
    runs = {entry["tsv"]: _run_of(entry) for entry in manifest["runs"]}
    for run in runs.values():
        for name, recorded in ((run.tsv, run.tsv_sha256), (run.heldout, run.heldout_sha256)):
            if recorded is None:
                continue
            if name not in files or _sha256(files[name]) != recorded:
                raise BundleError(
                    f"{path}: {name} is missing or not the file that was exported "
                    "(SHA-256 differs). Fix: copy the bundle again, or export it again."
                )
    return Bundle(str(path), manifest["host"], manifest, runs, files)


def _first_difference(a: bytes, b: bytes) -> str:
    if a == b:
        return "the held-out tables differ"
    for number, (left, right) in enumerate(
        zip(a.decode().split("\n"), b.decode().split("\n"), strict=False), start=1
    ):
        if left != right:
            return f"line {number}: {left!r} vs {right!r}"
    return "one file is longer"


@dataclass
class Comparison:
    """What the merge found, before it writes anything."""

    pairs: dict[tuple[str, str], list[int]]  # (host a, host b) -> [compared, identical, differing]
    differing: list[str]  # lines naming each differing run
    unsettled: list[str]  # runs whose bundles name different settings digests
    kept: dict[str, tuple[Bundle, list[str], bool | None]]  # tsv -> (bundle kept, hosts, same)


def compare(bundles: list[Bundle], prefer: str | None = None) -> Comparison:
    """Every run held by several bundles, compared byte for byte, by host pair."""
    hosts = [bundle.host for bundle in bundles]
    if len(set(hosts)) != len(hosts):
        raise BundleError(
            f"two bundles name the same host ({', '.join(hosts)}). Fix: export each "
            "machine's results with its own --host name."
        )
    if prefer is not None and prefer not in hosts:
        raise BundleError(f"--prefer {prefer}: no bundle of that host ({', '.join(hosts)}).")
    pairs = {pair: [0, 0, 0] for pair in combinations(hosts, 2)}
    comparison = Comparison(pairs, [], [], {})
    paths = sorted({tsv for bundle in bundles for tsv in bundle.runs})
    for tsv in paths:
        holders = [bundle for bundle in bundles if tsv in bundle.runs]
        digests = {bundle.runs[tsv].settings_sha256 for bundle in holders}
        if len(digests) > 1:
            comparison.unsettled.append(
                f"  {tsv}: "
                + ", ".join(f"{b.host} {str(b.runs[tsv].settings_sha256)[:12]}" for b in holders)
            )
            continue
        same = None
        for a, b in combinations(holders, 2):
            identical = _bytes_of(a, tsv) == _bytes_of(b, tsv)
            counts = pairs[(a.host, b.host)]
            counts[0] += 1
            counts[1 if identical else 2] += 1
            same = identical if same is None else same and identical
            if not identical:
                comparison.differing.append(
                    f"  {tsv} ({a.runs[tsv].numerics_mode} mode): {a.host} vs {b.host}, "
                    f"TSV {_first_difference(a.files[tsv], b.files[tsv])}"
                )
        keep = next((b for b in holders if b.host == prefer), holders[0])
        comparison.kept[tsv] = (keep, [b.host for b in holders], same)
    return comparison


def _bytes_of(bundle: Bundle, tsv: str) -> tuple[bytes, bytes | None]:
    run = bundle.runs[tsv]
    return bundle.files[tsv], bundle.files.get(run.heldout)


def refusal(comparison: Comparison, prefer: str | None) -> str | None:
    """Why the bundles cannot be merged as asked (None: they can)."""
    if comparison.unsettled:
        return (
            f"refused: {len(comparison.unsettled)} run(s) have different settings digests "
            "in different bundles (other settings, torch, numerics mode or training "
            "code at the same path):\n"
            + "\n".join(comparison.unsettled[:20])
            + "\nFix: merge bundles of one config and code version; re-export after "
            "running the pipeline with the same checkout on each host."
        )
    if comparison.differing and prefer is None:
        return (
            f"refused: {len(comparison.differing)} run(s) with the same settings digest "
            "differ between hosts, so they cannot be merged silently:\n"
            + "\n".join(comparison.differing[:20])
            + "\nIn the portable mode this breaks its promise (the same bytes on any "
            "x86-64 CPU with AVX2; see docs/reproducibility.md: check each bundle's "
            "CPUs and instruction sets in its bundle.json); in the native mode bits "
            "follow the host. Fix: train those runs again on one host and export again, "
            "or keep one host's files for every run it holds with --prefer HOST (the "
            "differences stay counted in merge/reproducibility.tsv)."
        )
    return None


def merge(bundle_paths, into, index=None, prefer: str | None = None) -> Comparison:
    """Merges the bundles into the new study folder ``into``; returns what it compared.

    ``index``: the run index to list the merged runs in (``results/run-index``
    of the checkout that analyses them), or None for none.
    """
    into = Path(into)
    if (into / RUNS).exists():
        raise BundleError(
            f"{into / RUNS} exists: a merge writes a new study folder. Fix: merge into "
            "another folder (--into results/<new-study>), or move this one away."
        )
    bundles = [read_bundle(path) for path in bundle_paths]
    comparison = compare(bundles, prefer)
    problem = refusal(comparison, prefer)
    if problem:
        raise BundleError(problem)
    for tsv, (bundle, _, _) in comparison.kept.items():
        run = bundle.runs[tsv]
        for name in (run.sidecar, run.heldout, run.tsv):  # the TSV last, as the jobs write
            if name in bundle.files:  # UTF-8 text, written back byte for byte
                runfiles.write_text_atomic(into / name, bundle.files[name].decode("utf-8"))
        if index is not None and run.settings_sha256:
            reuse.remember(index, run.settings_sha256, str(into / run.tsv), str(into / run.sidecar))
    _write_tables(into / MERGE_FOLDER, bundles, comparison)
    return comparison


def _tsv(rows) -> str:
    return "".join("\t".join("" if v is None else str(v) for v in row) + "\n" for row in rows)


def _write_tables(folder: Path, bundles: list[Bundle], comparison: Comparison) -> None:
    pairs = [(*pair, *counts) for pair, counts in comparison.pairs.items()]
    runfiles.write_text_atomic(
        folder / "reproducibility.tsv", _tsv([REPRODUCIBILITY_HEADER, *pairs])
    )
    runs = [("tsv", "settings_sha256", "hosts", "kept_from", "identical")]
    for tsv, (bundle, hosts, same) in comparison.kept.items():
        runs.append((tsv, bundle.runs[tsv].settings_sha256, ",".join(hosts), bundle.host, same))
    runfiles.write_text_atomic(folder / "runs.tsv", _tsv(runs))
    timing = {}
    for tsv, (bundle, _, _) in comparison.kept.items():
        run = bundle.runs[tsv]
        timing.setdefault(run.cell, {}).setdefault(bundle.host, []).append(run)
    rows = [("problem", "loss", "optimizer", "host", "cpu", "runs", "seconds_per_step")]
    for cell, by_host in sorted(timing.items()):
        for host, runs_of_host in by_host.items():
            seconds = sorted({r.seconds_per_step for r in runs_of_host} - {None})
            rows.append(
                (*cell, host, runs_of_host[0].cpu, len(runs_of_host), ",".join(map(repr, seconds)))
            )
    runfiles.write_text_atomic(folder / "timing.tsv", _tsv(rows))
    record = {
        "bundles": [
            {key: bundle.manifest[key] for key in bundle.manifest if key != "runs"}
            | {"file": bundle.path, "runs": len(bundle.runs)}
            for bundle in bundles
        ],
    }
    runfiles.write_text_atomic(folder / "merge.json", json.dumps(record, indent=1) + "\n")


def mixed_timing(comparison: Comparison) -> list[str]:
    """(problem, loss) pairs whose kept runs carry more than one host's timing pass:
    their time-based statistics compare step times measured on different machines."""
    hosts: dict[tuple[str, str], set[str]] = {}
    for tsv, (bundle, _, _) in comparison.kept.items():
        problem, loss, _ = bundle.runs[tsv].cell
        hosts.setdefault((problem, loss), set()).add(bundle.host)
    return [
        f"timing: {problem}/{loss}: its runs carry the step times of {', '.join(sorted(h))}; "
        "its time-based statistics mix machines (times are each host's own)"
        for (problem, loss), h in sorted(hosts.items())
        if len(h) > 1
    ]
