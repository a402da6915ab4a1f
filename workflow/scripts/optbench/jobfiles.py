"""The per-job run file (config ``run_files: per_job``): every run of a training job in one file.

Under the default ``run_files: per_run`` each run is a TSV and a JSON sidecar
(runfiles.py): two small files per run, each renamed into place after an
fsync. At 10^5 runs and more that is most of a study's time (and two million
files at 10^6 runs burden any file system). Under ``per_job`` a training job
writes one file beside its manifest, ``<manifest stem>.runs.npz``, holding
every run it trained or reused, and the analysis reads that file.

The file is a NumPy ``.npz`` archive (uncompressed; ``numpy.load`` reads it,
no pickles), columnar, one row per run:

- ``seed`` (int64), ``cell`` (int64: the row's index into ``cells``) and
  ``steps`` (int64: how many steps the run has);
- ``losses``, ``lrs`` (float64) and ``evaluations`` (int64), runs x the
  longest run's steps; a shorter run's row is padded (NaN, -1) after its
  steps, and an lr the optimizer does not have is NaN;
- ``cells``: JSON, per cell its fields (problem, loss, optimizer, variant)
  and ``common``, the sidecar entries every run of that cell in this job shares;
- ``names``, ``settings_sha256`` and ``metadata``: newline-joined UTF-8 text
  (uint8 arrays): each run's name (the TSV path it would have under
  ``per_run``: the run's key in manifests and plans), its settings digest
  (reuse.py) and the JSON of its sidecar entries that are not in ``common``.

A run's sidecar is ``{**common, **metadata}``: the same dictionary the
per-run layout writes as JSON. Each run's row has a digest (``row_digests``:
SHA-256 of its name, numbers and sidecar), which the job's manifest lists;
a row whose digest no longer matches (the file edited, or the run missing
from it) is retrained alone by the job's next start, as a changed run file is.

numpy and the standard library only: the writer runs inside training jobs.
"""

from __future__ import annotations

import hashlib
import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optbench import runfiles

SUFFIX = ".runs.npz"
# The arrays of a file, as written (``read`` refuses a file that lacks one).
ARRAYS = (
    "seed",
    "cell",
    "steps",
    "losses",
    "evaluations",
    "lrs",
    "cells",
    "names",
    "settings_sha256",
    "metadata",
)


class JobFileError(ValueError):
    """A per-job run file that cannot be read; the message names it and the fix."""


def path_for(manifest) -> str:
    """The job's run file, beside its manifest: ``seeds0-9.tsv`` -> ``seeds0-9.runs.npz``."""
    manifest = Path(manifest)
    return str(manifest.with_name(manifest.stem + SUFFIX))


@dataclass(frozen=True)
class Record:
    """One run as a job writes it: its name (per-run TSV path), cell fields, seed,
    curve (losses, evaluations and learning rates per step) and sidecar entries."""

    name: str
    cell: dict
    seed: int
    losses: list
    evaluations: list
    lrs: list
    metadata: dict


def _text(lines: list[str]) -> np.ndarray:
    joined = "\n".join(lines).encode("utf-8")
    return np.frombuffer(joined, dtype=np.uint8)


def _lines(array: np.ndarray, count: int) -> list[str]:
    if count == 0:
        return []
    return bytes(array).decode("utf-8").split("\n")


def _json(value) -> str:
    # One line (no newlines: rows are newline-joined), keys sorted: a digest's input.
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _cell_key(cell: dict) -> str:
    return _json(cell)


