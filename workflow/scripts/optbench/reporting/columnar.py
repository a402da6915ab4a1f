"""The study's runs as columnar tables (Parquet, through pyarrow), for analysis elsewhere.

Three tables under ``results/columnar/``, each one file:

- ``curves.parquet``: every run's per-step curve in long form, one row per
  (run, step), with the run's settings as columns (problem, loss, optimizer,
  variant, seed, seed role, the classes and keyword arguments, engine,
  numerics mode, settings digest), so one filter selects any slice;
- ``runs.parquet``: the per-run table ``summary/runs.tsv`` with the same
  settings columns joined on (problem, loss, optimizer, variant, seed);
- ``heldout.parquet``: the held-out curves (``eval_every``) in long form.

The values are the run files' own: a loss reads back as the float its TSV
holds (``repr`` text -> float64), ``inf``/``nan`` kept. Each file is written
beside its final name and renamed into place (``runfiles.atomic_path``), so a
reader never sees half a table.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from optbench import runfiles
from optbench.reporting.outputs import COLUMNAR_FILES

CURVES, RUNS, HELDOUT = COLUMNAR_FILES
# Keyword arguments that are plain numbers become columns of their own
# (``kwargs.lr``); the rest (tuples such as Adam's betas) stay in the JSON column.
KWARG_PREFIX = "kwargs."
# The columns that name a run: the grid cell and the seed.
RUN_KEY = ("problem", "loss", "optimizer", "variant", "seed")


@dataclass(frozen=True)
class RunFiles:
    """One planned run: its cell, seed, seed role and files."""

    problem: str
    loss: str
    optimizer: str
    variant: str
    seed: int
    role: str
    tsv: str
    sidecar: str


def planned_runs(cells, seeds_by_role: dict, tsv_pattern: str, sidecar_pattern: str):
    """Every run of ``cells`` (mappings of the cell fields) for each role's seeds."""
    return [
        RunFiles(
            **{field: cell[field] for field in RUN_KEY[:4]},
            seed=int(seed),
            role=role,
            tsv=tsv_pattern.format(seed=seed, **cell),
            sidecar=sidecar_pattern.format(seed=seed, **cell),
        )
        for role, seeds in seeds_by_role.items()
        for cell in cells
        for seed in seeds
    ]


def settings_columns(sidecar: dict) -> dict:
    """The run's settings from its sidecar, flat: what a filter or a group-by needs."""
    problem = sidecar.get("problem") or {}
    loss = sidecar.get("loss") or {}
    optimizer = sidecar.get("optimizer") or {}
    numerics = sidecar.get("numerics") or {}
    kwargs = optimizer.get("kwargs") or {}
    columns = {
        "problem_kind": problem.get("problem"),
        "problem_kwargs": json.dumps(problem.get("kwargs") or {}, sort_keys=True),
        "size": problem.get("size"),
        "parameter_count": problem.get("parameter_count"),
        "steps": sidecar.get("steps"),
        "loss_class": loss.get("class"),
        "loss_kwargs": json.dumps(loss.get("kwargs") or {}, sort_keys=True),
        "optimizer_class": optimizer.get("class"),
        "optimizer_kwargs": json.dumps(kwargs, sort_keys=True),
        "schedule": json.dumps(optimizer["schedule"], sort_keys=True)
        if optimizer.get("schedule") is not None
        else None,
        "engine": sidecar.get("engine"),
        "device": sidecar.get("device"),
        "torch_version": sidecar.get("torch_version"),
        "numerics_mode": numerics.get("mode"),
        "settings_sha256": sidecar.get("settings_sha256"),
    }
    for name, value in kwargs.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            columns[f"{KWARG_PREFIX}{name}"] = float(value)
    return columns


