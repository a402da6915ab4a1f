"""The n-dimensional Rosenbrock function: a curved, narrow valley with its
minimum 0 at (1, ..., 1). Stresses curvature that changes along the path: the
valley floor ``x[i+1] = x[i]^2`` is easy to reach and slow to follow, because
across the valley the function is ``b`` times steeper than along it, and the
direction of the valley turns. There is no data and no loss: the model's
``forward()`` returns ``f(x) = sum_i b (x[i+1] - x[i]^2)^2 + (1 - x[i])^2`` (i
from 0 to dim - 2) for its one parameter vector ``x``.

Start point: each coordinate ``1 + U(-start_radius, start_radius)``, drawn on
a generator seeded with the seed (the only draw). Starts centred on the
minimiser keep every run in the global minimum's basin: for dim >= 4 the
function also has a local minimum near (-1, 1, ..., 1) (value near 4), and
starts with negative coordinates (e.g. uniform in [-2, 2]^dim) end there in
about one L-BFGS run in eight; with the default radius 1 none did in 400
measured L-BFGS runs (dims 2 to 30).

Optimum: 0 at (1, ..., 1) for every dim >= 2 and b >= 0 (each term is a
square, and all vanish there).
"""

import torch

from optbench.problems.draws import generator
from optbench.problems.instance import Instance

KIND = "objective"
PARAMETERS = {"dim": 10, "b": 100.0, "start_radius": 1.0}
LIMITS = {"dim": [2, None], "b": [0.0, None], "start_radius": [0.0, None]}
STOCHASTIC = False
OPTIMUM = 0.0

# Facts for planning and reporting (optbench.problems, docs/problems.md#facts).
# Microseconds per run-step at the default parameters, one thread, 2-core
# development machine, 2026-12-03: Adam in the loop and batched at 100 runs,
# L-BFGS (strong Wolfe) in the loop and batched at 100 runs (tools/benchmark.py
# --only runstep, --only lbfgs); the dry run's time estimate (planning/cost.py).
RUN_STEP_US = {"loop": 281, "batched": 4.8, "lbfgs_loop": 1588, "lbfgs_batched": 2051}


class Rosenbrock(torch.nn.Module):
    """f(x) for the parameter vector x; forward() takes no input."""

    def __init__(self, start: torch.Tensor, b: float):
        super().__init__()
        self.x = torch.nn.Parameter(start)
        self.b = b

    def forward(self) -> torch.Tensor:
        head, tail = self.x[:-1], self.x[1:]
        return (self.b * (tail - head**2) ** 2 + (1 - head) ** 2).sum()


def build(
    seed: int, steps: int, dim: int = 10, b: float = 100.0, start_radius: float = 1.0
) -> Instance:
    g = generator(seed)
    start = 1 + start_radius * (2 * torch.rand(dim, generator=g) - 1)
    return Instance(kind=KIND, model=Rosenbrock(start, b), optima={"objective": 0.0})