def _split_metadata(records: list[Record]) -> tuple[list[dict], list[int], list[str]]:
    """Per cell the sidecar entries all its runs share; per run its cell index and
    the JSON of its other entries (so a 10^5-run job stores its settings once)."""
    order: dict[str, int] = {}
    members: list[list[int]] = []
    cell_of = []
    for index, record in enumerate(records):
        key = _cell_key(record.cell)
        if key not in order:
            order[key] = len(members)
            members.append([])
        members[order[key]].append(index)
        cell_of.append(order[key])
    common_of = []
    for rows in members:
        first = records[rows[0]].metadata
        shared = set(first)
        for row in rows[1:]:
            metadata = records[row].metadata
            # Python's == (not JSON text: 100 times faster), of one type, so that
            # 1 and True or 1.0 are never taken for the same entry.
            shared = {
                k
                for k in shared
                if k in metadata and type(metadata[k]) is type(first[k]) and metadata[k] == first[k]
            }
        common_of.append({key: first[key] for key in sorted(shared)})
    per_run = [
        _json({k: v for k, v in record.metadata.items() if k not in common_of[cell_of[i]]})
        for i, record in enumerate(records)
    ]
    cells = [
        {"fields": records[rows[0]].cell, "common": common}
        for rows, common in zip(members, common_of, strict=True)
    ]
    return cells, cell_of, per_run


def _row_digest(name, settings, losses, evaluations, lrs, common_text, run_text) -> str:
    digest = hashlib.sha256()
    for part in (name, settings, common_text, run_text):
        digest.update(part.encode("utf-8") + b"\0")
    for array in (losses, evaluations, lrs):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def write(path, records: list[Record], settings_digests: list[str]) -> dict[str, str]:
    """The job's run file at ``path``, atomically (runfiles.atomic_path: a killed
    job leaves the previous file or none, never half of one); returns each run's
    name -> its row digest (what the manifest lists)."""
    if not records:
        raise ValueError(f"{path}: a per-job run file needs at least one run")
    steps = np.array([len(record.losses) for record in records], dtype=np.int64)
    width = int(steps.max())
    losses = np.full((len(records), width), np.nan)
    lrs = np.full((len(records), width), np.nan)
    evaluations = np.full((len(records), width), -1, dtype=np.int64)
    for row, record in enumerate(records):
        n = len(record.losses)
        losses[row, :n] = np.asarray(record.losses, dtype=np.float64)
        evaluations[row, :n] = np.asarray(record.evaluations, dtype=np.int64)
        lrs[row, :n] = [math.nan if lr is None else float(lr) for lr in record.lrs]
    cells, cell_of, per_run = _split_metadata(records)
    arrays = {
        "seed": np.array([record.seed for record in records], dtype=np.int64),
        "cell": np.array(cell_of, dtype=np.int64),
        "steps": steps,
        "losses": losses,
        "evaluations": evaluations,
        "lrs": lrs,
        "cells": _text([_json(cells)]),
        "names": _text([record.name for record in records]),
        "settings_sha256": _text(list(settings_digests)),
        "metadata": _text(per_run),
    }
    with runfiles.atomic_path(path) as temporary, open(temporary, "wb") as handle:
        np.savez(handle, **arrays)
    return dict(zip((r.name for r in records), row_digests(JobRuns(**arrays)), strict=True))