def _read_sidecar(path) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _settings_frame(runs, sidecars) -> dict[str, list]:
    """Per run: its key, role and settings columns (every run gets every column)."""
    settings = [settings_columns(sidecar) for sidecar in sidecars]
    names = list(dict.fromkeys(name for row in settings for name in row))
    columns = {field: [getattr(run, field) for run in runs] for field in RUN_KEY}
    columns["role"] = [run.role for run in runs]
    for name in names:
        columns[name] = [row.get(name) for row in settings]
    return columns


def _arrow_columns(columns: dict[str, list]) -> dict[str, pa.Array]:
    # Text columns repeat one value per run over every step: dictionary-encoded.
    arrays = {}
    for name, values in columns.items():
        array = pa.array(values)
        if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
            array = array.dictionary_encode()
        arrays[name] = array
    return arrays


def build_tables(runs, runs_table=None) -> dict[str, pa.Table]:
    """The three tables from the run files (and the per-run table, a pandas frame
    of ``summary/runs.tsv``, or None to leave ``runs.parquet``'s metrics out)."""
    runs = list(runs)
    sidecars = [_read_sidecar(run.sidecar) for run in runs]
    per_run = _settings_frame(runs, sidecars)
    settings = pa.table(_arrow_columns(per_run))
    steps: dict[str, list] = {"step": [], "train_loss": [], "evaluations": [], "lr": []}
    points: dict[str, list] = {"step": [], "heldout_loss": [], "heldout_accuracy": []}
    step_owner, point_owner = [], []  # the row of ``settings`` each row belongs to
    for index, (run, sidecar) in enumerate(zip(runs, sidecars, strict=True)):
        losses, evaluations, rates = runfiles.read_run_rows(run.tsv)
        step_owner.extend([index] * len(losses))
        steps["step"].extend(range(len(losses)))
        steps["train_loss"].extend(losses)
        steps["evaluations"].extend(evaluations)
        steps["lr"].extend(rates)
        curve = sidecar.get("heldout_curve") or []
        point_owner.extend([index] * len(curve))
        points["step"].extend(int(point["step"]) for point in curve)
        for column in ("heldout_loss", "heldout_accuracy"):
            points[column].extend(
                None if point.get(column) is None else float(point[column]) for point in curve
            )
    types = {"step": pa.int64(), "evaluations": pa.int64()}
    # Each run's settings repeated on its rows by Arrow (a take), not as Python lists.
    tables = {}
    for name, owner, columns in ((CURVES, step_owner, steps), (HELDOUT, point_owner, points)):
        table = settings.take(pa.array(owner, type=pa.int64()))
        for column, values in columns.items():
            table = table.append_column(
                column, pa.array(values, type=types.get(column, pa.float64()))
            )
        tables[name] = table
    tables[RUNS] = _runs_table(per_run, runs_table)
    return tables


def _runs_table(per_run: dict[str, list], runs_table) -> pa.Table:
    if runs_table is None:
        return pa.table(_arrow_columns(per_run))
    settings = pd.DataFrame(per_run)
    metrics = runs_table.astype({"seed": "int64"})
    extra = [name for name in settings.columns if name not in metrics.columns]
    # A left merge keeps runs.tsv's rows in their order; validate: one settings row a run.
    joined = metrics.merge(
        settings[list(RUN_KEY) + extra], on=list(RUN_KEY), how="left", validate="one_to_one"
    )
    # A settings column that only some runs have (a keyword argument of one
    # optimizer) comes out of the merge with NaN in the others: a missing value.
    columns = {}
    for name in joined.columns:
        values = joined[name].tolist()
        if not pd.api.types.is_numeric_dtype(joined[name]):
            values = [None if isinstance(v, float) and math.isnan(v) else v for v in values]
        columns[name] = values
    return pa.table(_arrow_columns(columns))


def write_tables(tables: dict[str, pa.Table], folder) -> list[Path]:
    """Each table to ``folder``/<name>, atomically (a reader never sees half a file)."""
    written = []
    for name, table in tables.items():
        path = Path(folder) / name
        with runfiles.atomic_path(path) as temporary:
            pq.write_table(table, temporary, compression="zstd")
        written.append(path)
    return written
