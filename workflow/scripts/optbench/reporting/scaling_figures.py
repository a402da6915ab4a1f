"""Figures of the size and budget axes (optbench.reporting.scaling): speed-up at
matched loss against parameter count, and Kendall's tau of rank flips."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, LogLocator

from optbench.reporting.figures import _empty, _panels, save

# marker of a censored point: at most ("<") and more than (">") its value
CENSOR_MARKERS = {"": "o", "<": "v", ">": "^"}
# Sizes drawn on one budget axis are set apart by this factor per line, so
# that equal taus of two sizes stay visible (the ticks name the budgets).
DODGE = 1.04
# Speed-ups as plain numbers ("0.6", "2"), not 6 x 10^-1.
PLAIN = FuncFormatter(lambda value, _: f"{value:g}")


def _blocks(table: pd.DataFrame, keys) -> list[tuple]:
    return list(dict.fromkeys(table[keys].itertuples(index=False, name=None)))


def plot_scaling(table: pd.DataFrame, colors, paths) -> None:
    """One panel per (family, loss, budget): each optimizer's matched-loss speed-up
    over the baseline against the parameter count, with its 95 % band."""
    speedups = pd.to_numeric(table["speedup"], errors="coerce")
    shown = table[np.isfinite(speedups) & (speedups > 0)]
    if shown.empty:
        _empty(
            paths,
            "No size or budget axis with a baseline (problem entries with sizes: or "
            "budgets:, config key baseline): no matched-loss speed-up to draw.",
        )
        return
    blocks = _blocks(shown, ["family", "loss", "budget"])
    fig, axes = _panels(len(blocks))
    for ax, (family, loss, budget) in zip(axes, blocks, strict=False):
        rows = shown[
            (shown["family"] == family) & (shown["loss"] == loss) & (shown["budget"] == budget)
        ]
        for optimizer, line in rows.groupby("optimizer", sort=False):
            line = line.sort_values("parameters")
            x = line["parameters"].to_numpy(float)
            y = line["speedup"].to_numpy(float)
            color = colors.get(optimizer, "0.3")
            ax.plot(x, y, color=color, label=optimizer)
            for xi, yi, censored in zip(x, y, line["censored"].fillna(""), strict=True):
                ax.plot(xi, yi, CENSOR_MARKERS.get(censored, "o"), color=color)
            # Open ends (0, inf: censored resamples) are drawn to the budgets' bounds.
            low = line["speedup_low"].to_numpy(float)
            high = line["speedup_high"].to_numpy(float)
            floor = np.where(low == 0, y, low)
            ceiling = np.where(np.isinf(high), y, high)
            if np.isfinite(floor).all() and np.isfinite(ceiling).all():
                ax.fill_between(x, floor, ceiling, color=color, alpha=0.2, linewidth=0)
        ax.axhline(1.0, color="0.4", linestyle="--", linewidth=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_minor_locator(LogLocator(subs=(3.0, 4.0, 6.0, 7.0, 8.0, 9.0)))
        ax.yaxis.set_major_formatter(PLAIN)
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda *_: ""))
        ax.set_xlabel("parameters")
        ax.set_ylabel(f"speed-up over {rows['baseline'].iloc[0]}")
        ax.set_title(f"{family}, {loss}, {budget} steps", fontsize="medium")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(
        "Speed-up at matched loss against model size (band: 95 % bootstrap over seeds; "
        "\u25b2 more than, \u25bc at most: censored at the budgets run)",
        fontsize="medium",
    )
    fig.tight_layout()
    save(fig, paths)


def plot_rank_flips(table: pd.DataFrame, paths) -> None:
    """One panel per (family, loss): Kendall's tau between the ranking mid-run
    and at the end of each shorter budget, one line per size."""
    taus = pd.to_numeric(table["kendall_tau"], errors="coerce")
    shown = table[np.isfinite(taus)]
    if shown.empty:
        _empty(
            paths,
            "No budget axis (a problem entry with two or more budgets:): no rank flips to draw.",
        )
        return
    blocks = _blocks(shown, ["family", "loss"])
    fig, axes = _panels(len(blocks))
    for ax, (family, loss) in zip(axes, blocks, strict=False):
        rows = shown[(shown["family"] == family) & (shown["loss"] == loss)]
        lines = list(rows.groupby("size", sort=False))
        for index, (size, line) in enumerate(lines):
            line = line.sort_values("budget")
            parameters = line["parameters"].iloc[0]
            label = f"{size or family} ({parameters:,.0f} parameters)"
            x = line["budget"].to_numpy(float) * DODGE ** (index - (len(lines) - 1) / 2)
            (drawn,) = ax.plot(x, line["kendall_tau"], "o-", label=label)
            for budget, tau, flipped in zip(x, line["kendall_tau"], line["n_flipped"], strict=True):
                if flipped:
                    ax.annotate(
                        f"{flipped}",
                        (budget, tau),
                        xytext=(0, 5),
                        textcoords="offset points",
                        ha="center",
                        fontsize="x-small",
                        color=drawn.get_color(),
                    )
        ax.axhline(1.0, color="0.4", linestyle="--", linewidth=1)
        ax.set_xscale("log")
        budgets = sorted(set(rows["budget"]))
        ax.set_xticks(budgets, [str(b) for b in budgets])
        ax.minorticks_off()
        ax.set_ylim(-1.05, 1.05)
        ax.set_xlabel("budget (steps) where the longest runs are read")
        ax.set_ylabel("Kendall's tau, mid-run vs end of own run")
        ax.set_title(f"{family}, {loss}", fontsize="medium")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(
        "Rank flips: mid-run rankings against ends of training (numbers: pairs flipped)",
        fontsize="medium",
    )
    fig.tight_layout()
    save(fig, paths)
