"""The reference problem of the blog post: a bias-free square linear layer fitted
to one sample. Stresses almost nothing on purpose: one input vector, a
deterministic full batch, a convex loss whose minimum (zero) is reached by
infinitely many weight matrices. It is the article's toy, kept bit for bit so
that the default configuration reproduces the post's numbers; its interest is
how differently optimizers move at hand-picked learning rates, not what they
reach.

Draw order (seed ``s``), exactly the post's, on torch's *global* CPU
generator: ``torch.manual_seed(s)`` (its CPU part); the model
``nn.Linear(dim, dim, bias=False)`` with torch's default initialisation;
``x = torch.randn(1, dim)``; ``w = torch.randn(1, 1)``; ``y = w * x + 2``
(shape ``[1, dim]``). This is the only built-in problem that uses the global
generator (the post does); the others draw on their own generators.

Optimum: 0 for every regression loss. The model computes ``W x`` and the
matrix ``W = y x^T / (x . x)`` gives ``W x = y`` exactly whenever ``x != 0``,
which a Gaussian draw of ``dim`` values never misses; every regression loss is
zero where prediction equals target and positive elsewhere.
"""

import torch

from optbench.problems import LOSSES
from optbench.problems.instance import Instance

KIND = "regression"
PARAMETERS = {"dim": 20}
LIMITS = {"dim": [1, None]}
STOCHASTIC = False
OPTIMUM = 0.0

# Facts for planning and reporting (optbench.problems, docs/problems.md#facts).
# Microseconds per run-step at the default parameters, one thread, 2-core
# development machine, 2026-12-03: Adam in the loop and batched at 100 runs,
# L-BFGS (strong Wolfe) in the loop and batched at 100 runs (tools/benchmark.py
# --only runstep, --only lbfgs); the dry run's time estimate (planning/cost.py).
RUN_STEP_US = {"loop": 221, "batched": 4.2, "lbfgs_loop": 310, "lbfgs_batched": 1165}


def build(seed: int, steps: int, dim: int = 20) -> Instance:
    # The global CPU generator itself, which is all torch.manual_seed(seed) seeds
    # that this build draws on (the same numbers): torch.manual_seed also queues
    # a lazy CUDA/XPU seeding with a formatted stack trace each call, 3 ms of a
    # reference run's 4 ms to build when a job builds 10^5 seeds.
    torch.default_generator.manual_seed(seed)
    model = torch.nn.Linear(dim, dim, bias=False)
    x = torch.randn(1, dim)
    w = torch.randn(1, 1)
    y = w * x + 2
    return Instance(
        kind=KIND,
        model=model,
        inputs=x,
        targets=y,
        optima=dict.fromkeys(LOSSES[KIND], 0.0),
    )
