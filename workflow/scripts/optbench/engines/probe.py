"""The run-independence probe: may a class from a package or a file be batched?

The batched engine stacks the runs of a cell along a new leading dimension and
lets one optimizer step them all. That is only right for an optimizer that
treats each element by itself: one whose step on a stacked tensor equals, bit
for bit, its steps on each run's tensor alone. Prodigy and D-Adaptation
estimate one step size from every parameter they hold, LAMB and LARS scale by
a whole tensor's norm, Shampoo and SOAP precondition whole matrices: stacked,
one run would steer another.

The probe runs the optimizer on two runs, a matrix and a vector each, each run
pulled towards its own random target (a quadratic, so its estimates of step
size or curvature really move), for a few steps: stacked, and each run alone.
It passes when every run's stacked trajectory equals its solo one bit for bit,
and stays so when another run's gradients are a hundredfold. A pass is
evidence, not proof (a coupling that these shapes and steps do not exercise is
missed); a failure is proof. One probe per class and keyword arguments, per
job; its verdict is in each run's sidecar (``engine_details["probe"]``).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import json

import torch

from optbench.engines import optimizers, training

RUNS = 2
STEPS = 8
SHAPES = ((3, 4), (4,))


def _start() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Stacked initial weights and targets: each run pulls its weights to its target."""
    generator = torch.Generator().manual_seed(20261203)
    weights = [torch.randn(RUNS, *shape, generator=generator) for shape in SHAPES]
    targets = [torch.randn(RUNS, *shape, generator=generator) for shape in SHAPES]
    return weights, targets


def _gradient(weight, target, scale):
    """The gradient of scale/2 |w - target|^2: it follows the weights, so an
    optimizer's estimates (step sizes, curvature) really change over the steps."""
    return scale * (weight - target)


def _stacked(cls, kwargs, scales) -> list[torch.Tensor]:
    weights, targets = _start()
    parameters = [w.clone().requires_grad_() for w in weights]
    optimizer = cls(parameters, **kwargs)
    factor = torch.tensor(scales).reshape(RUNS, 1)
    for _ in range(STEPS):
        for parameter, target in zip(parameters, targets, strict=True):
            shaped = factor.reshape(RUNS, *([1] * (parameter.ndim - 1)))
            parameter.grad = _gradient(parameter.detach(), target, shaped)
        optimizer.step()
    return [p.detach() for p in parameters]


def _alone(cls, kwargs, run: int, scale: float) -> list[torch.Tensor]:
    weights, targets = _start()
    parameters = [w[run].clone().requires_grad_() for w in weights]
    optimizer = cls(parameters, **kwargs)
    for _ in range(STEPS):
        for parameter, target in zip(parameters, targets, strict=True):
            parameter.grad = _gradient(parameter.detach(), target[run], scale)
        optimizer.step()
    return [p.detach() for p in parameters]


@functools.cache
def _probe(cls, kwargs_json: str) -> tuple[bool, str]:
    kwargs = json.loads(kwargs_json)
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    # A user's file is loaded as optbench_user_optimizers.<file>: named <file>.Class.
    package = cls.__module__.removeprefix(f"{optimizers.USER_PACKAGE}.").split(".")[0]
    name = f"{package}.{cls.__qualname__}"
    # A user's file, or a module that is no installed distribution, has no version.
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        name += f" {importlib.metadata.version(package)}"
    try:
        with torch.no_grad():
            # As they are, then with the other run's gradients a hundredfold.
            for scales in ((1.0, 1.0), (1.0, 100.0)):
                together = _stacked(cls, kwargs, scales)
                for run in range(RUNS):
                    solo = _alone(cls, kwargs, run, scales[run])
                    for stacked, single in zip(together, solo, strict=True):
                        if not torch.equal(stacked[run], single):
                            return False, (
                                f"{name} failed the run-independence probe: stacked, run "
                                f"{run}'s weights differ from its weights trained alone"
                                + (" when another run's gradients grow" if scales[1] > 1 else "")
                            )
    except Exception as error:  # an optimizer that refuses stacked shapes
        return False, (
            f"{name} failed the run-independence probe: it cannot step stacked tensors "
            f"({type(error).__name__}: {error})"
        )
    return True, (
        f"{name} passed the run-independence probe ({RUNS} runs, a matrix and a vector, "
        f"{STEPS} steps: each run's stacked weights equal its solo weights bit for bit)"
    )


def independent(cls: type, kwargs_list, base: type | None = None) -> tuple[bool | None, str]:
    """(whether ``cls`` (around ``base``) steps stacked runs as it steps each alone,
    for every one of the distinct ``kwargs_list``, why). None, with the reason,
    where its protocol (optimizers.describe) is one only the per-run loop
    implements: it is not probed."""
    needs = optimizers.describe(cls, base).loop_reason()
    if needs is not None:
        return None, f"it needs {needs}"
    for kwargs in {json.dumps(k, sort_keys=True) for k in kwargs_list}:
        ok, reason = _probe(cls, kwargs)
        if not ok:
            return ok, reason
    return ok, reason


def class_verdict(entry: dict, optimizers_dir, kwargs_list) -> tuple[bool, str]:
    """(whether the batched engine may train optimizer ``entry``'s class, from a
    package or a file, with each of ``kwargs_list``, why): the probe's verdict
    where it passed, else one sentence saying that it runs in the per-run loop.
    The ``probe`` that batch_policy.choose_engine asks, in the config check and
    in the training job alike."""
    cls = training.optimizer_class(entry, optimizers_dir)
    base = training.base_class(entry, optimizers_dir)
    # None: a protocol the batched engine does not implement (not probed).
    passed, verdict = independent(cls, kwargs_list, base)
    if passed:
        return True, verdict
    return False, f"optimizer {entry['class']} runs in the per-run loop: {verdict}"
