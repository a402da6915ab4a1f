"""Ill-conditioned least squares: a linear model fitted to a fixed data set whose
curvature spans a chosen condition number. Stresses ill-conditioning on a
deterministic full batch. With the mean squared error the loss is a quadratic
whose Hessian has eigenvalues from 2 down to 2 / condition_number (exactly, up
to float32 rounding of the data), so a learning rate that is stable for the
steepest direction crawls along the flattest one; with ``rotate`` true the
eigenvectors are random directions, so per-coordinate step sizes (Adam,
RMSprop, Adagrad) cannot simply undo the scaling, while with ``rotate`` false
they are the coordinate axes and can.

Model: ``nn.Linear(dim, 1, bias=False)``. Data: ``samples`` rows
``X = sqrt(samples) * U diag(s) V^T`` with ``U`` (``samples x dim``) and ``V``
(``dim x dim``) orthonormal and ``s`` log-spaced from 1 to
``1 / sqrt(condition_number)``, so ``X^T X / samples = V diag(s^2) V^T``;
targets ``y = X w* + noise * e`` as a ``[samples, 1]`` column. Needs
``samples >= dim`` (``CONSTRAINTS``).

Draw order, on a generator seeded with the seed (float64 draws, data rounded
to float32 at the end): 1. ``U`` (Q factor of a Gaussian ``samples x dim``
matrix); 2. ``V`` (Q factor of a Gaussian ``dim x dim`` matrix; drawn even when
``rotate`` is false, so that the later draws do not depend on it); 3. ``w*``,
standard normal; 4. ``e``, standard normal, ``samples`` values; 5. the model's
weight, ``U(-1/sqrt(dim), 1/sqrt(dim))`` (nn.Linear's default distribution).

Optimum: ``optima["MSELoss"]`` is the exact least-squares value of the
float32 data, ``mean((X w_ls - y)^2)``, solved in float64. With noise it is
about ``noise^2 (samples - dim) / samples``; without noise the targets are
consistent up to float32 rounding and it is about 1e-15, not exactly 0, which
is why OPTIMUM is None. The other regression losses have no closed form here.
"""

import torch

from optbench.problems.draws import generator, new_linear, orthonormal, spectrum
from optbench.problems.instance import Instance

KIND = "regression"
PARAMETERS = {
    "dim": 20,
    "samples": 40,
    "condition_number": 100.0,
    "noise": 0.0,
    "rotate": True,
}
LIMITS = {
    "dim": [1, None],
    "samples": [1, None],
    "condition_number": [1.0, 1e8],
    "noise": [0.0, None],
}
# Fewer samples than dimensions would leave flat directions (condition number infinite).
CONSTRAINTS = ["samples >= dim"]
STOCHASTIC = False
OPTIMUM = None

# Facts for planning and reporting (optbench.problems, docs/problems.md#facts).
# Microseconds per run-step at the default parameters, one thread, 2-core
# development machine, 2026-12-03: Adam in the loop and batched at 100 runs,
# L-BFGS (strong Wolfe) in the loop and batched at 100 runs (tools/benchmark.py
# --only runstep, --only lbfgs); the dry run's time estimate (planning/cost.py).
RUN_STEP_US = {"loop": 214, "batched": 4.0, "lbfgs_loop": 1357, "lbfgs_batched": 1029}


def build(
    seed: int,
    steps: int,
    dim: int = 20,
    samples: int = 40,
    condition_number: float = 100.0,
    noise: float = 0.0,
    rotate: bool = True,
) -> Instance:
    g = generator(seed)
    left = orthonormal(samples, dim, g)
    right = orthonormal(dim, dim, g)
    if not rotate:
        right = torch.eye(dim, dtype=torch.float64)
    w_star = torch.randn(dim, 1, generator=g, dtype=torch.float64)
    errors = torch.randn(samples, 1, generator=g, dtype=torch.float64)
    model = new_linear(dim, 1, bias=False, generator=g)
    scale = torch.sqrt(torch.tensor(float(samples), dtype=torch.float64))
    x = (scale * left * spectrum(dim, condition_number) ** 0.5 @ right.T).float()
    # Targets from the float32 inputs, so that without noise they are consistent
    # with the data the model sees (up to one rounding of y).
    y = (x.double() @ w_star + noise * errors).float()
    x64, y64 = x.double(), y.double()
    solution = torch.linalg.lstsq(x64, y64).solution
    optimum = float(torch.mean((x64 @ solution - y64) ** 2))
    singular = torch.linalg.svdvals(x64)
    return Instance(
        kind=KIND,
        model=model,
        inputs=x,
        targets=y,
        optima={"MSELoss": optimum},
        info={"condition_number": float((singular[0] / singular[-1]) ** 2)},
    )
