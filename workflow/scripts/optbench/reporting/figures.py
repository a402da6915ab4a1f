"""Figures of the analysis: loss curves on the right scale and the comparison figures.

A loss figure is one (problem, loss) pair and draws each optimizer's selected
variant (optbench.reporting.selection.select_variants) as a log-space statistic with
its band (``BANDS``). An optimizer keeps its colour in every figure: colours
follow the order in which optimizers first appear in the step or run table,
which is the configuration's. ``draw_all`` draws every figure of the report
from the analysis tables in one process.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # jobs run without a display
matplotlib.rcParams["svg.fonttype"] = "none"  # SVG text stays text: searchable, editable
matplotlib.rcParams["svg.hashsalt"] = "optbench"  # stable element ids between runs

import textwrap  # noqa: E402

import matplotlib.colors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from optbench import runfiles  # noqa: E402
from optbench.reporting import outputs  # noqa: E402
from optbench.reporting.logscale import FLOOR  # noqa: E402

# band config value -> (curve column, band columns, what the band is). Every
# curve and band is a log-space statistic (optbench.reporting.statistics): positive by
# construction, so a band never crosses zero on a log axis. The arithmetic
# mean and its t interval stay in the step table and are never drawn.
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
# Log scale when the positive curve values span more than this ratio.
LOG_SCALE_RATIO = 100.0


def band_limits(cell: pd.DataFrame, band: str):
    columns = BANDS[band][1]
    if columns is None:
        return None
    return cell[columns[0]].to_numpy(), cell[columns[1]].to_numpy()


def wants_log_scale(means: np.ndarray) -> bool:
    finite = means[np.isfinite(means)]
    if finite.size == 0 or np.any(finite <= 0):
        return False
    return finite.max() / finite.min() > LOG_SCALE_RATIO


def optimizer_colors(table: pd.DataFrame) -> dict[str, str]:
    """One colour per optimizer, the same in every figure of a table."""
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = list(dict.fromkeys(table["optimizer"]))
    return {name: cycle[index % len(cycle)] for index, name in enumerate(names)}


# A diverging curve's values up to this factor above the trusted ones still
# set the axis (its first steps, before it blows up, are ordinary losses).
DIVERGING_HEADROOM = 10.0


def finite_curve_values(rows: pd.DataFrame, curve_column: str, band_columns) -> np.ndarray:
    """The curve (and band) values the y axis must show: every value of the
    optimizers none of whose runs diverged, and of the others the steps after
    their last divergence (then the curve is over the runs that stayed finite),
    plus their earlier values that stay within ``DIVERGING_HEADROOM`` of those."""
    columns = [curve_column, *(band_columns or ())]
    per_optimizer = rows.groupby("optimizer", sort=False)["n_diverged"].transform("max")
    trusted = rows[(per_optimizer == 0) | (rows["n_diverged"] >= per_optimizer)]
    values = trusted[columns].to_numpy(np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size:
        rest = rows.drop(trusted.index)[columns].to_numpy(np.float64).ravel()
        top = values.max()
        near = rest[np.isfinite(rest) & (rest <= (top * DIVERGING_HEADROOM if top > 0 else top))]
        values = np.concatenate([values, near])
    return values


def curve_limits(values: np.ndarray, log: bool):
    """y limits around ``values`` with a margin (a factor on a log axis), or None."""
    if log:
        values = values[values > 0]
    if values.size == 0:
        return None
    low, high = float(values.min()), float(values.max())
    if log:
        return low / 2.0, high * 2.0
    pad = 0.05 * (high - low) if high > low else max(abs(high), 1.0) * 0.05
    return low - pad, high + pad


def mark_divergence(ax, rows: pd.DataFrame, curve_column: str, top: float, colors) -> None:
    """An x at the axis' top where each diverging optimizer's curve leaves it
    (goes above ``top`` or stops being finite), labelled "diverged"."""
    for optimizer, cell in rows.groupby("optimizer", sort=False):
        if int(cell["n_diverged"].max()) == 0:
            continue
        cell = cell.sort_values("step")
        values = cell[curve_column].to_numpy(np.float64)
        gone = ~np.isfinite(values) | (values > top)
        if not gone.any():
            continue
        step = float(cell["step"].to_numpy()[int(np.argmax(gone))])
        ax.plot([step], [top], "x", color=colors[optimizer], markersize=9, clip_on=False)
        ax.annotate(
            "diverged",
            (step, top),
            textcoords="offset points",
            xytext=(6, -10),
            fontsize="x-small",
            color=colors[optimizer],
        )


def wrapped(text: str, ax) -> str:
    """``text`` broken into lines that fit ``ax``'s width (panel titles side by
    side must not run into each other)."""
    width_inches = ax.get_position().width * ax.figure.get_figwidth()
    characters = max(20, int(width_inches * 11))  # ~11 medium characters per inch
    return "\n".join(textwrap.wrap(text, characters)) or text


def draw_loss(
    ax,
    table: pd.DataFrame,
    loss: str,
    band: str,
    problem: str | None = None,
    with_band_in_title: bool = True,
) -> None:
    colors = optimizer_colors(table)
    rows = table[table["loss"] == loss]
    if problem is not None:
        rows = rows[rows["problem"] == problem]
    prefix = f"{problem}_{loss}" if problem is not None else loss
    curve_column = BANDS[band][0]
    for optimizer, cell in rows.groupby("optimizer", sort=False):
        cell = cell.sort_values("step")
        steps, mean = cell["step"].to_numpy(), cell[curve_column].to_numpy()
        n, n_diverged = int(cell["n"].iloc[-1]), int(cell["n_diverged"].max())
        name = optimizer
        if "variant" in cell and cell["variant"].iloc[0] != "base":
            name = f"{optimizer} {cell['variant'].iloc[0]}"  # the tuned variant
        label = f"{name} (n={n})"
        style = "-"
        if n_diverged:
            label = f"{name} ({n_diverged}/{n} diverged, excluded)"
            style = "--"
        (line,) = ax.plot(steps, mean, style, label=label, linewidth=1.6, color=colors[optimizer])
        # Named SVG groups (id="curve_linear_mse_adam"): the drawing can be found
        # and checked, or edited by hand, without guessing from colours.
        line.set_gid(f"curve_{prefix}_{optimizer}")
        limits = band_limits(cell, band)
        if limits is not None:
            low, high = limits
            band_patch = ax.fill_between(
                steps, low, high, color=line.get_color(), alpha=0.2, linewidth=0
            )
            band_patch.set_gid(f"band_{prefix}_{optimizer}")
    # The scale follows the curves (README: more than 100x between them), of the
    # optimizers that stayed finite where a blow-up would decide it; the limits
    # take their bands in too.
    curves = finite_curve_values(rows, curve_column, None)
    if wants_log_scale(curves if curves.size else rows[curve_column].to_numpy()):
        ax.set_yscale("log")
    kept = finite_curve_values(rows, curve_column, BANDS[band][1])
    limits = curve_limits(kept, ax.get_yscale() == "log")
    if limits is not None and (rows["n_diverged"] > 0).any():
        # A diverging optimizer's curve climbs to 1e30 before it ends: the axis
        # follows the curves that stayed finite, and the diverged ones are
        # marked where they leave it.
        ax.set_ylim(*limits)
        mark_divergence(ax, rows, curve_column, limits[1], colors)
    title = loss if problem is None else f"{problem}, {loss}"
    if with_band_in_title:
        title = f"{title}: {BANDS[band][2]}"
    ax.set_title(wrapped(title, ax), fontsize="medium")
    ax.set_xlabel("step")
    ax.set_ylabel(f"{loss} loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")


# Figures for papers: every figure is also written as vector PDF and SVG, drawn
# again in one style (PAPER_STYLE: 8 pt text, thin lines, fonts embedded as
# TrueType in PDF and kept as text in SVG) at a journal's sizes: a figure of
# one panel one column wide (ONE_COLUMN), a wider one (several panels) the
# width of two columns (TWO_COLUMNS), its height scaled with its width. The PNGs
# stay as the report shows them. docs/report.md, "Figures for papers".
ONE_COLUMN, TWO_COLUMNS = 3.5, 7.16  # inches: IEEE / ACM / Springer two-column pages
PAGE_HEIGHT = 9.0  # inches: the tallest a figure may be on a page
VECTOR_FORMATS = ("pdf", "svg")
PAPER_STYLE = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "figure.titlesize": 9,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "lines.linewidth": 1.0,
    "lines.markersize": 4,
    "axes.linewidth": 0.6,
    "grid.linewidth": 0.4,
    "pdf.fonttype": 42,  # TrueType: journals refuse Type 3 fonts
    "svg.fonttype": "none",
    "savefig.pad_inches": 0.02,
}
# A figure drawn wider than this (inches, before resizing) gets two columns.
WIDE = 7.0
_paper = {"on": False}


def paper_width(width: float) -> float:
    """The column width (inches) for a figure drawn ``width`` inches wide."""
    return TWO_COLUMNS if width > WIDE else ONE_COLUMN


def fit_width(fig, target: float) -> None:
    """Resizes ``fig`` (its height in proportion, at most PAGE_HEIGHT) so that
    what it draws, labels and legends outside the axes included (what
    ``bbox_inches="tight"`` keeps), is ``target`` inches wide. Text keeps its
    size in points, so the canvas is solved for, not scaled: a few passes."""
    for _ in range(3):
        width, height = fig.get_size_inches()
        fold_titles(fig, target / width)
        drawn = fig.get_tightbbox(fig.canvas.get_renderer()).width
        new = max(target / 2, width + target - drawn)
        fig.set_size_inches(new, min(PAGE_HEIGHT, height * new / width))


def fold_titles(fig, scale: float) -> None:
    """Titles folded onto lines that fit their axes (the figure's) once it is
    ``scale`` times as wide: a title's text keeps its size when the figure shrinks."""

    def fold(text, inches: float, points: float) -> str:
        # About 0.55 em per character of a sans-serif font.
        chars = max(12, int(inches * 72 / (0.55 * points)))
        return textwrap.fill(" ".join(text.get_text().split()), chars)

    for ax in fig.axes:
        title = ax.title
        if ax.get_visible() and title.get_text():
            inches = ax.get_position().width * fig.get_figwidth() * scale
            title.set_text(fold(title, inches, title.get_fontsize()))
    if fig._suptitle is not None:
        suptitle = fig._suptitle
        suptitle.set_text(fold(suptitle, fig.get_figwidth() * scale, suptitle.get_fontsize()))


def _format(path) -> str:
    return str(path).rsplit(".", 1)[-1].lower()


def in_both_styles(draw, paths) -> None:
    """``draw(paths)``: once for the raster files (the report's style), once in
    ``PAPER_STYLE`` at a paper's size for the vector ones."""
    raster = [p for p in paths if _format(p) not in VECTOR_FORMATS]
    vector = [p for p in paths if _format(p) in VECTOR_FORMATS]
    if raster:
        draw(raster)
    if vector:
        _paper["on"] = True
        try:
            with matplotlib.rc_context(PAPER_STYLE):
                draw(vector)
        finally:
            _paper["on"] = False


def save(fig, paths) -> None:
    if _paper["on"]:
        fit_width(fig, paper_width(fig.get_figwidth()))
    for path in paths:
        with runfiles.atomic_path(path) as temporary:
            fig.savefig(temporary, format=_format(path), dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_loss(table: pd.DataFrame, loss: str, band: str, paths, problem: str | None = None) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    draw_loss(ax, table, loss, band, problem)
    save(fig, paths)


# At most this many panels side by side in the overview, then another row.
OVERVIEW_COLUMNS = 3


def plot_overview(table: pd.DataFrame, panels, band: str, paths) -> None:
    """One panel per (problem, loss) pair, or per loss where ``panels`` holds loss names."""
    panels = [(None, panel) if isinstance(panel, str) else tuple(panel) for panel in panels]
    columns = min(len(panels), OVERVIEW_COLUMNS)
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6.0 * columns, 4.4 * rows), squeeze=False)
    for ax, (problem, loss) in zip(axes.flat, panels, strict=False):
        draw_loss(ax, table, loss, band, problem, with_band_in_title=False)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    # The band's description once, not in every panel's title (three long
    # titles in a row ran into each other).
    fig.suptitle(f"Optimizer comparison across seeds: {BANDS[band][2]}")
    fig.tight_layout()
    save(fig, paths)


