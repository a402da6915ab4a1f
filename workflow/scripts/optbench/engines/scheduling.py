"""A run's learning rate, step by step: its schedule applied, and its value recorded.

Both engines drive one ``LearningRates`` per optimizer (the loop: one per run;
the batched engine: one per variant, whose optimizer holds all of the
variant's runs), so a schedule gives the same rates, and the same bits, in
either. A built-in family (optbench.schedules) sets each parameter group's
lr to base x factor(step) before the step; a torch.optim.lr_scheduler class
is stepped after each optimizer step, as its documentation asks.
"""

from __future__ import annotations

import numbers

import torch

from optbench import schedules
from optbench.engines import optimizers


class ScheduleRunError(RuntimeError):
    """A schedule that cannot drive this optimizer; the message names the key and the fix."""


def _scheduler_class(name: str) -> type:
    cls = getattr(torch.optim.lr_scheduler, name, None)
    if not (
        isinstance(cls, type)
        and issubclass(cls, torch.optim.lr_scheduler.LRScheduler)
        and name not in schedules.UNSUPPORTED_CLASSES
    ):
        raise ScheduleRunError(
            f"{name!r} is not a torch.optim.lr_scheduler class that a config can use"
        )
    return cls


def _as_tuples(value):
    return tuple(value) if isinstance(value, list) else value


class LearningRates:
    """The schedule of one optimizer over ``steps`` steps (None: the rate as configured)."""

    def __init__(self, optimizer, schedule: dict | None, steps: int, key: str = "schedule"):
        self.optimizer = optimizer
        self.steps = steps
        self.family = None
        self.scheduler = None
        if not schedule or schedule.get("family") == "constant":
            return
        if optimizers.has_train_eval(optimizer) and schedule.get("family") not in (
            schedules.WARMUP_ONLY
        ):
            raise ScheduleRunError(
                f"config key {key}: {type(optimizer).__name__} averages its own iterates "
                "(train()/eval() modes: schedule-free), so it takes a warm-up only. Fix: use "
                "family: warmup, or no schedule"
            )
        if "family" in schedule:
            self.family = schedule
            self.base = [group.get("lr") for group in optimizer.param_groups]
            if all(not isinstance(lr, numbers.Real) for lr in self.base):
                raise ScheduleRunError(
                    f"config key {key}: {type(optimizer).__name__} has no numeric lr to "
                    "schedule. Fix: remove the schedule"
                )
            return
        cls = _scheduler_class(schedule["class"])
        kwargs = {k: _as_tuples(v) for k, v in schedule.items() if k != "class"}
        try:
            self.scheduler = cls(optimizer, **kwargs)
        except Exception as error:
            raise ScheduleRunError(
                f"config key {key}: torch.optim.lr_scheduler.{schedule['class']}(**{kwargs}) "
                f"failed: {str(error).rstrip('.')}. Fix the schedule's keyword arguments"
            ) from error

    def before(self, step: int) -> None:
        """Set the rates of ``step`` (built-in families)."""
        if self.family is None:
            return
        factor = schedules.factor(self.family, step, self.steps)
        for group, base in zip(self.optimizer.param_groups, self.base, strict=True):
            if isinstance(base, numbers.Real):
                group["lr"] = base * factor

    def after(self) -> None:
        """After the optimizer's step (torch.optim.lr_scheduler classes)."""
        if self.scheduler is not None:
            self.scheduler.step()

    def current(self) -> float | None:
        """The first parameter group's learning rate for the coming step: its lr,
        times d for optimizers that estimate a step size d themselves (Prodigy,
        D-Adaptation); None for an optimizer without a numeric lr."""
        group = self.optimizer.param_groups[0]
        lr = group.get("lr")
        if isinstance(lr, torch.Tensor) and lr.numel() == 1:
            lr = lr.item()
        if not isinstance(lr, numbers.Real):
            return None
        estimate = group.get("d")
        if isinstance(estimate, torch.Tensor) and estimate.numel() == 1:
            estimate = estimate.item()
        return float(lr * estimate) if isinstance(estimate, numbers.Real) else float(lr)
