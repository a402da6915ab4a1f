"""Comparison figures: mean loss against step, one line per optimizer, with a band.

Each figure is one (problem, loss) pair and draws each optimizer's selected
variant (optbench.summary.select_variants). An optimizer keeps its colour in
every figure: colours follow the order in which optimizers first appear in the
step table, which is the configuration's.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # jobs run without a display
matplotlib.rcParams["svg.fonttype"] = "none"  # SVG text stays text: searchable, editable
matplotlib.rcParams["svg.hashsalt"] = "optbench"  # stable element ids between runs

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from optbench import runfiles  # noqa: E402

BAND_LABELS = {"ci95": "95 % CI of the mean", "std": "± 1 std", "none": None}

# Log scale when the positive means span more than this ratio.
LOG_SCALE_RATIO = 100.0


def band_limits(cell: pd.DataFrame, band: str):
    if band == "ci95":
        return cell["ci95_low"].to_numpy(), cell["ci95_high"].to_numpy()
    if band == "std":
        mean, std = cell["mean"].to_numpy(), cell["std"].to_numpy()
        return mean - std, mean + std
    return None


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


def draw_loss(ax, table: pd.DataFrame, loss: str, band: str, problem: str | None = None) -> None:
    colors = optimizer_colors(table)
    rows = table[table["loss"] == loss]
    if problem is not None:
        rows = rows[rows["problem"] == problem]
    prefix = f"{problem}_{loss}" if problem is not None else loss
    for optimizer, cell in rows.groupby("optimizer", sort=False):
        cell = cell.sort_values("step")
        steps, mean = cell["step"].to_numpy(), cell["mean"].to_numpy()
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
            if wants_log_scale(rows["mean"].to_numpy()):
                # A lower edge at or below zero has no place on a log axis: draw
                # the band down to the smallest loss observed instead.
                low = np.where(low > 0, low, cell["min"].to_numpy())
            band_patch = ax.fill_between(
                steps, low, high, color=line.get_color(), alpha=0.2, linewidth=0
            )
            band_patch.set_gid(f"band_{prefix}_{optimizer}")
    if wants_log_scale(rows["mean"].to_numpy()):
        ax.set_yscale("log")
    title = loss if problem is None else f"{problem}, {loss}"
    ax.set_title(
        f"{title}: mean over seeds" + (f", band = {BAND_LABELS[band]}" if band != "none" else "")
    )
    ax.set_xlabel("step")
    ax.set_ylabel(f"{loss} loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")


def save(fig, paths) -> None:
    for path in paths:
        with runfiles.atomic_path(path) as temporary:
            fig.savefig(
                temporary, format=str(path).rsplit(".", 1)[-1], dpi=120, bbox_inches="tight"
            )
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
        draw_loss(ax, table, loss, band, problem)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle("Optimizer comparison across seeds")
    save(fig, paths)


def read_table(path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", keep_default_na=False, na_values=["nan"])