def read_table(path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", keep_default_na=False, na_values=["nan"])


# ---------------------------------------------------------------------------
# Comparison figures (one file each, one panel per (problem, loss) where the
# figure is per block). Inputs are the analysis tables (optbench.reporting.analysis).


def _blocks(table: pd.DataFrame) -> list[tuple[str, str]]:
    return list(dict.fromkeys(zip(table["problem"], table["loss"], strict=True)))


def _panels(count: int, width: float = 4.6, height: float = 3.6):
    columns = max(1, min(count, OVERVIEW_COLUMNS))
    rows = max(1, -(-count // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows), squeeze=False)
    for ax in list(axes.flat)[count:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def _empty(paths, message: str) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 1.6))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    save(fig, paths)


def _in_block(table: pd.DataFrame, block) -> pd.DataFrame:
    return table[(table["problem"] == block[0]) & (table["loss"] == block[1])]


# Points drawn per optimizer and panel of the finals figure: a 125,000-seed cell
# drew a 146 MB SVG. Past it, the first runs (lowest seeds) are drawn and the
# panel says so; the median and its interval are always every run's.
MAX_FINAL_POINTS = 1000


def plot_finals(runs: pd.DataFrame, board: pd.DataFrame, colors, paths) -> None:
    """Final loss of every evaluation run (points; at most ``MAX_FINAL_POINTS`` per
    optimizer) with the median and its order-statistic interval (bar), per
    optimizer, one panel per block; a diverged run is drawn as an x at the panel's top."""
    blocks = _blocks(board)
    fig, axes = _panels(len(blocks))
    rng = np.random.default_rng(0)  # fixed jitter: the same figure every time
    for ax, block in zip(axes, blocks, strict=False):
        rows = _in_block(runs, block)
        names = list(_in_block(board, block)["optimizer"])
        finite = rows["final_loss"].to_numpy(np.float64)
        top = np.nanmax(finite) * 3 if np.isfinite(finite).any() else 1.0
        capped = False
        for x, name in enumerate(names):
            values = rows.loc[rows["optimizer"] == name, "final_loss"].to_numpy(np.float64)
            if values.size > MAX_FINAL_POINTS:
                values, capped = values[:MAX_FINAL_POINTS], True
            jitter = x + rng.uniform(-0.18, 0.18, values.size)
            ok = np.isfinite(values)
            ax.scatter(
                jitter[ok], np.maximum(values[ok], FLOOR), s=12, color=colors[name], alpha=0.7
            )
            ax.scatter(jitter[~ok], np.full((~ok).sum(), top), marker="x", color=colors[name])
            row = _in_block(board, block).set_index("optimizer").loc[name]
            ax.plot([x - 0.3, x + 0.3], [row["median"]] * 2, color="black", linewidth=1.5)
            if np.isfinite(row["median_low"]):
                ax.plot([x, x], [row["median_low"], row["median_high"]], color="black")
        if capped:
            ax.annotate(
                f"points: the first {MAX_FINAL_POINTS:,} runs of each optimizer; bars: every run",
                (0.01, 0.99),
                xycoords="axes fraction",
                va="top",
                fontsize="x-small",
                color="dimgrey",
            )
        floor = rows["resolution_floor"].max() if "resolution_floor" in rows else np.nan
        if np.isfinite(floor) and floor > FLOOR:
            # Runs below it were raised to their floor (runmetrics): ties, not wins.
            ax.axhline(floor, color="grey", linestyle="--", linewidth=1)
            ax.annotate(
                f"float32 resolution floor ({rows['at_floor'].sum():g} of {len(rows)} runs)",
                (0.01, floor),
                xycoords=("axes fraction", "data"),
                textcoords="offset points",
                xytext=(0, 3),
                fontsize="x-small",
                color="dimgrey",
            )
        ax.set_yscale("log")
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize="small")
        ax.set_title(f"{block[0]}, {block[1]}", fontsize="medium")
        ax.set_ylabel("final loss")
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(finals_title(board))
    fig.tight_layout()
    save(fig, paths)


# The fewest runs whose order-statistic 95 % interval of the median exists:
# the widest such interval, (min, max), covers with 1 - 2 * 0.5**n >= 0.95.
MEDIAN_INTERVAL_MIN_RUNS = 6


def finals_title(board: pd.DataFrame) -> str:
    """The finals figure's title: what its bar shows, and why a bar has no
    interval where the runs are too few for one."""
    medians = pd.to_numeric(board["median"], errors="coerce")
    lows = pd.to_numeric(board["median_low"], errors="coerce")
    missing = board[np.isfinite(medians) & ~np.isfinite(lows)]
    bar = "bar: median and its 95 % interval"
    if len(missing):
        counts = pd.to_numeric(missing.get("n", pd.Series(dtype=float)), errors="coerce")
        runs = ", ".join(str(n) for n in sorted({int(n) for n in counts.dropna()}))
        at = f" at n = {runs}" if runs else ""
        bar = (
            f"bar: median; its 95 % interval needs >= {MEDIAN_INTERVAL_MIN_RUNS} runs"
            f" (not drawn{at})"
            if len(missing) == len(board[np.isfinite(medians)])
            else f"bar: median and its 95 % interval (none{at}:"
            f" it needs >= {MEDIAN_INTERVAL_MIN_RUNS} runs)"
        )
    return f"Final loss per evaluation seed; {bar}; x: diverged; dashed: float32 resolution floor"


def plot_ranks(board: pd.DataFrame, paths) -> None:
    """Rank (1 = best; ties share a rank) of each optimizer on each block."""
    board = board.assign(block=board["problem"] + "/" + board["loss"])
    matrix = board.pivot(index="optimizer", columns="block", values="rank")
    matrix = matrix.reindex(
        index=list(dict.fromkeys(board["optimizer"])), columns=list(dict.fromkeys(board["block"]))
    )
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * matrix.shape[1], 1.2 + 0.45 * matrix.shape[0]))
    values = matrix.to_numpy(np.float64)
    # Ranks are whole numbers: one colour per rank, a colour bar with one tick each.
    worst = int(np.nanmax(values)) if np.isfinite(values).any() else 1
    boundaries = np.arange(0.5, worst + 1.5)
    cmap = plt.get_cmap("viridis_r", len(boundaries) - 1)
    norm = matplotlib.colors.BoundaryNorm(boundaries, cmap.N)
    image = ax.imshow(values, cmap=cmap, norm=norm, aspect="auto")
    for (i, j), value in np.ndenumerate(values):
        if np.isfinite(value):
            ax.text(
                j,
                i,
                f"{value:g}",
                ha="center",
                va="center",
                fontsize="small",
                color=_text_color(cmap(norm(value))),
            )
    ax.set_xticks(range(matrix.shape[1]), matrix.columns, rotation=40, ha="right")
    ax.set_yticks(range(matrix.shape[0]), matrix.index)
    fig.colorbar(image, ax=ax, label="rank (paired tests, Holm)", ticks=range(1, worst + 1))
    ax.set_title("Rank per (problem, loss)", fontsize="medium")
    save(fig, paths)


