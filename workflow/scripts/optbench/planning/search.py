"""Search spaces: hyper-parameter trials drawn by a quasi-random sequence.

An optimizer entry's ``search`` names hyper-parameters, each a range with a
scale, and a number of trials:

    search:
      trials: 16
      seed: 0                      # the sequence's scrambling (default 0)
      space:
        lr: {scale: log, low: 1.0e-5, high: 1.0}
        weight_decay: {scale: log, low: 1.0e-4, high: 0.1}
        betas.1: {scale: one_minus_log, low: 0.9, high: 0.9999}

Scales: ``log`` (log-uniform), ``linear`` (uniform), ``one_minus_log``
(1 - value log-uniform, for values near 1 such as ``beta2``) and ``integer``
(uniform over the integers low..high). ``name.i`` is element i of a tuple
argument (the entry's ``kwargs`` must give the tuple).

Trial k (1-based) is point k of a scrambled Halton sequence
(``scipy.stats.qmc.Halton``, scrambled with ``seed``) in the unit cube, one
dimension per hyper-parameter in sorted name order, mapped through each
scale. A point depends only on k, the space and the seed, never on the
number of trials: adding trials adds variants and changes none. Values are
rounded to SIGNIFICANT digits, so a variant's name (its values, as a sweep's
names: ``lr0.00123-weight_decay0.0456``) is short, readable and the same in
every invocation.

Torch-free; scipy is imported only for a config that has a search.
"""

from __future__ import annotations

import math
import re

from optbench import grid

SCALES = ("log", "linear", "one_minus_log", "integer")
SIGNIFICANT = 3
_ELEMENT = re.compile(r"(?P<argument>[A-Za-z_]\w*)(\.(?P<index>\d+))?")
_SCHEDULE_PARAMETER = re.compile(r"schedule\.[A-Za-z_]\w*")


class SearchError(ValueError):
    """A search that cannot be drawn; the message names the key and the fix."""


def _round(value: float) -> float:
    return float(f"{value:.{SIGNIFICANT}g}")


def _round_near_one(value: float) -> float:
    """Rounded in its distance from 1, so that 0.9999 stays 0.9999, not 1.0."""
    return 1 - float(f"{1 - value:.{SIGNIFICANT}g}")


def _map(unit: float, scale: str, low, high):
    if scale == "log":
        return _round(math.exp(math.log(low) + unit * (math.log(high) - math.log(low))))
    if scale == "linear":
        return _round(low + unit * (high - low))
    if scale == "one_minus_log":
        lo, hi = math.log(1 - high), math.log(1 - low)
        return _round_near_one(1 - math.exp(lo + (1 - unit) * (hi - lo)))
    # integer: each of low..high gets an equal share of [0, 1)
    return int(min(high, low + math.floor(unit * (high - low + 1))))


def range_problems(key: str, name: str, spec) -> list[str]:
    """What is wrong with one hyper-parameter's range (config key ``key``)."""
    if not isinstance(spec, dict) or set(spec) != {"scale", "low", "high"}:
        return [
            f"config key {key}.{name}: a range is {{scale: log|linear|one_minus_log|integer, "
            "low: number, high: number}. Fix: give exactly these three keys."
        ]
    if not (_ELEMENT.fullmatch(name) or _SCHEDULE_PARAMETER.fullmatch(name)):
        return [
            f"config key {key}.{name}: not an argument name, name.index or schedule.name. "
            "Fix: e.g. lr, betas.1 or schedule.warmup."
        ]
    scale, low, high = spec["scale"], spec["low"], spec["high"]
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high))
    problem = fix = None
    if scale not in SCALES:
        problem, fix = f"scale {scale!r} is not one of {', '.join(SCALES)}", "choose one of them"
    elif not numbers:
        problem, fix = "low and high must be numbers", "give two numbers"
    elif not low < high:
        problem, fix = f"low ({low}) must be below high ({high})", "swap them"
    elif scale == "log" and low <= 0:
        problem = f"a log range must stay above 0 (low is {low})"
        fix = "give low > 0, or use scale linear to include 0"
    elif scale == "one_minus_log" and not 0 < low < high < 1:
        problem = f"a one_minus_log range lies inside (0, 1) (got {low}..{high})"
        fix = "keep 0 < low < high < 1, e.g. 0.9..0.9999"
    elif scale == "integer" and not (isinstance(low, int) and isinstance(high, int)):
        problem, fix = f"an integer range has integer ends (got {low}..{high})", "give integers"
    return [f"config key {key}.{name}: {problem}. Fix: {fix}."] if problem else []


def argument_of(name: str) -> tuple[str, int | None]:
    """(keyword argument, tuple index or None) of a searched name such as betas.1."""
    match = _ELEMENT.fullmatch(name)
    index = match["index"]
    return match["argument"], None if index is None else int(index)


def trial_name(values: dict) -> str:
    """As a sweep's names: each name then its value, in name order; an element
    name (betas.1) becomes betas_1_ so that its index and value stay apart."""
    parts = []
    for name in sorted(values):
        token = name.replace(".", "_")
        parts.append(f"{token}{'_' if token[-1].isdigit() else ''}{grid.value_token(values[name])}")
    return "-".join(parts)


def points(dimensions: int, trials: int, seed: int) -> list[list[float]]:
    """The first ``trials`` points of the scrambled Halton sequence (prefix-stable)."""
    from scipy.stats import qmc

    return qmc.Halton(d=dimensions, scramble=True, seed=seed).random(trials).tolist()


def expand_search(kwargs: dict, search: dict, schedule: dict | None = None) -> list[grid.Variant]:
    """The base variant, then one variant per trial, in trial order."""
    space = search["space"]
    names = sorted(space)
    variants = [grid.Variant(grid.BASE, dict(kwargs), {}, schedule)]
    for point in points(len(names), search["trials"], search.get("seed", 0)):
        values = {
            name: _map(unit, space[name]["scale"], space[name]["low"], space[name]["high"])
            for name, unit in zip(names, point, strict=True)
        }
        trial_kwargs, trial_schedule = grid.with_values(kwargs, schedule, values)
        variants.append(grid.Variant(trial_name(values), trial_kwargs, values, trial_schedule))
    return variants
