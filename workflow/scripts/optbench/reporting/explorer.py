"""The interactive explorer: one self-contained HTML page of the report.

It draws, for any selection of the cells' fields (problem, loss, optimizer,
variant, and size or budget where a study has them), the per-step loss
curves and the held-out curves, the seeds as the study's band or as one line
per seed; the sensitivity view (each trial's hyper-parameter against its final
metric), whose points select that trial's runs; the speed-ups over the
baseline and the best-of-k curves, each with its interval; and the tables, each
sortable and filterable. The page works offline: its script and the data
ride inside it (the data gzip-compressed and base64-encoded; the browser
inflates them with its DecompressionStream), so no file or network is needed.

Curve values travel as ``encoded``: log10 of the loss in steps of
1/``LOG_STEPS`` decade (0.12 %), each the difference from the line's previous
value, which compresses to about two thirds of 4-digit decimals. Size matters:
Snakemake's single-file report opens a result as a data: URL, and Chromium
opens none over 2 MiB (``PAGE_LIMIT``).

The data: the cell summaries of both seed roles (their per-step statistics,
each run's loss at the steps ``downsample.kept_steps`` keeps, the held-out
curves) and the tables ``EXPLORER_TABLES``. The page's script lives in
``explorer_page``.
"""

from __future__ import annotations

import base64
import gzip
import json
import math
import warnings

import numpy as np
import pandas as pd

from optbench import runfiles
from optbench.reporting import cells, downsample, explorer_page, logscale, statistics, summary
from optbench.reporting.outputs import EXPLORER_TABLES

# band config value -> (centre column, band columns) of a step table: the same
# statistics as the figures (optbench.reporting.figures.BANDS), without
# importing matplotlib here.
BAND_COLUMNS = {
    "geomean_ci95": ("geo_mean", ("geo_low", "geo_high")),
    "median_ci95": ("median", ("median_low", "median_high")),
    "none": ("geo_mean", None),
}
BAND_TEXT = {
    "geomean_ci95": "geometric mean, band = 95 % t-interval on log10",
    "median_ci95": "median, band = order-statistic 95 % interval (none below 6 runs)",
    "none": "geometric mean",
}


class ExplorerError(ValueError):
    """Input the explorer cannot draw; the message names the problem and the fix."""


# Curve values: log10 in steps of 1 / LOG_STEPS decade.
LOG_STEPS = 2000
# Chromium opens no data: URL longer than 2 MiB; the report's URL of the page is
# its bytes in base64 (4/3 as long), so the page must stay under this.
PAGE_LIMIT = 2 * 1024 * 1024 * 3 // 4


def encoded(values) -> list:
    """A curve for the page: each value as round(log10(value) * LOG_STEPS) minus the
    previous finite value's (the first from 0); None where not finite (the chart
    leaves a gap: a diverged run's line stops at its first inf or nan). A loss of
    0 is raised to ``logscale.FLOOR``, as the figures do."""
    out, previous = [], 0
    for value in values:
        value = math.nan if value is None else float(value)
        if not math.isfinite(value):
            out.append(None)
            continue
        level = round(math.log10(max(value, logscale.FLOOR)) * LOG_STEPS)
        out.append(level - previous)
        previous = level
    return out


def decoded(codes) -> list:
    """``encoded``'s values back, to 1/LOG_STEPS decade (what the page's script does)."""
    out, level = [], 0
    for code in codes:
        if code is None:
            out.append(None)
            continue
        level += code
        out.append(10 ** (level / LOG_STEPS))
    return out


_numbers = encoded


def _band(statistics_at: dict, band: str) -> dict:
    """Centre and band of one curve from its per-step statistics (columns)."""
    centre, limits = BAND_COLUMNS[band]
    out = {"center": _numbers(statistics_at[centre])}
    if limits is not None:
        out["low"] = _numbers(statistics_at[limits[0]])
        out["high"] = _numbers(statistics_at[limits[1]])
    return out


