"""The experiment grid: hyper-parameter variants of a sweep, seed roles and seed ranges.

Torch-free and cheap: it runs inside every ``snakemake`` invocation.

A variant's name is derived from its swept values alone (``lr0.01``,
``lr0.1-momentum0.9``), never from its position in a list, so adding a value
to a sweep adds one variant and renames none: Snakemake then schedules only
the new variant's runs (with ``job_scope: cell``; a coarser job holding the
variant runs again and trains only its new runs, optbench.reuse).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

# A cell: one point of the grid without the seed; each of its seeds is one run.
# Run paths, jobs, summaries and tables name a cell by these fields, in this order.
CELL_FIELDS = ("problem", "loss", "optimizer", "variant")
# An entry: an optimizer on one (problem, loss), with whichever of its variants
# tuning selects; the unit the comparison ranks.
ENTRY_FIELDS = CELL_FIELDS[:3]

# The variant that runs an optimizer's kwargs as configured: the one-shot
# (untuned) setting that a comparison reports beside the tuned one.
BASE = "base"

# What a variant name may hold: it is a path component and a wildcard value.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


@dataclass(frozen=True)
class Variant:
    """One hyper-parameter setting of an optimizer entry."""

    name: str
    kwargs: dict  # the complete keyword arguments passed to the optimizer class
    swept: dict  # the swept keys and their values (empty for the base variant)
    schedule: dict | None = None  # its learning-rate schedule (optbench.schedules)


# A swept or searched name with this prefix is a parameter of the entry's
# schedule (schedule.warmup), not a keyword argument of its optimizer.
SCHEDULE_PREFIX = "schedule."


def with_values(kwargs: dict, schedule: dict | None, values: dict) -> tuple[dict, dict | None]:
    """(kwargs, schedule) with the swept or drawn ``values`` put in place: a name
    is a keyword argument, ``name.i`` element i of a tuple argument, and
    ``schedule.key`` a parameter of the schedule."""
    kwargs, schedule = dict(kwargs), None if schedule is None else dict(schedule)
    for name, value in values.items():
        if name.startswith(SCHEDULE_PREFIX):
            schedule[name.removeprefix(SCHEDULE_PREFIX)] = value
            continue
        argument, _, index = name.partition(".")
        if index:
            items = list(kwargs[argument])
            items[int(index)] = value
            kwargs[argument] = items
        else:
            kwargs[argument] = value
    return kwargs, schedule


def value_token(value) -> str:
    """A value as file-name-safe text that no other value of the same type shares.

    Floats use repr (the shortest text that reads back as the same float), so
    0.1 is ``0.1`` and 1e-05 is ``1e-05``; lists join their items with ``_``.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value).replace("+", "")
    if isinstance(value, list | tuple):
        return "_".join(value_token(item) for item in value)
    if isinstance(value, str):
        return value
    raise TypeError(f"cannot name a variant after a {type(value).__name__} value")


def variant_name(swept: dict) -> str:
    """``key`` + value for each swept key in sorted key order, joined by ``-``
    (a schedule parameter's key as ``schedule_warmup``)."""
    if not swept:
        return BASE
    return "-".join(f"{key.replace('.', '_')}{value_token(swept[key])}" for key in sorted(swept))


def expand_sweep(kwargs: dict, sweep: dict, schedule: dict | None = None) -> list[Variant]:
    """The base variant, then one variant per combination of the swept values.

    Combinations follow the sweep's keys in sorted order and each key's values
    in the order given (the Cartesian product).
    """
    variants = [Variant(BASE, dict(kwargs), {}, schedule)]
    if not sweep:
        return variants  # the product of no lists would be one empty combination
    keys = sorted(sweep)
    for values in itertools.product(*(sweep[key] for key in keys)):
        swept = dict(zip(keys, values, strict=True))
        trial_kwargs, trial_schedule = with_values(kwargs, schedule, swept)
        variants.append(Variant(variant_name(swept), trial_kwargs, swept, trial_schedule))
    return variants


@dataclass(frozen=True)
class SeedRange:
    """Seeds that one packed training job runs; label is its value range."""

    label: str
    seeds: tuple[int, ...]


def seed_ranges(seeds, per_job: int) -> list[SeedRange]:
    """The seeds grouped by value into ranges of ``per_job`` values (0..K-1, K..2K-1, ...).

    Ranges follow values, not positions, so adding a seed changes only the
    range it falls in.
    """
    ranges: dict[int, list[int]] = {}
    for seed in sorted(seeds):
        ranges.setdefault(seed // per_job, []).append(seed)
    return [
        SeedRange(f"{index * per_job}-{(index + 1) * per_job - 1}", tuple(members))
        for index, members in sorted(ranges.items())
    ]
