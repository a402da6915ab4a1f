"""What the figures draw: one curve per optimizer at its mean, the configured
band at its values, and the legend's counts, in the matplotlib objects and in
the SVG files the workflow writes."""

import functools
import re
import xml.etree.ElementTree as ET

import matplotlib
import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from conftest import CONFIGS, REPO, copy_tree, snakemake
from optbench.reporting import figures
from test_training import ARTICLE_LOSSES, ARTICLE_OPTIMIZERS, article_loop

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TINY = CONFIGS / "tiny.yaml"
DEFAULT_CONFIG = REPO / "config.yaml"
SVG = "{http://www.w3.org/2000/svg}"
XLINK = "{http://www.w3.org/1999/xlink}"
# README: the y axis turns logarithmic when the positive means span more than 100x.
LOG_SCALE_RATIO = 100.0


def column_statistics(loss: str, optimizer: str, runs: np.ndarray) -> pd.DataFrame:
    """Step-table rows of one cell, computed here with numpy and scipy (runs x steps;
    a run is left out from its first non-finite loss on)."""
    rows = []
    for step in range(runs.shape[1]):
        alive = np.isfinite(runs[:, : step + 1]).all(axis=1)
        values = runs[alive, step]
        n = len(values)
        mean = values.mean() if n else np.nan
        std = values.std(ddof=1) if n >= 2 else np.nan
        if n >= 2:
            low, high = stats.t.interval(0.95, n - 1, loc=mean, scale=std / np.sqrt(n))
        else:
            low = high = np.nan
        logs = np.log10(values)
        geo_low = geo_high = median_low = median_high = np.nan
        if n >= 2:
            geo_low, geo_high = 10 ** np.array(
                stats.t.interval(0.95, n - 1, loc=logs.mean(), scale=stats.sem(logs))
            )
        if n >= 6:  # scipy's distribution-free interval of the median
            interval = stats.quantile_test(values, q=np.median(values)).confidence_interval()
            median_low, median_high = interval.low, interval.high
        rows.append(
            {
                "loss": loss,
                "optimizer": optimizer,
                "step": step,
                "n": runs.shape[0],
                "n_finite": n,
                "n_diverged": runs.shape[0] - n,
                "mean": mean,
                "std": std,
                "ci95_low": low,
                "ci95_high": high,
                "geo_mean": stats.gmean(values) if n else np.nan,
                "geo_low": geo_low,
                "geo_high": geo_high,
                "median": 10 ** np.median(logs) if n else np.nan,
                "median_low": median_low,
                "median_high": median_high,
                "min": values.min() if n else np.nan,
                "max": values.max() if n else np.nan,
            }
        )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def cells():
    rng = np.random.default_rng(3)
    steady = 2.0 + rng.random((7, 6))
    wild = 1.0 + rng.random((3, 6))
    wild[2, 2:] = np.inf  # one of three runs diverges at step 2
    other = 10.0 + rng.random((4, 6))
    return {("mse", "steady"): steady, ("mse", "wild"): wild, ("l1", "other"): other}


@pytest.fixture(scope="module")
def table(cells):
    return pd.concat(
        [column_statistics(loss, opt, runs) for (loss, opt), runs in cells.items()],
        ignore_index=True,
    )


def drawn(table, loss, band):
    fig, ax = plt.subplots()
    figures.draw_loss(ax, table, loss, band)
    return fig, ax


def band_edges(collection, steps):
    """Lower and upper edge of a fill_between polygon at each step."""
    vertices = np.concatenate([path.vertices for path in collection.get_paths()])
    low = [vertices[vertices[:, 0] == step, 1].min() for step in steps]
    high = [vertices[vertices[:, 0] == step, 1].max() for step in steps]
    return np.array(low), np.array(high)


# band -> (curve column, band columns, title after the loss)
BANDS = {
    "geomean_ci95": (
        "geo_mean",
        ("geo_low", "geo_high"),
        "geometric mean, band = 95 % t-interval on log10",
    ),
    "median_ci95": (
        "median",
        ("median_low", "median_high"),
        "median, band = order-statistic 95 % interval (none below 6 runs)",
    ),
    "none": ("geo_mean", None, "geometric mean"),
}