def _text_color(background) -> str:
    """Black on light cells, white on dark ones (relative luminance, WCAG weights)."""
    red, green, blue = (
        c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in background[:3]
    )
    return "black" if 0.2126 * red + 0.7152 * green + 0.0722 * blue > 0.179 else "white"


def plot_sensitivity(table: pd.DataFrame, colors, paths) -> None:
    """Final loss against each swept or searched hyper-parameter, one panel per
    (problem, loss) and hyper-parameter, per optimizer: geometric mean over the
    evaluation seeds with its 95 % t-interval on log10; the selected variant
    circled."""
    swept = table[table["candidate"] & table["value"].notna()]
    if swept.empty:
        _empty(
            paths, "No swept or searched hyper-parameter in this configuration: nothing to plot."
        )
        return
    panels = list(
        dict.fromkeys(zip(swept["problem"], swept["loss"], swept["parameter"], strict=True))
    )
    fig, axes = _panels(len(panels))
    for ax, (problem, loss, parameter) in zip(axes, panels, strict=False):
        rows_of_panel = swept[
            (swept["problem"] == problem)
            & (swept["loss"] == loss)
            & (swept["parameter"] == parameter)
        ]
        for name, rows in rows_of_panel.groupby("optimizer", sort=False):
            rows = rows.sort_values("value")
            # A grid of one hyper-parameter reads as a curve; trials of a
            # search vary others too, so their points stay unjoined.
            one_dimensional = swept.loc[swept["optimizer"] == name, "parameter"].nunique() == 1
            ax.errorbar(
                rows["value"],
                rows["geo_mean"],
                yerr=[rows["geo_mean"] - rows["geo_low"], rows["geo_high"] - rows["geo_mean"]],
                marker="o",
                markersize=3,
                capsize=2,
                linestyle="-" if one_dimensional else "none",
                color=colors[name],
                label=name,
            )
            chosen = rows[rows["selected"]]
            ax.scatter(
                chosen["value"],
                chosen["geo_mean"],
                s=90,
                facecolors="none",
                edgecolors=colors[name],
                linewidths=1.5,
                zorder=3,
            )
        values = rows_of_panel["value"]
        if (values > 0).all() and values.max() > 10 * values.min():
            ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{problem}, {loss}", fontsize="medium")
        ax.set_xlabel(parameter)
        ax.set_ylabel("final loss")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.suptitle(
        "Sensitivity: geometric mean final loss (95 % t-interval on log10); circled: selected"
    )
    fig.tight_layout()
    save(fig, paths)


