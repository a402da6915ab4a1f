"""Streaming linear regression: an ill-conditioned quadratic seen through fresh
noisy samples at every step. Stresses stochastic gradients on a problem whose
answer is known: each step draws a new mini-batch from the same distribution,
so the gradient is an unbiased but noisy estimate of the population gradient,
and an optimizer must trade progress against noise (a constant learning rate
stalls at a noise floor; averaging, momentum and adaptive steps behave
differently). The input covariance has the chosen condition number, as in
``quadratic``.

Model: ``nn.Linear(dim, 1, bias=False)``. Samples: ``x = z diag(sqrt(c)) V^T``
with ``z`` standard normal, ``c`` log-spaced from 1 to 1 / condition_number
and ``V`` a random orthonormal matrix (the identity when ``rotate`` is false),
so the input covariance is ``V diag(c) V^T``; target
``y = x . w* + noise * e``, ``e`` standard normal. The held-out set is
``heldout_samples`` further samples, for the end-of-run loss (an estimate of
the population loss).

Draw order, on a generator seeded with the seed (float64, samples rounded to
float32): 1. ``V`` (Q factor of a Gaussian ``dim x dim`` matrix; drawn even
when ``rotate`` is false); 2. ``w*``, standard normal; 3. the model's weight,
``U(-1/sqrt(dim), 1/sqrt(dim))``; 4. the held-out ``z`` then ``e``; 5. the
training ``z`` (``steps * batch_size`` rows, step after step) then ``e``
(last, so that changing ``steps`` changes nothing drawn before).

Optimum: the population loss ``E[loss(x . w - y)]`` is smallest at ``w = w*``,
because the residual ``x . (w - w*) - noise * e`` is Gaussian with variance
``(w - w*)^T V diag(c) V^T (w - w*) + noise^2`` and each of these losses grows
with that variance; its value there, the expected per-step loss of the best
model, is given per loss class with default arguments: MSELoss ``noise^2``;
L1Loss ``noise sqrt(2/pi)``; HuberLoss (delta 1) and SmoothL1Loss (beta 1)
``noise^2/2 erf(a/sqrt 2) + noise phi(a) - erfc(a/sqrt 2)/2`` with
``a = 1/noise`` and ``phi`` the standard normal density (0 without noise). A
run's per-step losses scatter around these values rather than reaching them.
"""

import math

import torch

from optbench.problems.draws import generator, new_linear, orthonormal, spectrum
from optbench.problems.instance import Instance

KIND = "regression"
PARAMETERS = {
    "dim": 10,
    "batch_size": 8,
    "condition_number": 100.0,
    "noise": 0.1,
    "rotate": True,
    "heldout_samples": 1000,
}
LIMITS = {
    "dim": [1, None],
    "batch_size": [1, None],
    "condition_number": [1.0, 1e8],
    "noise": [0.0, None],
    "heldout_samples": [1, None],
}
STOCHASTIC = True
OPTIMUM = None

# Facts for planning and reporting (optbench.problems, docs/problems.md#facts).
# Microseconds per run-step at the default parameters, one thread, 2-core
# development machine, 2026-12-03: Adam in the loop and batched at 100 runs,
# L-BFGS (strong Wolfe) in the loop and batched at 100 runs (tools/benchmark.py
# --only runstep, --only lbfgs); the dry run's time estimate (planning/cost.py).
RUN_STEP_US = {"loop": 261, "batched": 4.7, "lbfgs_loop": 26523, "lbfgs_batched": 2399}


def build(
    seed: int,
    steps: int,
    dim: int = 10,
    batch_size: int = 8,
    condition_number: float = 100.0,
    noise: float = 0.1,
    rotate: bool = True,
    heldout_samples: int = 1000,
) -> Instance:
    g = generator(seed)
    rotation = orthonormal(dim, dim, g)
    if not rotate:
        rotation = torch.eye(dim, dtype=torch.float64)
    w_star = torch.randn(dim, 1, generator=g, dtype=torch.float64)
    model = new_linear(dim, 1, bias=False, generator=g)
    scales = spectrum(dim, condition_number).sqrt()

    def samples(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.randn(count, dim, generator=g, dtype=torch.float64)
        e = torch.randn(count, 1, generator=g, dtype=torch.float64)
        x = (z * scales @ rotation.T).float()
        return x, (x.double() @ w_star + noise * e).float()

    heldout = samples(heldout_samples)
    x, y = samples(steps * batch_size)
    return Instance(
        kind=KIND,
        model=model,
        inputs=x,
        targets=y,
        index=torch.arange(steps * batch_size).view(steps, batch_size),
        heldout=heldout,
        optima=expected_optima(noise),
    )


def expected_optima(noise: float) -> dict[str, float]:
    """Expected loss of w* per loss class (default arguments, mean reduction)."""
    if noise == 0:
        return dict.fromkeys(("MSELoss", "L1Loss", "HuberLoss", "SmoothL1Loss"), 0.0)
    a = 1 / noise
    density = math.exp(-a * a / 2) / math.sqrt(2 * math.pi)
    huber = noise**2 / 2 * math.erf(a / math.sqrt(2)) + noise * density
    huber -= math.erfc(a / math.sqrt(2)) / 2
    return {
        "MSELoss": noise**2,
        "L1Loss": noise * math.sqrt(2 / math.pi),
        "HuberLoss": huber,
        "SmoothL1Loss": huber,
    }