@pytest.mark.parametrize("band", list(BANDS))
def test_one_curve_per_optimizer_at_its_log_space_statistic_with_the_configured_band(table, band):
    fig, ax = drawn(table, "mse", band)
    curves = {line.get_gid(): line for line in ax.get_lines()}
    assert sorted(curves) == ["curve_mse_steady", "curve_mse_wild"]  # no l1 curve here
    bands = {c.get_gid(): c for c in ax.collections}
    assert sorted(bands) == ([] if band == "none" else ["band_mse_steady", "band_mse_wild"])
    column, band_columns, title = BANDS[band]
    # steady has 7 runs: both bands; wild 3 (then 2): no median interval, geometric one only
    cell = table[(table["loss"] == "mse") & (table["optimizer"] == "steady")]
    steps = cell["step"].to_numpy()
    line = curves["curve_mse_steady"]
    np.testing.assert_array_equal(line.get_xdata(), steps)
    np.testing.assert_allclose(line.get_ydata(), cell[column].to_numpy(), rtol=1e-12)
    if band_columns is not None:
        low, high = band_edges(bands["band_mse_steady"], steps)
        np.testing.assert_allclose(low, cell[band_columns[0]].to_numpy(), rtol=1e-12)
        np.testing.assert_allclose(high, cell[band_columns[1]].to_numpy(), rtol=1e-12)
        assert (low > 0).all()
        assert bands["band_mse_steady"].get_facecolor()[0][:3] == pytest.approx(
            matplotlib.colors.to_rgb(line.get_color())
        )  # the band in its curve's colour
    # (a long title wraps to the panel's width)
    assert ax.get_title().replace("\n", " ") == f"mse: {title}"
    plt.close(fig)


def test_legend_counts_runs_and_marks_diverged_ones(table):
    fig, ax = drawn(table, "mse", "geomean_ci95")
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels == ["steady (n=7)", "wild (1/3 diverged, excluded)"]
    styles = {line.get_gid(): line.get_linestyle() for line in ax.get_lines()}
    assert styles == {"curve_mse_steady": "-", "curve_mse_wild": "--"}  # diverged: dashed
    plt.close(fig)


def test_log_scale_for_wide_ranges_keeps_the_band_above_zero():
    # Losses over 1e-6 .. 1; the arithmetic t interval of the small ones goes below
    # zero, the log-space band is the t interval of the log10 values, mapped back.
    runs = np.array([[1.0, 1e-2, 1e-6], [1.2, 3e-2, 9e-6], [0.9, 2e-3, 5e-7]])
    table = column_statistics("mse", "spread", runs)
    assert (table["ci95_low"] <= 0).any()  # the case this test is about
    fig, ax = drawn(table, "mse", "geomean_ci95")
    assert ax.get_yscale() == "log"
    low, high = band_edges(ax.collections[0], table["step"])
    logs = np.log10(runs)
    half = stats.t.ppf(0.975, 2) * logs.std(axis=0, ddof=1) / np.sqrt(3)
    np.testing.assert_allclose(low, 10 ** (logs.mean(axis=0) - half), rtol=1e-12)
    np.testing.assert_allclose(high, 10 ** (logs.mean(axis=0) + half), rtol=1e-12)
    assert (low > 0).all()
    plt.close(fig)


@pytest.mark.parametrize(("ratio", "scale"), [(50.0, "linear"), (99.0, "linear"), (200.0, "log")])
def test_log_scale_from_a_hundredfold_range_of_means(ratio, scale):
    runs = np.array([[1.0, 1.0 / ratio], [1.1, 1.1 / ratio]])
    fig, ax = drawn(column_statistics("mse", "one", runs), "mse", "none")
    assert ax.get_yscale() == scale
    plt.close(fig)


def test_overview_has_one_panel_per_loss_with_its_own_curves(table, monkeypatch):
    saved = {}
    monkeypatch.setattr(figures, "save", lambda fig, paths: saved.setdefault("fig", fig))
    figures.plot_overview(table, ["mse", "l1"], "median_ci95", ["unused.png"])
    axes = saved["fig"].axes
    assert [ax.get_title().split(":")[0] for ax in axes] == ["mse", "l1"]
    assert sorted(line.get_gid() for line in axes[0].get_lines()) == [
        "curve_mse_steady",
        "curve_mse_wild",
    ]
    assert [line.get_gid() for line in axes[1].get_lines()] == ["curve_l1_other"]
    plt.close(saved["fig"])