def plot_baseline(table: pd.DataFrame, colors, paths) -> None:
    """Each optimizer's speed-up over the baseline in steps to the target, with its
    exact 95 % interval over the paired seeds, one panel per (problem, loss)."""
    speedups = pd.to_numeric(table["speedup"], errors="coerce").astype(float)
    shown = table[np.isfinite(speedups) & (speedups > 0)]
    if shown.empty:
        _empty(paths, "No baseline (config key baseline), or no finite speed-up to draw.")
        return
    blocks = _blocks(shown)
    fig, axes = _panels(len(blocks))
    for ax, block in zip(axes, blocks, strict=False):
        rows = _in_block(shown, block).reset_index(drop=True)
        for position, row in rows.iterrows():
            low = row["speedup_low"] if np.isfinite(row["speedup_low"]) else row["speedup"]
            high = row["speedup_high"] if np.isfinite(row["speedup_high"]) else row["speedup"]
            ax.errorbar(
                row["speedup"],
                position,
                xerr=[[row["speedup"] - max(low, 0)], [high - row["speedup"]]],
                marker="o",
                capsize=3,
                color=colors[row["optimizer"]],
                label=row["optimizer"],
            )
        ax.axvline(1.0, color="0.4", linestyle="--", linewidth=1)
        ax.set_xscale("log")
        ax.set_yticks(range(len(rows)), rows["optimizer"])
        measure = (
            "held-out target"
            if rows["measure"].iloc[0] == "steps_to_heldout_target"
            else "threshold"
        )
        ax.set_xlabel(f"speed-up over {rows['baseline'].iloc[0]} in steps to the {measure}")
        ax.set_title(f"{block[0]}, {block[1]}", fontsize="medium")
        ax.grid(True, which="both", axis="x", alpha=0.3)
    fig.suptitle("Against the baseline: speed-up (exact 95 % interval over paired seeds)")
    fig.tight_layout()
    save(fig, paths)


