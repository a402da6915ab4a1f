"""Which steps of a long curve the interactive explorer keeps, and how precisely.

The rule (docs/report.md, "The explorer"): a curve of at most ``MAX_POINTS``
steps keeps every step. A longer one keeps the union of ``MAX_POINTS // 2``
evenly spaced steps (which a linear step axis needs) and ``MAX_POINTS // 2``
geometrically spaced steps from step 1 (which a log step axis needs), the
first and the last step always among them: at most ``MAX_POINTS`` points
whatever the run's length. A kept point is the loss recorded at that step,
never an average, so a curve is drawn through values that occurred; a spike
between two kept steps does not show (the run's TSV keeps every step).
Every run of a cell keeps the same steps, so its seeds line up.

Values keep ``SIGNIFICANT_DIGITS`` significant digits: a figure cannot show
more, and the page stays small (the tables keep the exact values).
Standard library only: the cell summaries (optbench.reporting.cells) use it.
"""

from __future__ import annotations

import math

MAX_POINTS = 200
SIGNIFICANT_DIGITS = 4
# Seed lines a cell keeps for the explorer: its lowest seeds, at most this many
# (the band and every table use all seeds). A 125,000-seed cell's lines were
# 5 million points, more than a page or the combine step can hold.
MAX_SEED_LINES = 100


def kept_steps(n_steps: int, max_points: int = MAX_POINTS) -> list[int]:
    """The steps (0 .. n_steps - 1) a curve of ``n_steps`` points keeps, ascending."""
    if n_steps < 0 or max_points < 4:
        raise ValueError(
            f"kept_steps needs n_steps >= 0 and max_points >= 4 (got {n_steps}, {max_points})."
        )
    if n_steps <= max_points:
        return list(range(n_steps))
    last = n_steps - 1
    half = max_points // 2
    even = {round(i * last / (half - 1)) for i in range(half)}
    # 1 .. last on a log scale: step 0 has no place on a log axis, and is kept by ``even``.
    geometric = {round(math.exp(i * math.log(last) / (half - 1))) for i in range(half)}
    return sorted(even | geometric)


def rounded(value: float) -> float | str:
    """``value`` to ``SIGNIFICANT_DIGITS`` significant digits; inf and nan as the text
    'inf', '-inf' or 'nan' (strict JSON has no such numbers)."""
    value = float(value)
    if not math.isfinite(value):
        return repr(value)
    return float(f"{value:.{SIGNIFICANT_DIGITS - 1}e}")
