"""Logistic regression on generated data, linearly separable (no finite
minimiser) or not (a unique one). Stresses the two regimes of classification
losses. With ``label_noise`` 0 the labels come from a linear rule, the data
are separable, the loss has no minimum (its infimum, 0, is approached as the
weights grow without bound) and optimizers differ in how fast they grow the
weights; with label noise the loss is strictly convex with a unique finite
minimiser, and optimizers differ in how fast and how precisely they reach it.

Model: ``nn.Linear(dim, 1)`` (one logit per sample, with bias). Data:
``samples`` Gaussian inputs; the teacher's logit ``z = x . w_t + b_t`` with
``w_t`` a random unit vector and ``b_t ~ N(0, 0.25)``; label ``1`` where
``z > 0``, else ``0``; then each label flips with probability ``label_noise``.
Targets are float ``[samples, 1]`` in {0, 1}, so the loss is
``BCEWithLogitsLoss``.

Draw order, on a generator seeded with the seed: 1. the inputs, standard
normal ``samples x dim``; 2. ``w_t`` (standard normal, then normalised);
3. ``b_t`` (``0.5 *`` standard normal); 4. ``samples`` uniforms, label ``i``
flipping where its uniform is below ``label_noise``; 5. the model's weight and
then bias, ``U(-1/sqrt(dim), 1/sqrt(dim))`` (nn.Linear's default distribution).

Optimum (``optima["BCEWithLogitsLoss"]``, default mean reduction): solved at
build time by Newton's method in float64 on the float32 data. Either it
converges (gradient norm below 1e-10, or below 1e-7 where float64 allows no
further descent) to the unique minimum, the value given;
or the mean loss falls below ``log(2) / samples``, which proves the data
separable (every sample's loss is then below log 2, i.e. every sample is
classified correctly by a finite weight vector) and the infimum is 0, the
value given, with ``info["separable"]`` true. Label noise makes the data
non-separable in practice but not by construction (a few flips may all be
explainable); ``info["separable"]`` says which case this draw is.
"""

import math

import torch

from optbench.problems.draws import generator, new_linear
from optbench.problems.instance import Instance

KIND = "binary"
PARAMETERS = {"dim": 10, "samples": 200, "label_noise": 0.1}
LIMITS = {"dim": [1, None], "samples": [1, None], "label_noise": [0.0, 0.5]}
STOCHASTIC = False
OPTIMUM = None

# Facts for planning and reporting (optbench.problems, docs/problems.md#facts).
# Microseconds per run-step at the default parameters, one thread, 2-core
# development machine, 2026-12-03: Adam in the loop and batched at 100 runs,
# L-BFGS (strong Wolfe) in the loop and batched at 100 runs (tools/benchmark.py
# --only runstep, --only lbfgs); the dry run's time estimate (planning/cost.py).
RUN_STEP_US = {"loop": 302, "batched": 7.2, "lbfgs_loop": 576, "lbfgs_batched": 1243}


def build(
    seed: int, steps: int, dim: int = 10, samples: int = 200, label_noise: float = 0.1
) -> Instance:
    g = generator(seed)
    x = torch.randn(samples, dim, generator=g)
    teacher = torch.randn(dim, 1, generator=g)
    teacher = teacher / teacher.norm()
    bias = 0.5 * torch.randn(1, generator=g)
    labels = (x @ teacher + bias > 0).float()
    flips = (torch.rand(samples, 1, generator=g) < label_noise).float()
    y = (labels - flips).abs()
    model = new_linear(dim, 1, bias=True, generator=g)
    optimum, separable = newton_optimum(x, y)
    optima = {} if optimum is None else {"BCEWithLogitsLoss": optimum}
    return Instance(
        kind=KIND,
        model=model,
        inputs=x,
        targets=y,
        optima=optima,
        info={"separable": separable, "flipped_labels": int(flips.sum())},
    )


def newton_optimum(x: torch.Tensor, y: torch.Tensor, iterations: int = 100):
    """(minimum of the mean logistic loss or its infimum 0, whether the data are separable),
    or (None, None) when Newton's method settles neither case in ``iterations``."""
    design = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], dim=1)
    target = y.double().squeeze(1)
    weights = torch.zeros(design.shape[1], dtype=torch.float64)

    def loss_of(w):
        return torch.nn.functional.binary_cross_entropy_with_logits(design @ w, target)

    loss = loss_of(weights)
    separated = math.log(2) / len(x)

    def gradient_of(w):
        return design.T @ (torch.sigmoid(design @ w) - target) / len(x)

    for _ in range(iterations):
        if loss < separated:
            return 0.0, True
        gradient = gradient_of(weights)
        if gradient.norm() < 1e-10:
            return float(loss), False
        p = torch.sigmoid(design @ weights)
        hessian = design.T @ (design * (p * (1 - p)).unsqueeze(1)) / len(x)
        # A tiny ridge keeps the solve defined while the weights of a separable
        # set grow; it only changes the direction searched, not the loss judged.
        hessian += 1e-12 * torch.eye(len(weights), dtype=torch.float64)
        direction = torch.linalg.solve(hessian, gradient)
        step = 1.0
        while step > 1e-10:  # backtracking: the loss must fall (Armijo)
            candidate = weights - step * direction
            candidate_loss = loss_of(candidate)
            if candidate_loss <= loss - 1e-4 * step * float(gradient @ direction):
                break
            step /= 2
        else:
            break  # no descent left in float64: judged below
        weights, loss = candidate, candidate_loss
    if loss < separated:
        return 0.0, True
    if gradient_of(weights).norm() < 1e-7:
        return float(loss), False
    return None, None