def plot_ecdf(runs: pd.DataFrame, colors, paths, horizons: dict | None = None) -> None:
    """Share of evaluation runs that reached the threshold by each step.

    A run that never reached it keeps its optimizer's curve below 1 (one of
    four censored: the curve ends at 0.75); each curve runs to the panel's
    last step (``horizons``: (problem, loss) -> last step; else the last step
    any run reached), and the legend says how many runs reached the level. A
    panel where no run reached it says so, with every curve flat at 0.
    """
    blocks = _blocks(runs)
    horizons = horizons or {}
    fig, axes = _panels(len(blocks))
    for ax, block in zip(axes, blocks, strict=False):
        rows_of = _in_block(runs, block)
        reached_any = rows_of["steps_to_threshold"].notna().any()
        horizon = horizons.get(block)
        if horizon is None:
            horizon = float(rows_of["steps_to_threshold"].max()) if reached_any else 1.0
        for name, rows in rows_of.groupby("optimizer", sort=False):
            steps = np.sort(rows["steps_to_threshold"].dropna().to_numpy(np.float64))
            n = len(rows)
            x = np.concatenate([[0.0], steps, [max(horizon, steps[-1] if len(steps) else 0)]])
            y = np.concatenate([np.arange(len(steps) + 1), [len(steps)]]) / n
            label = f"{name} ({len(steps)} of {n} reached)"
            ax.step(x, y, where="post", color=colors[name], label=label)
        if not reached_any:
            ax.text(
                0.5,
                0.5,
                no_run_reached(horizon, block in horizons),
                transform=ax.transAxes,
                ha="center",
                va="center",
            )
        ax.set_xlim(0, horizon)
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(f"{block[0]}, {block[1]}", fontsize="medium")
        ax.set_xlabel("steps to threshold")
        ax.set_ylabel("share of runs")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle("Steps to threshold: empirical CDF over evaluation seeds")
    fig.tight_layout()
    save(fig, paths)


