"""Template of a user problem: fit sin(x) on [-pi, pi] with a one-hidden-layer
tanh network, full batch. Stresses a small non-convex regression whose data
never change, so every difference between runs comes from the optimizer and
the seed's initial weights. (Replace this paragraph: it is the problem's
description in listings and the README.)

Copy this file to ``problems/<name>.py`` (lower-case letters, digits and ``_``,
starting with a letter; files whose stem is not such a name, like this one,
are ignored) and name it in the configuration. ``KIND``, ``PARAMETERS``,
``STOCHASTIC``, ``OPTIMUM``, the optional ``LIMITS`` and the optional facts
(``HELDOUT_TARGET``, ``RUN_BYTES``, ``RUN_STEP_US``; docs/problems.md#facts)
must stay literals: planning reads them without running this file.

Draw order, on a generator seeded with the seed: 1. the held-out inputs,
uniform on [-pi, pi]; 2. the first layer's weight then bias; 3. the second
layer's weight then bias (each U(-1/sqrt(fan_in), 1/sqrt(fan_in))). The
training inputs are a fixed grid, drawn from nothing.

Optimum: unknown (non-convex, finite width), so OPTIMUM is None.
"""

import math

import torch

from optbench.problems.draws import generator, new_linear
from optbench.problems.instance import Instance

KIND = "regression"
PARAMETERS = {"samples": 64, "hidden": 16, "heldout_samples": 256}
LIMITS = {"samples": [2, None], "hidden": [1, None], "heldout_samples": [1, None]}
STOCHASTIC = False
OPTIMUM = None
# Optional facts (docs/problems.md#facts). Left out, as here: no default
# held-out target, 256 KiB per run and a guessed cost in the dry run. E.g.:
# HELDOUT_TARGET = {"loss": 0.001}
# RUN_BYTES = 262144
# RUN_STEP_US = {"loop": 300, "batched": 6.0, "lbfgs_loop": 600, "lbfgs_batched": None}


def build(
    seed: int, steps: int, samples: int = 64, hidden: int = 16, heldout_samples: int = 256
) -> Instance:
    g = generator(seed)  # draw only on this generator, in the documented order
    heldout_x = (2 * torch.rand(heldout_samples, 1, generator=g) - 1) * math.pi
    model = torch.nn.Sequential(
        new_linear(1, hidden, bias=True, generator=g),
        torch.nn.Tanh(),
        new_linear(hidden, 1, bias=True, generator=g),
    )
    x = torch.linspace(-math.pi, math.pi, samples).unsqueeze(1)
    return Instance(
        kind=KIND,
        model=model,
        inputs=x,  # [samples, 1]; no index: every step sees the full batch
        targets=torch.sin(x),  # float, shaped like the model's output
        heldout=(heldout_x, torch.sin(heldout_x)),
    )
