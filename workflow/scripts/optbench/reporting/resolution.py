"""The resolution floor: the loss level below which float32 rounding decides.

Training runs in float32, whose relative spacing is epsilon = 2**-23 (about
1.2e-7): a model's outputs, and so its residuals, are resolved only to about
epsilon times their scale. A loss below that level says nothing about the
optimizer, only about rounding (two runs at 1e-15 and 1e-13 on the reference
problem are both exact fits), so every comparison treats it as a tie at the
floor.

The floor of a run is epsilon**p times its initial loss (the loss at step 0,
which all optimizers of a seed share, so paired runs share their floor):

- p = 2 for losses quadratic in the residual near their minimum (MSELoss,
  HuberLoss, SmoothL1Loss, GaussianNLLLoss' squared term) and for objectives
  (minimised directly; smooth at their optimum): residuals resolved to
  epsilon x scale give a loss of epsilon**2 x scale**2, and the initial loss
  is of the order of scale**2;
- p = 1 for the others (L1Loss, the hinge losses and the likelihood losses:
  CrossEntropyLoss, NLLLoss, BCELoss, BCEWithLogitsLoss, ...), linear in the
  residual or, for a likelihood, resolved to epsilon near zero: log(1 + u) is
  0 in float32 for u below epsilon / 2.

Two keyword arguments change a loss's order, so they change its p:
SmoothL1Loss with ``beta`` 0 is L1Loss (p = 1), and MultiMarginLoss with
``p`` 2 is the squared hinge (p = 2). Every torch.nn loss class the config
accepts (``planning.torch_catalog``) gets p from these rules; a class not
named here gets 1, the larger, safer floor.

It is an order of magnitude, not a bound: a loss within a few floors of it
may still be rounding. numpy only (it runs in the per-cell summary job).
"""

from __future__ import annotations

import numpy as np

FLOAT32_EPSILON = float(np.finfo(np.float32).eps)
QUADRATIC_LOSSES = frozenset({"MSELoss", "HuberLoss", "SmoothL1Loss", "GaussianNLLLoss"})


def power(loss_class: str | None, kwargs: dict | None = None) -> int:
    """p of the rule above for a loss of class ``loss_class`` built with ``kwargs``;
    ``loss_class`` None means an objective."""
    kwargs = kwargs or {}
    if loss_class is None:
        return 2
    if loss_class == "SmoothL1Loss" and kwargs.get("beta", 1.0) == 0:
        return 1  # torch: with beta 0 it is L1Loss
    if loss_class == "MultiMarginLoss" and kwargs.get("p", 1) == 2:
        return 2  # the squared hinge: quadratic in the margin's shortfall
    return 2 if loss_class in QUADRATIC_LOSSES else 1


def floors(
    initial_losses,
    loss_class: str | None,
    epsilon: float = FLOAT32_EPSILON,
    kwargs: dict | None = None,
):
    """Each run's floor, from its initial loss (NaN stays NaN)."""
    initial = np.asarray(initial_losses, dtype=np.float64)
    return epsilon ** power(loss_class, kwargs) * np.abs(initial)


def describe(loss_class: str | None, kwargs: dict | None = None) -> str:
    """The rule in words, for captions and notes."""
    p = power(loss_class, kwargs)
    return f"float32 epsilon{'^2' if p == 2 else ''} x the initial loss"