def no_run_reached(last_step: float, known: bool) -> str:
    """The empty ECDF panel's words. ``last_step`` is the last recorded step
    index (steps count from 0): a run of 40 steps ends at step 39."""
    if not known:
        return "no run reached the threshold"
    return f"no run reached the threshold\nin its {last_step + 1:g} steps"


def ecdf_horizons(steps: pd.DataFrame) -> dict:
    """(problem, loss) -> the last recorded step, from the step table."""
    last = steps.groupby(["problem", "loss"], sort=False)["step"].max()
    return {key: float(value) for key, value in last.items()}


def plot_profiles(profiles: pd.DataFrame, scores: pd.DataFrame, colors, paths) -> None:
    """Dolan-More performance profiles rho_s(tau), one panel per cost (steps,
    loss evaluations), with B_s in the legend."""
    costs = list(dict.fromkeys(profiles["cost"]))
    fig, axes = plt.subplots(1, len(costs), figsize=(6.0 * len(costs), 4.4), squeeze=False)
    for ax, cost in zip(axes.flat, costs, strict=True):
        rows_of = profiles[profiles["cost"] == cost]
        score_of = scores[scores["cost"] == cost].set_index("optimizer")
        for name, rows in rows_of.groupby("optimizer", sort=False):
            ax.step(
                rows["tau"],
                rows["rho"],
                where="post",
                color=colors[name],
                label=f"{name} (B = {score_of.loc[name, 'score']:.2f})",
            )
        ax.set_xlabel(f"tau ({cost} to threshold, ratio to the best optimizer)")
        ax.set_ylabel("share of (problem, loss) pairs")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        n = int(score_of["n_blocks"].iloc[0]) if len(score_of) else 0
        reason = empty_profile_reason(rows_of, score_of, cost)
        if reason:
            ax.text(0.5, 0.5, reason, transform=ax.transAxes, ha="center", va="center")
        ax.set_title(wrapped(f"Performance profiles on {cost} ({n} pairs)", ax), fontsize="medium")
    fig.tight_layout()
    save(fig, paths)