# --- The SVG files of the tiny workflow run, against the article's loop ---


def svg_points(group) -> np.ndarray:
    """Absolute (x, y) vertices of the paths a group draws, <use> offsets applied."""
    defined = {p.get("id"): p.get("d") for p in group.iter(f"{SVG}path") if p.get("id")}
    drawn = [(p.get("d"), 0.0, 0.0) for p in group.iter(f"{SVG}path") if not p.get("id")]
    for use in group.iter(f"{SVG}use"):
        reference = use.get(f"{XLINK}href", "").lstrip("#")
        if reference in defined:
            drawn.append((defined[reference], float(use.get("x", 0)), float(use.get("y", 0))))
    points = []
    for d, dx, dy in drawn:
        numbers = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?", d)]
        points += [(x + dx, y + dy) for x, y in zip(numbers[::2], numbers[1::2], strict=True)]
    return np.array(points)


def svg_groups(path, prefix: str) -> dict[str, ET.Element]:
    root = ET.parse(path).getroot()
    return {g.get("id"): g for g in root.iter(f"{SVG}g") if g.get("id", "").startswith(prefix)}


def svg_texts(path) -> list[str]:
    return ["".join(t.itertext()) for t in ET.parse(path).getroot().iter(f"{SVG}text")]


def article_runs(loss, optimizer, config) -> np.ndarray:
    return _article_runs(loss, optimizer, config["steps"], tuple(config["seeds"]))


# Each loss's runs are checked in its own figure and in the overview: trained once.
@functools.cache
def _article_runs(loss, optimizer, steps, seeds) -> np.ndarray:
    runs = np.array(
        [
            article_loop(seed, ARTICLE_OPTIMIZERS[optimizer], ARTICLE_LOSSES[loss], steps)
            for seed in seeds
        ]
    )
    runs.flags.writeable = False  # shared between callers
    return runs


def check_svg(svg, loss, optimizers, config, band):
    """Curves and bands of one loss's panel, mapped back to data by one affine
    map per axis, against the article's loop over the config's seeds."""
    curves = svg_groups(svg, f"curve_linear_{loss}_")
    bands = svg_groups(svg, f"band_linear_{loss}_")
    assert sorted(curves) == sorted(f"curve_linear_{loss}_{o}" for o in optimizers)
    expected_bands = [] if band == "none" else [f"band_linear_{loss}_{o}" for o in optimizers]
    assert sorted(bands) == sorted(expected_bands)
    runs = {o: article_runs(loss, o, config) for o in optimizers}
    means = np.concatenate([stats.gmean(r, axis=0) for r in runs.values()])
    log = means.min() > 0 and means.max() / means.min() > LOG_SCALE_RATIO
    scale = np.log10 if log else (lambda v: v)
    pixels = np.concatenate([svg_points(curves[f"curve_linear_{loss}_{o}"]) for o in optimizers])
    steps = np.tile(np.arange(config["steps"]), len(optimizers))
    assert len(pixels) == len(steps)  # one vertex per step and optimizer
    # One affine map per axis takes data to pixels; every vertex must fit it.
    x_fit = np.polyfit(steps, pixels[:, 0], 1)
    y_fit = np.polyfit(scale(means), pixels[:, 1], 1)
    np.testing.assert_allclose(np.polyval(x_fit, steps), pixels[:, 0], atol=1e-3)
    np.testing.assert_allclose(np.polyval(y_fit, scale(means)), pixels[:, 1], atol=1e-3)
    for optimizer in optimizers if band != "none" else ():
        assert band == "geomean_ci95"  # the tiny run has 2 seeds: no median interval
        logs = np.log10(runs[optimizer])
        n = len(logs)
        low, high = 10 ** np.array(
            stats.t.interval(0.95, n - 1, loc=logs.mean(axis=0), scale=stats.sem(logs, axis=0))
        )
        points = svg_points(bands[f"band_linear_{loss}_{optimizer}"])
        at_step = np.rint((points[:, 0] - x_fit[1]) / x_fit[0])
        for step in range(config["steps"]):
            ys = points[at_step == step, 1]
            edges = sorted(np.polyval(y_fit, scale(np.array([low[step], high[step]]))))
            assert [ys.min(), ys.max()] == pytest.approx(edges, abs=1e-3), (optimizer, step)
    texts = svg_texts(svg)
    for optimizer in optimizers:
        assert f"{optimizer} (n={len(config['seeds'])})" in texts
    # The panel's title says what its curve and band are: the single figure in
    # its title (wrapped to the panel's width: one text per line), the overview
    # once above its panels.
    joined = " ".join(texts)
    assert (
        f"linear, {loss}: {BANDS[band][2]}" in joined
        or f"linear, {loss}" in texts
        and f"Optimizer comparison across seeds: {BANDS[band][2]}" in texts
    ), texts


