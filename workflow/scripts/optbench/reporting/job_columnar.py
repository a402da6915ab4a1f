"""The columnar tables (reporting.columnar) from per-job run files (run_files: per_job).

The per-run builder holds every run's curve as Python lists before it writes
(fine at 10^4 runs; at 10^6 runs, 40 million rows, it needs tens of GB).
Here each job's run file becomes one row group of ``curves.parquet`` and
``heldout.parquet`` as it is read (pyarrow.parquet.ParquetWriter), so memory
follows the largest job file; ``runs.parquet`` joins ``summary/runs.tsv`` with
the runs' settings in Arrow. Same columns and values as the per-run tables;
the rows come job file by job file (row groups of ``SLICE_RUNS`` runs), and
``runs.parquet``'s text columns are plain strings rather than Arrow dictionaries.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from optbench import jobfiles, runfiles
from optbench.reporting.columnar import CURVES, HELDOUT, RUN_KEY, RUNS, settings_columns


def _arrow_type(value) -> pa.DataType:
    if isinstance(value, bool):
        return pa.bool_()
    if isinstance(value, int):
        return pa.int64()
    if isinstance(value, float):
        return pa.float64()
    return pa.string()


def job_files(manifests) -> list[str]:
    """The run files the per-job manifests name, each once, in manifest order."""
    found = {}
    for manifest in manifests:
        for entry in runfiles.read_manifest_entries(manifest):
            found.setdefault(entry.sidecar, None)
    return list(found)


def settings_schema(files) -> list[tuple[str, pa.DataType]]:
    """The settings columns over every file (one sidecar per cell read: the
    settings are the cell's), typed by the first value that is not None."""
    types: dict[str, pa.DataType] = {}
    for path in files:
        runs = jobfiles.read(path)
        for index in range(len(runs.cell_list)):
            row = int(np.flatnonzero(runs.cell == index)[0])
            for name, value in settings_columns(runs.sidecar(row)).items():
                if value is not None and name not in types:
                    types[name] = _arrow_type(value)
                types.setdefault(name, pa.null())
    return [(name, pa.string() if kind == pa.null() else kind) for name, kind in types.items()]


# Runs per row group: a slice's rows (runs x steps) with its settings columns
# stay near 100 MB whatever the size of the job file.
SLICE_RUNS = 20_000


# The sidecar entries settings_columns reads, but the run's own settings digest.
SETTINGS_ENTRIES = (
    "problem",
    "loss",
    "optimizer",
    "numerics",
    "steps",
    "engine",
    "device",
    "torch_version",
)


def _run_settings(runs: jobfiles.JobRuns, rows: range) -> list[dict]:
    """settings_columns of each run: once a cell from its shared sidecar entries
    where they hold all it reads (the digest from the file's own column), else
    from the run's whole sidecar (each run's JSON parsed: 10 times slower)."""
    per_cell: dict[int, dict | None] = {}
    found = []
    for row in rows:
        index = int(runs.cell[row])
        if index not in per_cell:
            common = runs.cell_list[index]["common"]
            shared = all(name in common for name in SETTINGS_ENTRIES)
            per_cell[index] = settings_columns(common) if shared else None
        if per_cell[index] is None:
            found.append(settings_columns(runs.sidecar(row)))
        else:
            found.append(per_cell[index] | {"settings_sha256": runs.settings_list[row]})
    return found


def _settings_table(runs: jobfiles.JobRuns, rows: range, role_of: dict, schema) -> pa.Table:
    settings = _run_settings(runs, rows)
    fields = [runs.cell_list[int(runs.cell[row])]["fields"] for row in rows]
    columns = {name: pa.array([f[name] for f in fields], pa.string()) for name in RUN_KEY[:4]}
    seeds = runs.seed[rows.start : rows.stop]
    columns["seed"] = pa.array(seeds, pa.int64())
    columns["role"] = pa.array([role_of.get(int(seed)) for seed in seeds], pa.string())
    for name, kind in schema:
        columns[name] = pa.array([row.get(name) for row in settings], kind)
    return pa.table(columns)


def _encoded(settings: pa.Table) -> pa.Table:
    """Text columns dictionary-encoded: repeated over every step of a run (a take),
    they then copy indices, not text."""
    for index, field in enumerate(settings.schema):
        if pa.types.is_string(field.type):
            column = settings.column(index).dictionary_encode()
            settings = settings.set_column(index, field.name, column)
    return settings


def _curves(runs: jobfiles.JobRuns, rows: range, settings: pa.Table) -> pa.Table:
    steps = runs.steps[rows.start : rows.stop]
    losses = runs.losses[rows.start : rows.stop]
    owner = np.repeat(np.arange(len(steps)), steps)
    mask = np.arange(losses.shape[1])[None, :] < steps[:, None]  # each run's own steps
    table = settings.take(pa.array(owner, pa.int64()))
    step = np.concatenate([np.arange(n) for n in steps]) if len(steps) else np.array([])
    lrs = runs.lrs[rows.start : rows.stop][mask]
    evaluations = runs.evaluations[rows.start : rows.stop][mask]
    for name, values in (
        ("step", pa.array(step, pa.int64())),
        ("train_loss", pa.array(losses[mask], pa.float64())),
        ("evaluations", pa.array(evaluations, pa.int64())),
        # A step without a learning rate (NaN in the file) is missing, as per run.
        ("lr", pa.array(lrs, pa.float64(), mask=np.isnan(lrs))),
    ):
        table = table.append_column(name, values)
    return table


def _heldout(runs: jobfiles.JobRuns, rows: range, settings: pa.Table) -> pa.Table:
    owner, points = [], {"step": [], "heldout_loss": [], "heldout_accuracy": []}
    for index, row in enumerate(rows):
        common = runs.cell_list[int(runs.cell[row])]["common"]
        shared = "heldout_curve" in common  # the same for every run of the cell: not parsed
        curve = (common if shared else runs.sidecar(row)).get("heldout_curve") or []
        owner += [index] * len(curve)
        points["step"] += [int(point["step"]) for point in curve]
        for column in ("heldout_loss", "heldout_accuracy"):
            points[column] += [
                None if point.get(column) is None else float(point[column]) for point in curve
            ]
    table = settings.take(pa.array(owner, pa.int64()))
    kinds = {"step": pa.int64()}
    for name, values in points.items():
        table = table.append_column(name, pa.array(values, kinds.get(name, pa.float64())))
    return table


def write_tables(manifests, seeds_by_role: dict, runs_table, folder) -> list[Path]:
    """The three tables into ``folder``, job file by job file; ``runs_table``: the
    per-run table (a pandas frame of summary/runs.tsv)."""
    files = job_files(manifests)
    schema = settings_schema(files)
    role_of = {int(seed): role for role, seeds in seeds_by_role.items() for seed in seeds}
    paths = {name: Path(folder, name) for name in (CURVES, HELDOUT, RUNS)}
    settings_parts = []
    with (
        runfiles.atomic_path(paths[CURVES]) as curves_path,
        runfiles.atomic_path(paths[HELDOUT]) as heldout_path,
    ):
        writers = {}
        try:
            for path in files:
                runs = jobfiles.read(path)
                for start in range(0, len(runs), SLICE_RUNS):
                    rows = range(start, min(start + SLICE_RUNS, len(runs)))
                    settings = _settings_table(runs, rows, role_of, schema)
                    settings_parts.append(settings)
                    encoded = _encoded(settings)
                    for name, target, table in (
                        (CURVES, curves_path, _curves(runs, rows, encoded)),
                        (HELDOUT, heldout_path, _heldout(runs, rows, encoded)),
                    ):
                        if name not in writers:
                            writers[name] = pq.ParquetWriter(
                                target, table.schema, compression="zstd"
                            )
                        writers[name].write_table(table)
                del runs
        finally:
            for writer in writers.values():
                writer.close()
    settings = pa.concat_tables(settings_parts)
    with runfiles.atomic_path(paths[RUNS]) as temporary:
        pq.write_table(_runs_table(settings, runs_table), temporary, compression="zstd")
    return list(paths.values())


def _runs_table(settings: pa.Table, runs_table) -> pa.Table:
    """runs.tsv's rows in their order, each with its run's settings columns."""
    metrics = pa.Table.from_pandas(runs_table.astype({"seed": "int64"}), preserve_index=False)
    metrics = metrics.append_column("_order", pa.array(np.arange(len(metrics)), pa.int64()))
    extra = [name for name in settings.column_names if name not in metrics.column_names]
    keys = settings.select(list(RUN_KEY) + extra)
    for name in RUN_KEY:  # pandas' text comes as large_string: the keys' types must agree
        kind = metrics.schema.field(name).type
        keys = keys.set_column(keys.schema.get_field_index(name), name, keys[name].cast(kind))
    joined = metrics.join(keys, keys=list(RUN_KEY))
    joined = joined.sort_by("_order")
    return joined.drop_columns(["_order"])