@dataclass
class JobRuns:
    """A per-job run file's arrays (``read``), with each run's sidecar on demand."""

    seed: np.ndarray
    cell: np.ndarray
    steps: np.ndarray
    losses: np.ndarray
    evaluations: np.ndarray
    lrs: np.ndarray
    cells: np.ndarray
    names: np.ndarray
    settings_sha256: np.ndarray
    metadata: np.ndarray

    def __post_init__(self):
        count = len(self.seed)
        self.cell_list = json.loads(_lines(self.cells, 1)[0])
        self.name_list = _lines(self.names, count)
        self.settings_list = _lines(self.settings_sha256, count)
        self.metadata_list = _lines(self.metadata, count)
        self.common_texts = [_json(cell["common"]) for cell in self.cell_list]

    def __len__(self) -> int:
        return len(self.seed)

    def rows_of(self, fields: dict) -> np.ndarray:
        """The rows of one cell (its fields equal ``fields``), in file order."""
        wanted = [i for i, cell in enumerate(self.cell_list) if cell["fields"] == fields]
        return np.flatnonzero(np.isin(self.cell, wanted))

    def sidecar(self, row: int) -> dict:
        """The run's sidecar entries: the same dictionary the per-run layout writes."""
        common = self.cell_list[int(self.cell[row])]["common"]
        return {**common, **json.loads(self.metadata_list[row])}

    def curve(self, row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The run's losses, evaluations and learning rates (NaN: none), its steps only."""
        n = int(self.steps[row])
        return self.losses[row, :n], self.evaluations[row, :n], self.lrs[row, :n]


def row_digests(runs: JobRuns) -> list[str]:
    """Each row's SHA-256: its name, settings digest, sidecar and numbers."""
    digests = []
    for row in range(len(runs)):
        losses, evaluations, lrs = runs.curve(row)
        digests.append(
            _row_digest(
                runs.name_list[row],
                runs.settings_list[row],
                losses,
                evaluations,
                lrs,
                runs.common_texts[int(runs.cell[row])],
                runs.metadata_list[row],
            )
        )
    return digests


def read(path) -> JobRuns:
    """A per-job run file; one that is not (unreadable, an array missing, rows of
    different lengths) raises JobFileError naming the file and the fix."""
    fix = (
        "Delete it and its manifest (the .tsv beside it) so that the pipeline trains "
        "its job's runs again."
    )
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [name for name in ARRAYS if name not in archive.files]
            if missing:
                raise JobFileError(f"{path}: not a per-job run file (no {missing}). {fix}")
            arrays = {name: archive[name] for name in ARRAYS}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        if isinstance(error, JobFileError):
            raise
        raise JobFileError(f"{path}: not a readable per-job run file ({error}). {fix}") from None
    try:
        runs = JobRuns(**arrays)
    except (ValueError, KeyError, IndexError, UnicodeDecodeError) as error:
        raise JobFileError(f"{path}: its run table does not parse ({error}). {fix}") from None
    count = len(runs.seed)
    sizes = {
        "cell": len(runs.cell),
        "steps": len(runs.steps),
        "losses": len(runs.losses),
        "evaluations": len(runs.evaluations),
        "lrs": len(runs.lrs),
        "names": len(runs.name_list),
        "settings_sha256": len(runs.settings_list),
        "metadata": len(runs.metadata_list),
    }
    wrong = {name: size for name, size in sizes.items() if size != count}
    if wrong:
        raise JobFileError(f"{path}: {count} seeds but {wrong} rows. {fix}")
    return runs


def describe_bytes(path) -> str:
    """The file's size in words, for a job's log line."""
    size = Path(path).stat().st_size
    return f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size:,} bytes"


def record(runs: JobRuns, row: int) -> Record:
    """Row ``row`` as a Record (learning rates None where NaN), to be written again."""
    losses, evaluations, lrs = runs.curve(row)
    return Record(
        runs.name_list[row],
        runs.cell_list[int(runs.cell[row])]["fields"],
        int(runs.seed[row]),
        losses.tolist(),
        evaluations.tolist(),
        [None if math.isnan(lr) else lr for lr in lrs.tolist()],
        runs.sidecar(row),
    )


def reusable(previous: dict[str, tuple[str, str]], wanted: dict[str, str]) -> dict[str, Record]:
    """The runs a job's next start keeps from its last run file: ``previous`` is
    name -> (run file, row digest) as its last manifest lists them, ``wanted`` name
    -> the settings digest the run needs now. A run is kept when its row is still
    in that file with the listed digest (not edited since) and its settings digest
    is the wanted one; every other run is trained again."""
    kept: dict[str, Record] = {}
    files: dict[str, list[str]] = {}
    for name, (job_file, _) in previous.items():
        if name in wanted:
            files.setdefault(job_file, []).append(name)
    for job_file, names in files.items():
        try:
            runs = read(job_file)
        except (OSError, JobFileError):
            continue
        rows = {name: row for row, name in enumerate(runs.name_list)}
        digests = row_digests(runs)
        for name in names:
            row = rows.get(name)
            if row is None or digests[row] != previous[name][1]:
                continue
            if runs.settings_list[row] == wanted[name]:
                kept[name] = record(runs, row)
    return kept