@pytest.mark.workflow
def test_workflow_figures_draw_the_article_runs(default_results):
    # The default run (config.yaml: 10 seeds, 4 optimizers, linear with mse and
    # l1) writes the SVGs; the tiny study (figure_formats: [png]) writes none.
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    assert "figure_formats" not in config  # the default: png, svg and pdf
    optimizers = list(config["optimizers"])
    figures_dir = default_results / "results/figures"
    for loss in config["losses"]:
        check_svg(
            figures_dir / f"losses/linear/{loss}.svg", loss, optimizers, config, config["band"]
        )
        check_svg(figures_dir / "overview.svg", loss, optimizers, config, config["band"])


@pytest.mark.workflow
def test_band_setting_reaches_the_figures(tiny_results, tmp_path):
    workdir = copy_tree(tiny_results, tmp_path / "w")
    figure = "results/figures/losses/linear/l1.svg"
    # The tiny study draws PNGs only (figure_formats: [png]): asked for its SVGs too.
    snakemake(
        workdir,
        "--cores",
        "1",
        "--config",
        "band=none",
        "figure_formats=[png,svg]",
        "--",
        figure,
        configfile=TINY,
    )
    config = yaml.safe_load(TINY.read_text())
    check_svg(workdir / figure, "l1", list(config["optimizers"]), config, "none")


def drawn_figure(monkeypatch, draw):
    """The figure ``draw`` would save, kept open to be read."""
    kept = []
    monkeypatch.setattr(figures, "save", lambda fig, paths: kept.append(fig))
    draw()
    (fig,) = kept
    return fig


def test_ecdf_draws_the_share_reached_and_says_when_none_did(monkeypatch):
    runs = pd.DataFrame(
        {
            "problem": ["p"] * 8 + ["q"] * 2,
            "loss": ["mse"] * 8 + ["l1"] * 2,
            "optimizer": ["a"] * 4 + ["b"] * 4 + ["a", "b"],
            "seed": [0, 1, 2, 3] * 2 + [0, 0],
            "steps_to_threshold": [8.0, 3.0, np.nan, 5.0] + [np.nan] * 4 + [np.nan] * 2,
        }
    )
    colors = {"a": "C0", "b": "C1"}
    fig = drawn_figure(
        monkeypatch,
        lambda: figures.plot_ecdf(runs, colors, [], {("p", "mse"): 39.0, ("q", "l1"): 39.0}),
    )
    reached_panel, none_panel = fig.axes[:2]
    a, b = reached_panel.get_lines()
    # one run of four censored: the curve climbs at steps 3, 5, 8 and ends at 0.75
    assert list(a.get_xdata()) == [0.0, 3.0, 5.0, 8.0, 39.0]
    assert list(a.get_ydata()) == [0.0, 0.25, 0.5, 0.75, 0.75]
    assert a.get_label() == "a (3 of 4 reached)"
    # none reached: flat at 0 over the whole run, and the legend says 0 of 4
    assert list(b.get_ydata()) == [0.0, 0.0] and list(b.get_xdata()) == [0.0, 39.0]
    assert b.get_label() == "b (0 of 4 reached)"
    assert [t.get_text() for t in reached_panel.texts] == []
    assert reached_panel.get_xlim() == (0.0, 39.0)
    # a panel where no run reached the level: a note, a real step axis
    # runs of 40 steps: steps 0..39 recorded, so the horizon 39 is 40 steps
    assert [t.get_text() for t in none_panel.texts] == [
        "no run reached the threshold\nin its 40 steps"
    ]
    assert none_panel.get_xlim() == (0.0, 39.0)
    assert all(list(line.get_ydata()) == [0.0, 0.0] for line in none_panel.get_lines())
    plt.close(fig)