def training_curve(data: dict, band: str) -> dict:
    """A cell summary's training curve: kept steps, centre, band and seed lines."""
    lines = data.get("lines")
    if not lines:
        raise ExplorerError(
            f"the cell summary of {data['cell']} has no per-run lines: it was written "
            "before the explorer existed. Delete results/<study>/summary/cells so that "
            "the pipeline summarises the runs again (training is reused)."
        )
    seeds = sorted(set(lines["seed"]))
    steps = sorted(set(lines["step"]))
    values = {
        (s, t): v for s, t, v in zip(lines["seed"], lines["step"], lines["loss"], strict=True)
    }
    table = summary.with_intervals(
        pd.DataFrame({"problem": 0, "step": data["steps"]["step"]} | data["steps"])
    ).set_index("step")
    at = table.loc[steps]
    return {
        "step": steps,
        **_band({name: at[name].to_numpy() for name in at.columns}, band),
        "seeds": seeds,
        "lines": [_numbers(values[(seed, step)] for step in steps) for seed in seeds],
    }


def heldout_curve(data: dict, band: str) -> dict | None:
    """A cell summary's held-out curve (None without one): its statistics over the
    seeds at each evaluated step (``statistics.log_describe``) and the seed lines."""
    curves = data.get("curves")
    if not curves or not curves["step"]:
        return None
    frame = pd.DataFrame(curves).pivot_table(
        index="seed", columns="step", values="heldout_loss", aggfunc="first", dropna=False
    )
    described = statistics.log_describe(frame.to_numpy(dtype=np.float64))
    return {
        "step": [int(s) for s in frame.columns],
        **_band(described, band),
        "seeds": [int(s) for s in frame.index],
        "lines": [_numbers(row) for row in frame.to_numpy(dtype=np.float64)],
    }


def cell_entries(cell_paths: dict[str, list], band: str) -> list[dict]:
    """``cell_paths``: seed role -> its cell summaries. One entry per (role, cell)."""
    if band not in BAND_COLUMNS:
        raise ExplorerError(
            f"band {band!r} is not one of {sorted(BAND_COLUMNS)}; set the config key band to one."
        )
    entries = []
    for role, paths in cell_paths.items():
        for path in paths:
            data = cells.read_cell_summary(path)
            entries.append(
                {
                    "role": role,
                    "cell": data["cell"],
                    "train": training_curve(data, band),
                    "heldout": heldout_curve(data, band),
                }
            )
    return entries


def table_entry(frame: pd.DataFrame) -> dict:
    """A table as columns and rows of text, as its TSV writes them (nan for missing)."""
    text = frame.astype(object).where(frame.notna(), "nan")
    return {
        "columns": [str(c) for c in frame.columns],
        "rows": [[str(v) for v in row] for row in text.itertuples(index=False)],
    }


def payload(cell_paths: dict[str, list], tables: dict[str, pd.DataFrame], band: str, title: str):
    """Everything the page draws, as one JSON-ready mapping."""
    missing = [name for name in EXPLORER_TABLES if name not in tables]
    if missing:
        raise ExplorerError(f"the explorer needs the tables {missing}; pass them as inputs.")
    entries = cell_entries(cell_paths, band)
    fields = list(entries[0]["cell"]) if entries else []
    return {
        "title": title,
        "band": BAND_TEXT[band],
        "fields": fields,
        "cells": entries,
        "tables": {name: table_entry(tables[name]) for name in EXPLORER_TABLES},
        "downsampling": {
            "max_points": downsample.MAX_POINTS,
            "digits": downsample.SIGNIFICANT_DIGITS,
        },
        "log_steps": LOG_STEPS,
    }


def packed(text: str) -> str:
    """``text`` gzip-compressed (no time stamp: the same text gives the same bytes)
    and base64-encoded, for the page to inflate."""
    return base64.b64encode(gzip.compress(text.encode("utf-8"), mtime=0)).decode("ascii")


def page(data: dict) -> str:
    """The explorer's HTML page, ``data`` (``payload``) inside."""
    text = json.dumps(data, allow_nan=False, separators=(",", ":"))
    return explorer_page.render(data["title"], packed(text))


def write_explorer(path, cell_paths, table_paths: dict, band: str, title: str) -> None:
    tables = {name: summary.read_tsv(table_paths[name]) for name in EXPLORER_TABLES}
    text = page(payload(cell_paths, tables, band, title))
    if len(text.encode("utf-8")) > PAGE_LIMIT:
        # Written all the same: it opens on its own and from a zipped report.
        warnings.warn(
            f"{path}: {len(text) / 2**20:.1f} MiB, above the {PAGE_LIMIT / 2**20:.1f} MiB "
            "that Chromium opens from the single-file report (a 2 MiB data: URL). Open "
            "the file itself, or build the report as a zip (--report report.zip).",
            stacklevel=2,
        )
    runfiles.write_text_atomic(path, text)
