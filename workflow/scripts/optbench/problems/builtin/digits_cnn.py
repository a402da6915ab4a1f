"""A small convolutional network on scikit-learn's bundled 8x8 handwritten
digits, trained with seeded mini-batches. Stresses the layers of image models
(convolution, pooling) at a size that trains in seconds on a CPU, with noisy
mini-batch gradients and a held-out split. The images are those of
``digits_mlp`` (``datasets.py``: 1,797 images, pixels scaled to [0, 1], ten
classes), read as one-channel 8x8 images.

Model: ``Conv2d(1, channels, 3, padding=1) -> ReLU -> MaxPool2d(2) ->
Flatten -> Linear(channels x 16, 10)``, logits for ``CrossEntropyLoss`` (or
``MultiMarginLoss``). Mini-batches as in ``digits_mlp``: the training rows
epoch after epoch, each epoch in a fresh seeded order, cut into batches of
``batch_size``; the held-out images are evaluated after the last step.

Draw order, on a generator seeded with the seed: 1. a permutation of the 1,797
images, whose first ``round(heldout_fraction * 1797)`` are held out; 2. the
convolution's weight, then its bias, each ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``
with fan_in = 9 (nn.Conv2d's default distribution); 3. the linear layer's
weight, then its bias (nn.Linear's default distribution, fan_in = channels x
16); 4. one permutation of the training rows per epoch, as many as ``steps *
batch_size`` rows need (last, so that changing ``steps`` changes nothing
drawn before).

Optimum: none known (non-convex); the held-out loss and accuracy are the
reference. Measured (seed 0): CrossEntropyLoss with Adam (lr 0.01) reaches 0.92
held-out accuracy after 100 steps and 0.98 after 300 (chance: 0.1).
"""

import math

import torch

from optbench.problems import datasets
from optbench.problems.draws import generator, new_linear, uniform_
from optbench.problems.instance import Instance

KIND = "classification"
PARAMETERS = {"channels": 8, "batch_size": 32, "heldout_fraction": 0.2}
LIMITS = {"channels": [1, None], "batch_size": [1, None], "heldout_fraction": [0.01, 0.9]}
STOCHASTIC = True
OPTIMUM = None

# Facts for planning and reporting (optbench.problems, docs/problems.md#facts).
# Reached by Adam at lr 0.01 within about 100 steps (0.92).
HELDOUT_TARGET = {"accuracy": 0.9}
# Microseconds per run-step at the default parameters, one thread, 2-core
# development machine, 2026-12-03: Adam in the loop and batched at 100 runs,
# L-BFGS (strong Wolfe) in the loop and batched at 100 runs (tools/benchmark.py
# --only runstep, --only lbfgs); the dry run's time estimate (planning/cost.py).
# batched None: engine auto trains it in the loop (vmap's convolutions are
# not the loop's bits); lbfgs_batched None: its L-BFGS history is above
# engines.batched.LBFGS_BATCHED_HISTORY_MAX (1 MiB per run), so it stays in the loop.
RUN_STEP_US = {"loop": 919, "batched": None, "lbfgs_loop": 50134, "lbfgs_batched": None}

SIDE, KERNEL = 8, 3


def _convolution(channels: int, g: torch.Generator) -> torch.nn.Conv2d:
    layer = torch.nn.utils.skip_init(torch.nn.Conv2d, 1, channels, KERNEL, padding=1)
    bound = 1.0 / math.sqrt(KERNEL * KERNEL)  # fan_in of one input channel
    uniform_(layer.weight, bound, g)
    uniform_(layer.bias, bound, g)
    return layer


def build(
    seed: int,
    steps: int,
    channels: int = 8,
    batch_size: int = 32,
    heldout_fraction: float = 0.2,
) -> Instance:
    images, labels = datasets.load_digit_images("digits_cnn")
    g = generator(seed)
    heldout_rows, training_rows = datasets.split(datasets.DIGITS_IMAGES, heldout_fraction, g)
    pooled = channels * (SIDE // 2) ** 2
    model = torch.nn.Sequential(
        _convolution(channels, g),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        new_linear(pooled, datasets.DIGITS_CLASSES, bias=True, generator=g),
    )
    return Instance(
        kind=KIND,
        model=model,
        inputs=images,
        targets=labels,
        index=datasets.minibatches(training_rows, steps, batch_size, g),
        heldout=(images[heldout_rows], labels[heldout_rows]),
        info={"training_images": len(training_rows), "heldout_images": len(heldout_rows)},
    )