def test_ecdf_horizons_from_the_step_table():
    steps = pd.DataFrame(
        {"problem": ["p"] * 3 + ["q"], "loss": ["mse"] * 3 + ["l1"], "step": [0, 1, 2, 0]}
    )
    assert figures.ecdf_horizons(steps) == {("p", "mse"): 2.0, ("q", "l1"): 0.0}


def test_rank_colour_bar_has_one_colour_and_tick_per_whole_rank(monkeypatch):
    board = pd.DataFrame(
        {
            "problem": ["p"] * 3 + ["q"] * 3,
            "loss": ["mse"] * 6,
            "optimizer": ["a", "b", "c"] * 2,
            "rank": [1, 2, 2, 1, 1, 3],
        }
    )
    fig = drawn_figure(monkeypatch, lambda: figures.plot_ranks(board, []))
    heatmap, bar = fig.axes
    assert list(bar.get_yticks()) == [1.0, 2.0, 3.0]
    image = heatmap.get_images()[0]
    assert image.cmap.N == 3  # one colour per rank, no in-between shades
    plt.close(fig)


def test_win_matrix_labels_stay_readable_on_dark_cells(monkeypatch):
    matrix = pd.DataFrame({"optimizer": ["a", "b"], "a": [np.nan, 0.0], "b": [1.0, np.nan]})
    fig = drawn_figure(monkeypatch, lambda: figures.plot_win_matrix(matrix, []))
    colors = {t.get_text(): t.get_color() for t in fig.axes[0].texts}
    # RdBu: 0.00 is dark red, 1.00 dark blue: both need white text
    assert colors == {"0.00": "white", "1.00": "white"}
    assert figures._text_color((1.0, 1.0, 1.0)) == "black"
    assert figures._text_color((0.4, 0.0, 0.05)) == "white"
    plt.close(fig)


def test_finals_draw_the_resolution_floor_and_count_the_runs_at_it(monkeypatch):
    floor = 1e-13
    runs = pd.DataFrame(
        {
            "problem": ["p"] * 4,
            "loss": ["mse"] * 4,
            "optimizer": ["a", "a", "b", "b"],
            "seed": [0, 1, 0, 1],
            "final_loss": [floor, floor, 1e-6, floor],  # raised to the floor (runmetrics)
            "resolution_floor": [floor, floor / 2, floor, floor / 2],
            "at_floor": [1.0, 0.0, 0.0, 1.0],
        }
    )
    board = pd.DataFrame(
        {
            "problem": ["p", "p"],
            "loss": ["mse", "mse"],
            "optimizer": ["a", "b"],
            "median": [floor, 1e-6],
            "median_low": [np.nan, np.nan],
            "median_high": [np.nan, np.nan],
        }
    )
    fig = drawn_figure(
        monkeypatch, lambda: figures.plot_finals(runs, board, {"a": "C0", "b": "C1"}, [])
    )
    ax = fig.axes[0]
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 1 and list(dashed[0].get_ydata()) == [floor, floor]
    assert [t.get_text() for t in ax.texts] == ["float32 resolution floor (2 of 4 runs)"]
    assert "resolution floor" in fig._suptitle.get_text()
    plt.close(fig)


# --- Issue 31: diverged runs, empty panels, titles (point 2's figures, point 10) ---


def diverging_table() -> pd.DataFrame:
    """A converged optimizer (loss 1 -> 0.01) and one whose 3 runs blow up to
    1e28 by step 2 and are NaN from step 3 (the issue's SGD at lr 1e6)."""
    good = np.array([[1.0, 0.5, 0.1, 0.05, 0.01]] * 3) * np.array([[1.0], [1.2], [0.9]])
    bad = np.array([[1.0, 1e14, 1e28, np.inf, np.inf]] * 3)
    table = pd.concat(
        [column_statistics("mse", "adam", good), column_statistics("mse", "sgd_huge", bad)],
        ignore_index=True,
    )
    # the step table's curve of a diverging cell: its runs until they diverge
    huge = table["optimizer"] == "sgd_huge"
    table.loc[huge, "n_diverged"] = [0, 0, 0, 3, 3]
    return table


