"""Learning-rate schedules: the built-in families' closed forms, and their checks.

An optimizer entry's ``schedule`` is one mapping, either a built-in family

    schedule: {family: warmup_cosine, warmup: 0.1, final: 0.0}

or a ``torch.optim.lr_scheduler`` class with its keyword arguments

    schedule: {class: StepLR, step_size: 10, gamma: 0.5}

Lengths of the families are fractions of the run's step budget, so one
schedule fits problems of any length. Step t (0-based) updates with the
learning rate base x factor(t), where base is each parameter group's
configured lr and, with W = round(warmup x steps) warm-up steps,

- ``constant``: 1 (the same as no schedule);
- ``warmup``: (t + 1) / W during warm-up, then 1 (the one family a
  schedule-free optimizer takes: it averages its iterates instead of decaying);
- ``warmup_cosine``: warm-up, then final + (1 - final) (1 + cos(pi p)) / 2;
- ``warmup_linear``: warm-up, then final + (1 - final) (1 - p);
- ``warmup_stable_decay``: warm-up, 1 until the last D = round(decay x steps)
  steps, then linear from 1 towards final over those D steps;
- ``step``: gamma ** floor(t / E), E = max(1, round(every x steps)).

p = (t - start) / length is the share of the decay phase already done at step
t, so the first decay step runs at the base rate and the last one just above
``final`` (a fraction of base). Keys a family does not take are refused; the
ones it takes may be swept or searched as ``schedule.<key>``.

Torch-free: the planner checks schedules, and both engines compute factors.
"""

from __future__ import annotations

import math

# family -> its parameters and their defaults
FAMILIES: dict[str, dict[str, float]] = {
    "constant": {},
    "warmup": {"warmup": 0.05},
    "warmup_cosine": {"warmup": 0.05, "final": 0.0},
    "warmup_linear": {"warmup": 0.05, "final": 0.0},
    "warmup_stable_decay": {"warmup": 0.05, "decay": 0.2, "final": 0.0},
    "step": {"every": 0.25, "gamma": 0.1},
}
# Families that only warm up: what an optimizer with its own averaging
# (schedule-free: train()/eval() modes) takes.
WARMUP_ONLY = ("constant", "warmup")
# torch.optim.lr_scheduler classes a config cannot use, and why.
UNSUPPORTED_CLASSES = {
    "LambdaLR": "it takes a Python function, and a config holds no code",
    "MultiplicativeLR": "it takes a Python function, and a config holds no code",
    "SequentialLR": "it takes scheduler objects; use a built-in family (warmup_cosine, ...)",
    "ChainedScheduler": "it takes scheduler objects; use a built-in family (warmup_cosine, ...)",
    "ReduceLROnPlateau": (
        "it steps on a monitored metric, which the batched engine would pool over runs"
    ),
    "LRScheduler": "it is the base class",
}
# Supplied by the pipeline, never by the config.
SUPPLIED = ("optimizer",)
PREFIX = "schedule."


class ScheduleError(ValueError):
    """A schedule that cannot be used; the message names the key and the fix."""


def parameters(schedule: dict) -> dict:
    """A family's parameters with defaults filled in (a class's: as given)."""
    rest = {k: v for k, v in schedule.items() if k not in ("family", "class")}
    if "family" in schedule:
        return {**FAMILIES[schedule["family"]], **rest}
    return rest


def _fraction_problem(name: str, value, low_open: bool) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{name} is a fraction of the step budget, got {value!r}"
    if not (0 < value <= 1 if low_open else 0 <= value < 1):
        interval = "(0, 1]" if low_open else "[0, 1)"
        return f"{name} is a fraction of the step budget in {interval}, got {value!r}"
    return None


def family_problems(key: str, schedule: dict) -> list[str]:
    """What is wrong with a built-in family's schedule (config key ``key``)."""
    family = schedule.get("family")
    if family not in FAMILIES:
        return [
            f"config key {key}.family: {family!r} is not a schedule family. Fix: use one of "
            f"{', '.join(FAMILIES)}, or class: a torch.optim.lr_scheduler class."
        ]
    taken = FAMILIES[family]
    unknown = [k for k in schedule if k not in ("family", *taken)]
    if unknown:
        fix = f"use only {', '.join(taken)}" if taken else "give no other key"
        return [
            f"config key {key}: family {family} does not take {', '.join(map(repr, unknown))}. "
            f"Fix: {fix}."
        ]
    values = parameters(schedule)
    found = []
    for name, value in values.items():
        if name in ("warmup", "every", "decay"):
            problem = _fraction_problem(name, value, low_open=name != "warmup")
        elif isinstance(value, bool) or not isinstance(value, int | float):
            problem = f"{name} is a number, got {value!r}"
        elif name == "final" and not 0 <= value <= 1:
            problem = f"final is a fraction of the base learning rate in [0, 1], got {value!r}"
        elif name == "gamma" and not value > 0:
            problem = f"gamma must be above 0, got {value!r}"
        else:
            problem = None
        if problem:
            found.append(f"config key {key}.{name}: {problem}. Fix: give a value in range.")
    if not found and family == "warmup_stable_decay" and values["warmup"] + values["decay"] > 1:
        found.append(
            f"config key {key}: warmup ({values['warmup']}) and decay ({values['decay']}) add "
            "up to more than the step budget. Fix: make warmup + decay at most 1."
        )
    return found


def shape_problems(key: str, schedule) -> list[str]:
    """Exactly one of family or class."""
    if not isinstance(schedule, dict) or ("family" in schedule) == ("class" in schedule):
        return [
            f"config key {key}: a schedule is {{family: NAME, ...}} (built-in) or {{class: "
            "NAME, ...}} (torch.optim.lr_scheduler) with its parameters. Fix: give exactly "
            "one of family or class."
        ]
    if "class" in schedule and schedule["class"] in UNSUPPORTED_CLASSES:
        name = schedule["class"]
        return [
            f"config key {key}.class: {name} cannot be configured: "
            f"{UNSUPPORTED_CLASSES[name]}. Fix: use a built-in family or another class."
        ]
    return []


def warmup_steps(fraction: float, steps: int) -> int:
    return round(fraction * steps)


def factor(schedule: dict | None, step: int, steps: int) -> float:
    """The multiplier of the base learning rate at 0-based ``step`` of ``steps``,
    for a built-in family (the closed forms of the module's docstring)."""
    if not schedule:
        return 1.0
    family = schedule["family"]
    values = parameters(schedule)
    if family == "constant":
        return 1.0
    if family == "step":
        every = max(1, round(values["every"] * steps))
        return float(values["gamma"]) ** (step // every)
    warm = warmup_steps(values["warmup"], steps)
    if step < warm:
        return (step + 1) / warm
    if family == "warmup":
        return 1.0
    final = values["final"]
    if family == "warmup_stable_decay":
        length = round(values["decay"] * steps)
        start = steps - length
        if step < start or length == 0:
            return 1.0
    else:
        start, length = warm, steps - warm
    progress = (step - start) / length
    if family == "warmup_cosine":
        return final + (1 - final) * (1 + math.cos(math.pi * progress)) / 2
    return final + (1 - final) * (1 - progress)