def empty_profile_reason(rows: pd.DataFrame, scores: pd.DataFrame, cost: str) -> str:
    """Why a profile panel has no curve above 0, or "" when it has one: no
    optimizer reached the threshold (or the held-out target) on any pair."""
    rho = pd.to_numeric(rows["rho"], errors="coerce")
    if len(rows) and (rho > 0).any():
        return ""
    target = "held-out target" if "heldout" in cost else "threshold"
    if "n_reached" in scores and len(scores) and (scores["n_reached"] == 0).all():
        return (
            f"no optimizer reached the {target}\non any (problem, loss) pair:\nno {cost} to compare"
        )
    return f"no optimizer reached the {target}:\nno {cost} to compare"


def plot_win_matrix(matrix: pd.DataFrame, paths) -> None:
    """Share of paired seeds where the row optimizer beats the column one."""
    values = matrix.drop(columns="optimizer").to_numpy(np.float64)
    names = list(matrix["optimizer"])
    fig, ax = plt.subplots(figsize=(1.6 + 0.8 * len(names), 1.2 + 0.6 * len(names)))
    cmap = plt.get_cmap("RdBu")
    image = ax.imshow(values, cmap=cmap, vmin=0.0, vmax=1.0)
    for (i, j), value in np.ndenumerate(values):
        if np.isfinite(value):
            ax.text(
                j,
                i,
                f"{value:.2f}",
                ha="center",
                va="center",
                fontsize="small",
                color=_text_color(cmap(value)),
            )
    ax.set_xticks(range(len(names)), names, rotation=40, ha="right")
    ax.set_yticks(range(len(names)), names)
    fig.colorbar(image, ax=ax, label="P(row beats column)")
    ax.set_title("Win probability, mean over (problem, loss) pairs", fontsize="medium")
    save(fig, paths)