def test_loss_axes_follow_the_finite_runs_and_mark_the_diverged_ones():
    table = diverging_table()
    fig, ax = drawn(table, "mse", "geomean_ci95")
    low, high = ax.get_ylim()
    good = table[table["optimizer"] == "adam"][["geo_mean", "geo_low", "geo_high"]].to_numpy()
    # the converged curve and its band fill the axis (within a factor 2 margin) ...
    assert np.nanmax(good) <= high <= 2.0 * np.nanmax(good) + 1e-12
    assert np.nanmin(good) / 2.0 - 1e-12 <= low <= np.nanmin(good)
    # ... and the diverging one is marked where it leaves the axis (step 1: 1e14 > top)
    marks = [line for line in ax.get_lines() if line.get_marker() == "x"]
    assert len(marks) == 1
    assert list(marks[0].get_xdata()) == [1.0] and list(marks[0].get_ydata()) == [high]
    assert [t.get_text() for t in ax.texts] == ["diverged"]
    plt.close(fig)


def test_overview_panel_titles_do_not_overlap_three_in_a_row(monkeypatch):
    rng = np.random.default_rng(0)
    runs = 1.0 + rng.random((4, 6))
    table = pd.concat(
        [
            column_statistics(loss, "adam", runs).assign(problem=problem)
            for problem, loss in [
                ("text_transformer", "cross_entropy"),
                ("digits_mlp", "cross_entropy"),
                ("noisy_quadratic", "mse"),
            ]
        ],
        ignore_index=True,
    )
    panels = [
        ("text_transformer", "cross_entropy"),
        ("digits_mlp", "cross_entropy"),
        ("noisy_quadratic", "mse"),
    ]
    for band in BANDS:
        fig = drawn_figure(
            monkeypatch, lambda band=band: figures.plot_overview(table, panels, band, [])
        )
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        boxes = [ax.title.get_window_extent(renderer) for ax in fig.axes]
        for left, right in zip(boxes, boxes[1:], strict=False):
            assert left.x1 <= right.x0, (band, [ax.get_title() for ax in fig.axes])
        # the band is described once, above the panels
        assert BANDS[band][2] in fig._suptitle.get_text()
        plt.close(fig)


def test_finals_title_says_why_no_median_interval_is_drawn(monkeypatch):
    # The order-statistic interval (min, max) of n runs covers the median with
    # probability 1 - 2 / 2**n: 0.75 at n = 3; the first n reaching 0.95 is 6.
    needed = next(n for n in range(1, 20) if 1 - 2 * 0.5**n >= 0.95)
    assert figures.MEDIAN_INTERVAL_MIN_RUNS == needed == 6
    runs = pd.DataFrame(
        {
            "problem": ["p"] * 6,
            "loss": ["mse"] * 6,
            "optimizer": ["a"] * 3 + ["b"] * 3,
            "seed": [0, 1, 2] * 2,
            "final_loss": [0.1, 0.2, 0.3, 0.01, 0.02, 0.03],
        }
    )
    board = pd.DataFrame(
        {
            "problem": ["p", "p"],
            "loss": ["mse", "mse"],
            "optimizer": ["a", "b"],
            "n": [3, 3],
            "median": [0.2, 0.02],
            "median_low": [np.nan, np.nan],
            "median_high": [np.nan, np.nan],
        }
    )
    fig = drawn_figure(
        monkeypatch, lambda: figures.plot_finals(runs, board, {"a": "C0", "b": "C1"}, [])
    )
    title = fig._suptitle.get_text()
    assert "its 95 % interval needs >= 6 runs (not drawn at n = 3)" in title, title
    plt.close(fig)
    # with the interval there, the title promises it, as drawn
    board = board.assign(median_low=[0.1, 0.01], median_high=[0.3, 0.03], n=[8, 8])
    assert "bar: median and its 95 % interval;" in figures.finals_title(board)


