"""Optimizer classes: the one place where a config entry's class becomes a class.

Training (the per-run loop), the batched engine and the training job all
resolve an optimizer here, and ask here whether its ``step`` needs a closure,
so that a new source of optimizers plugs in at one seam.
"""

from __future__ import annotations

import inspect

import torch


class UnknownOptimizer(ValueError):
    """The name is not an optimizer class this pipeline can load."""


def resolve(name: str | type) -> type:
    """The optimizer class a config's ``class:`` names (a torch.optim class name);
    a class is returned as it is."""
    if isinstance(name, type):
        return name
    found = getattr(torch.optim, name, None)
    if not (
        isinstance(found, type)
        and issubclass(found, torch.optim.Optimizer)
        and found is not torch.optim.Optimizer
    ):
        raise UnknownOptimizer(f"{name!r} is not an optimizer class of torch.optim")
    return found


def needs_closure(optimizer) -> bool:
    """Whether ``step`` must be given a closure (its ``closure`` has no default, as
    L-BFGS); ``optimizer`` is a class, a class name or an instance."""
    cls = optimizer if isinstance(optimizer, type | str) else type(optimizer)
    parameter = inspect.signature(resolve(cls).step).parameters.get("closure")
    return parameter is not None and parameter.default is inspect.Parameter.empty