def plot_best_of_k(curve: pd.DataFrame, colors, paths) -> None:
    """Expected final log10 loss of the variant a k-trial tuner keeps, every
    optimizer at every budget k (dashed where its candidates are spent), with
    its 95 % interval as a band."""
    if curve.empty or curve["k"].max() <= 1:
        _empty(paths, "No optimizer has more than one candidate: nothing was tuned.")
        return
    blocks = _blocks(curve)
    fig, axes = _panels(len(blocks))
    for ax, block in zip(axes, blocks, strict=False):
        for name, rows in _in_block(curve, block).groupby("optimizer", sort=False):
            searched = rows[~rows["exhausted"]]
            ax.plot(
                searched["k"],
                searched["expected_log10"],
                marker="o",
                markersize=3,
                color=colors[name],
                label=name,
            )
            # best_of_k.tsv's 95 % interval as a band, where the seeds gave one
            # (NaN: too few seeds; an infinite end: a diverged candidate).
            bounded = searched[np.isfinite(searched[["expected_low", "expected_high"]]).all(axis=1)]
            if len(bounded):
                ax.fill_between(
                    bounded["k"],
                    bounded["expected_low"],
                    bounded["expected_high"],
                    color=colors[name],
                    alpha=0.15,
                    linewidth=0,
                    gid=f"best_of_k_band_{block[0]}_{block[1]}_{name}",
                )
            spent = rows[rows["k"] >= searched["k"].max()]
            if len(spent) > 1:
                ax.plot(spent["k"], spent["expected_log10"], linestyle="--", color=colors[name])
        ax.set_title(f"{block[0]}, {block[1]}", fontsize="medium")
        ax.set_xlabel("k (trials of the tuning budget)")
        ax.set_ylabel("expected log10 final loss")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.suptitle(
        "What tuning bought: expected best after k trials (band: 95 % interval; "
        "dashed: candidates spent)"
    )
    fig.tight_layout()
    save(fig, paths)


# Figure name -> file stem under results/figures/ (declared in optbench.reporting.outputs).
ANALYSIS_FIGURES = outputs.ANALYSIS_FIGURES


def draw_analysis(tables: dict, outputs: dict, horizons: dict | None = None) -> None:
    """Every comparison figure; ``outputs``: figure name -> its paths; ``horizons``:
    (problem, loss) -> its last step (else the ECDF ends at the last step reached)."""
    from optbench.reporting import scaling_figures  # it imports this module

    runs, choice = tables["runs"], tables["selection"]
    colors = optimizer_colors(runs)
    chosen = runs[runs["role"] == "evaluation"].merge(
        choice[["problem", "loss", "optimizer", "variant"]], how="inner", sort=False
    )
    drawers = {
        "finals": lambda p: plot_finals(chosen, tables["leaderboard"], colors, p),
        "ranks": lambda p: plot_ranks(tables["leaderboard"], p),
        "sensitivity": lambda p: plot_sensitivity(tables["sensitivity"], colors, p),
        "ecdf": lambda p: plot_ecdf(chosen, colors, p, horizons),
        "profiles": lambda p: plot_profiles(
            tables["profiles"], tables["profile_scores"], colors, p
        ),
        "win_matrix": lambda p: plot_win_matrix(tables["win_matrix"], p),
        "best_of_k": lambda p: plot_best_of_k(tables["best_of_k"], colors, p),
        "baseline": lambda p: plot_baseline(tables["baseline"], colors, p),
        "scaling": lambda p: scaling_figures.plot_scaling(tables["scaling"], colors, p),
        "rank_flips": lambda p: scaling_figures.plot_rank_flips(tables["rank_flips"], p),
    }
    for name, paths in outputs.items():
        in_both_styles(drawers[name], paths)


def draw_curves(steps: pd.DataFrame, choice: pd.DataFrame, band: str, outputs: dict) -> None:
    """The loss figures: ``outputs`` maps (problem, loss) -> paths, and
    "overview" -> paths (every pair side by side)."""
    from optbench.reporting.summary import selected_rows

    table = selected_rows(steps, choice)
    panels = [key for key in outputs if key != "overview"]
    for (problem, loss), paths in ((k, v) for k, v in outputs.items() if k != "overview"):
        in_both_styles(
            lambda p, loss=loss, problem=problem: plot_loss(table, loss, band, p, problem), paths
        )
    if "overview" in outputs:
        in_both_styles(
            lambda p: plot_overview(table, panels or _blocks(table), band, p), outputs["overview"]
        )


def draw_all(tables: dict, folder, band: str, formats=("png", "svg", "pdf")) -> None:
    """Every figure the pipeline draws, in-process, at the pipeline's paths under
    ``folder`` (results/figures): what the rules plot_curves and plot_analysis do."""
    from pathlib import Path

    folder = Path(folder)
    blocks = _blocks(tables["steps"])
    curves = {
        (problem, loss): [folder / "losses" / problem / f"{loss}.{ext}" for ext in formats]
        for problem, loss in blocks
    }
    curves["overview"] = [folder / f"overview.{ext}" for ext in formats]
    draw_curves(tables["steps"], tables["selection"], band, curves)
    draw_analysis(
        tables,
        {
            name: [folder / f"{stem}.{ext}" for ext in formats]
            for name, stem in ANALYSIS_FIGURES.items()
        },
        ecdf_horizons(tables["steps"]),
    )