def test_empty_performance_profile_panels_say_why(monkeypatch):
    profiles = pd.DataFrame(
        {
            "cost": ["steps"] * 4 + ["time"] * 2,
            "tau": [1.0, 4.0, 1.0, 4.0, 1.0, 4.0],
            "optimizer": ["a", "a", "b", "b", "a", "b"],
            "rho": [0.0, 0.0, 0.0, 0.0, 0.5, 1.0],
        }
    )
    scores = pd.DataFrame(
        {
            "cost": ["steps", "steps", "time", "time"],
            "optimizer": ["a", "b", "a", "b"],
            "score": [0.0, 0.0, 0.4, 0.8],
            "n_blocks": [2, 2, 2, 2],
            "n_reached": [0, 0, 1, 2],
        }
    )
    fig = drawn_figure(
        monkeypatch,
        lambda: figures.plot_profiles(profiles, scores, {"a": "C0", "b": "C1"}, []),
    )
    empty, full = fig.axes
    assert [t.get_text() for t in empty.texts] == [
        "no optimizer reached the threshold\non any (problem, loss) pair:\nno steps to compare"
    ]
    assert [t.get_text() for t in full.texts] == []
    plt.close(fig)


def test_an_optimizer_with_some_diverged_runs_keeps_its_survivors_on_the_axis(table):
    # "wild": one of three runs diverges at step 2; from then on its curve is
    # the two finite runs' and must stay inside the axis, as must "steady"
    fig, ax = drawn(table, "mse", "geomean_ci95")
    low, high = ax.get_ylim()
    rows = table[table["loss"] == "mse"]
    wild = rows[(rows["optimizer"] == "wild") & (rows["step"] >= 2)]
    steady = rows[rows["optimizer"] == "steady"]
    for values in (wild["geo_mean"], steady["geo_mean"], steady["geo_high"]):
        assert ((values >= low) & (values <= high)).all()
    plt.close(fig)


def test_best_of_k_draws_its_interval_as_a_band_where_the_seeds_gave_one(monkeypatch):
    rows = []
    for k in (1, 2, 3):
        centre = -1.0 - 0.5 * k
        rows.append(("adam", k, centre, centre - 0.2 * k, centre + 0.1 * k, "percentile"))
        rows.append(("sgd", k, -1.0, np.nan, np.nan, "n too small: 3 evaluation seeds"))
    curve = pd.DataFrame(
        rows,
        columns=["optimizer", "k", "expected_log10", "expected_low", "expected_high", "ci_method"],
    ).assign(problem="p", loss="mse", exhausted=False)
    drawn = []
    monkeypatch.setattr(figures, "save", lambda fig, paths: drawn.append(fig))
    figures.plot_best_of_k(curve, {"adam": "C0", "sgd": "C1"}, [])
    (fig,) = drawn
    bands = {c.get_gid(): c for ax in fig.axes for c in ax.collections if c.get_gid() is not None}
    assert set(bands) == {"best_of_k_band_p_mse_adam"}  # none for sgd: no interval
    outline = bands["best_of_k_band_p_mse_adam"].get_paths()[0].vertices
    adam = curve[curve["optimizer"] == "adam"]
    for k, low, high in adam[["k", "expected_low", "expected_high"]].itertuples(index=False):
        at_k = outline[np.isclose(outline[:, 0], k), 1]
        assert at_k.min() == pytest.approx(low) and at_k.max() == pytest.approx(high)


@pytest.mark.parametrize(
    ("given", "formats"),
    [(None, ("png", "svg", "pdf")), (["png"], ("png",)), (["pdf", "png"], ("png", "pdf"))],
)
def test_figure_formats_default_to_all_three_and_keep_one_order(given, formats):
    """config key figure_formats: every format by default (the outputs of earlier
    versions), and the formats in one order whatever the config's, so that the
    plot jobs' params (and so their reruns) do not depend on how a list was written."""
    from conftest import SCHEMA
    from optbench.planning import settings

    config = yaml.safe_load(TINY.read_text())
    config.pop("figure_formats")
    if given is not None:
        config["figure_formats"] = given
    experiment = settings.validate(config, SCHEMA, check_torch=False, memory_bytes=None)
    assert experiment.figure_formats == formats
