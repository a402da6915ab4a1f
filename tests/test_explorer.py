"""The explorer's data, without a browser (tests/test_browser.py opens the page):
the downsampling rule by hand, the seed lines a cell summary keeps, the
curves' centres and bands against scipy, the page's packed data read back,
and bad input refused with a fix."""

from __future__ import annotations

import base64
import gzip
import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from optbench.reporting import cells, downsample, explorer

# The page's values: log10 in steps of 1/2000 decade, and the lines' 4 digits before.
RESOLUTION = 10 ** (0.5 / 2000) - 1 + 5e-4


def test_short_curves_keep_every_step():
    assert downsample.kept_steps(5) == [0, 1, 2, 3, 4]
    assert downsample.kept_steps(downsample.MAX_POINTS) == list(range(downsample.MAX_POINTS))


def test_long_curves_keep_evenly_and_geometrically_spaced_steps_by_hand():
    # 10 steps, 4 points: evenly {0, 9}; geometrically from 1: {1, 9}.
    assert downsample.kept_steps(10, max_points=4) == [0, 1, 9]
    # 101 steps, 6 points: evenly {0, 50, 100}; geometrically {1, 10, 100}.
    assert downsample.kept_steps(101, max_points=6) == [0, 1, 10, 50, 100]


@pytest.mark.parametrize("n_steps", [201, 1000, 12345, 1_000_000])
def test_long_curves_never_exceed_the_limit(n_steps):
    kept = downsample.kept_steps(n_steps)
    assert len(kept) <= downsample.MAX_POINTS
    assert kept[0] == 0 and kept[-1] == n_steps - 1 and kept == sorted(set(kept))
    # Both spacings are there: a step near every tenth of the run, and near 10, 100, ...
    for tenth in range(11):
        assert min(abs(k - tenth * (n_steps - 1) / 10) for k in kept) <= n_steps / 99
    # Geometric: neighbours a ratio exp(log(last) / 99) apart, so within half of it.
    half_ratio = math.log(n_steps - 1) / (downsample.MAX_POINTS // 2 - 1) / 2
    for power in range(2, int(math.log10(n_steps)) + 1):  # from 100: rounding aside
        assert min(abs(math.log(k / 10**power)) for k in kept if k) <= half_ratio + 0.01


def test_values_keep_four_significant_digits():
    assert downsample.rounded(0.000123456) == 0.0001235
    assert downsample.rounded(123456.0) == 123500.0
    assert downsample.rounded(math.inf) == "inf" and downsample.rounded(math.nan) == "nan"


def planted_cell(steps: int, seeds=(3, 1, 2)) -> cells.CellRuns:
    rng = np.random.default_rng(7)
    losses = np.exp(rng.normal(size=(len(seeds), steps))) * np.linspace(10, 1, steps)
    losses[1, steps // 2 :] = np.inf  # the second seed diverges half-way
    identity = {"problem": "p", "loss": "mse", "optimizer": "adam", "variant": "base"}
    return cells.CellRuns(identity, sorted(seeds), losses)


def test_a_cell_summary_keeps_each_runs_loss_at_the_kept_steps(tmp_path):
    cell = planted_cell(500)
    path = tmp_path / "cell.json"
    cells.write_cell_summary(cell, path)
    lines = cells.read_cell_summary(path)["lines"]
    kept = downsample.kept_steps(500)
    assert lines["step"] == kept * 3
    assert lines["seed"] == [1] * len(kept) + [2] * len(kept) + [3] * len(kept)
    expected = [
        float(np.format_float_scientific(v, precision=3)) if np.isfinite(v) else v
        for row in cell.losses
        for v in row[kept]
    ]
    assert lines["loss"] == expected


def test_the_training_curve_has_the_geometric_mean_and_its_t_interval(tmp_path):
    cell = planted_cell(300, seeds=(0, 1, 2, 3))
    cell.losses[1] = cell.losses[0] * 2  # all finite here
    path = tmp_path / "cell.json"
    cells.write_cell_summary(cell, path)
    curve = explorer.training_curve(cells.read_cell_summary(path), "geomean_ci95")
    kept = downsample.kept_steps(300)
    assert curve["step"] == kept and curve["seeds"] == [0, 1, 2, 3]
    at = cell.losses[:, kept]
    # To 1/2000 decade (0.12 %), the page's resolution.
    center, low, high = (explorer.decoded(curve[k]) for k in ("center", "low", "high"))
    np.testing.assert_allclose(center, stats.gmean(at, axis=0), rtol=RESOLUTION)
    logs = np.log10(at)
    half = stats.t.ppf(0.975, 3) * logs.std(axis=0, ddof=1) / 2
    np.testing.assert_allclose(low, 10 ** (logs.mean(axis=0) - half), rtol=RESOLUTION)
    np.testing.assert_allclose(high, 10 ** (logs.mean(axis=0) + half), rtol=RESOLUTION)
    for line, losses in zip(curve["lines"], at, strict=True):
        np.testing.assert_allclose(explorer.decoded(line), losses, rtol=RESOLUTION)


def test_a_diverged_runs_line_stops_at_its_first_non_finite_loss(tmp_path):
    cell = planted_cell(20)
    path = tmp_path / "cell.json"
    cells.write_cell_summary(cell, path)
    curve = explorer.training_curve(cells.read_cell_summary(path), "median_ci95")
    line = curve["lines"][1]
    assert all(v is not None for v in line[:10]) and all(v is None for v in line[10:])


def test_held_out_curves_have_the_median_over_the_seeds():
    data = {
        "curves": {
            "seed": [0, 0, 1, 1, 2, 2],
            "step": [5, 10, 5, 10, 5, 10],
            "heldout_loss": [1.0, 0.5, 3.0, 0.25, 2.0, 0.125],
        }
    }
    curve = explorer.heldout_curve(data, "median_ci95")
    assert curve["step"] == [5, 10] and curve["seeds"] == [0, 1, 2]
    lines = [explorer.decoded(line) for line in curve["lines"]]
    np.testing.assert_allclose(lines, [[1.0, 0.5], [3.0, 0.25], [2.0, 0.125]], rtol=RESOLUTION)
    np.testing.assert_allclose(explorer.decoded(curve["center"]), [2.0, 0.25], rtol=RESOLUTION)
    assert explorer.heldout_curve({}, "median_ci95") is None


def test_curves_travel_as_log_steps_from_the_previous_value_by_hand():
    # log10: 0, 1, 2 -> levels 0, 2000, 4000; inf leaves a gap; back to 1 -> -2000.
    assert explorer.encoded([1.0, 10.0, 100.0, math.inf, 10.0, math.nan]) == [
        0, 2000, 2000, None, -2000, None,
    ]  # fmt: skip
    # 0: the log floor, float64's smallest normal number (2.2e-308).
    assert explorer.encoded([0.0]) == [round(math.log10(2.2250738585072014e-308) * 2000)]
    values = [3.7e-5, 0.5, 123.4, 1.0]
    np.testing.assert_allclose(explorer.decoded(explorer.encoded(values)), values, rtol=RESOLUTION)


def tables() -> dict[str, pd.DataFrame]:
    return {name: pd.DataFrame({"problem": ["p"], "x": [1.5]}) for name in explorer.EXPLORER_TABLES}


def unpacked(page: str, element: str) -> str:
    found = re.search(f'id="{element}">([^<]*)</script>', page)
    return gzip.decompress(base64.b64decode(found.group(1))).decode("utf-8")


def test_the_page_carries_its_data_and_plotly_and_loads_nothing(tmp_path):
    path = tmp_path / "cell.json"
    cells.write_cell_summary(planted_cell(30), path)
    data = explorer.payload({"evaluation": [path], "tuning": []}, tables(), "none", "study")
    page = explorer.page(data)
    assert json.loads(unpacked(page, "data-packed")) == data
    assert "<script src" not in page and "<link" not in page  # nothing to fetch
    assert "var Charts" in page  # the drawing code is inside
    assert data["tables"]["leaderboard"] == {"columns": ["problem", "x"], "rows": [["p", "1.5"]]}
    # The same input gives the same bytes (no time stamp in the gzip stream).
    assert explorer.page(data) == page


def modern_shaped_cell(seeds, rng) -> dict:
    """A cell summary shaped like configs/modern.yaml's: 100 steps, held-out every 10."""
    steps = 100
    runs = (
        2.3 * np.exp(-np.arange(steps) / rng.uniform(10, 80)) + rng.uniform(0.01, 0.5)
    ) * np.exp(rng.normal(0, 0.05, (len(seeds), steps)))
    statistics = {name: list(np.exp(np.log(runs).mean(axis=0))) for name in ("geo_mean",)}
    statistics["geo_low"] = [v * 0.95 for v in statistics["geo_mean"]]
    statistics["geo_high"] = [v * 1.05 for v in statistics["geo_mean"]]
    train = {
        "step": list(range(steps)),
        "center": explorer.encoded(statistics["geo_mean"]),
        "low": explorer.encoded(statistics["geo_low"]),
        "high": explorer.encoded(statistics["geo_high"]),
        "seeds": list(seeds),
        "lines": [explorer.encoded(downsample.rounded(v) for v in run) for run in runs],
    }
    held = runs[:, 9::10] * 1.1
    heldout = {
        "step": list(range(10, 101, 10)),
        "center": explorer.encoded(np.exp(np.log(held).mean(axis=0))),
        "seeds": list(seeds),
        "lines": [explorer.encoded(run) for run in held],
    }
    return {"train": train, "heldout": heldout}


def test_a_study_of_the_modern_size_fits_in_the_report():
    """configs/modern.yaml: 5 (problem, loss) pairs x 47 variants, 10 evaluation and
    3 tuning seeds, 100 steps: 470 cells, 3,055 runs, every step kept. Its page must
    open from the single-file report in Chromium (a data: URL under 2 MiB)."""
    rng = np.random.default_rng(0)
    entries = []
    for problem in range(5):
        for variant in range(47):
            for role, seeds in (("evaluation", range(10)), ("tuning", range(1000, 1003))):
                cell = {"problem": f"p{problem}", "loss": "ce", "optimizer": f"o{variant // 8}"}
                entries.append(
                    {"role": role, "cell": cell | {"variant": f"v{variant}"}}
                    | modern_shaped_cell(seeds, rng)
                )
    data = {"title": "modern", "band": "b", "fields": ["problem", "loss", "optimizer", "variant"]}
    data |= {"cells": entries, "tables": {}, "downsampling": {}, "log_steps": explorer.LOG_STEPS}
    page = explorer.page(data)
    assert len(page) * 4 / 3 < 2 * 2**20
    assert len(page) < explorer.PAGE_LIMIT


def test_bad_input_is_refused_with_a_fix(tmp_path):
    old = tmp_path / "old.json"
    cells.write_cell_summary(planted_cell(10), old)
    text = json.loads(old.read_text())
    del text["lines"]
    old.write_text(json.dumps(text))
    with pytest.raises(explorer.ExplorerError, match="Delete results/<study>/summary/cells"):
        explorer.cell_entries({"evaluation": [old]}, "none")
    with pytest.raises(explorer.ExplorerError, match="set the config key band"):
        explorer.cell_entries({"evaluation": []}, "mean")
    with pytest.raises(explorer.ExplorerError, match=r"needs the tables \['selection'\]"):
        partial = {k: v for k, v in tables().items() if k != "selection"}
        explorer.payload({"evaluation": []}, partial, "none", "study")
