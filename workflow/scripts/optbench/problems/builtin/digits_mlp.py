"""A small MLP classifier on real data (scikit-learn's bundled 8x8 handwritten
digits), trained with seeded mini-batches. Stresses what the toy problems
lack: a non-convex model, noisy mini-batch gradients and a held-out split, so
that an optimizer's training loss can be compared with how well the model
generalises. The 1,797 images (64 pixel intensities 0..16, scaled to [0, 1];
ten classes) ship inside the scikit-learn package as
``sklearn/datasets/data/digits.csv.gz``, read directly (``datasets.py``), so
nothing is downloaded.

Model: ``Linear(64, hidden) -> ReLU -> Linear(hidden, 10)``, logits for
``CrossEntropyLoss`` (or ``MultiMarginLoss``). Each step takes ``batch_size``
training images: the training rows are visited epoch after epoch, each epoch
in a fresh random order, and the stream is cut into consecutive batches (a
batch may straddle two epochs), so every batch has the same size.
``inputs``/``targets`` are the whole data set (one tensor shared by every seed
in a process) and ``index`` picks each step's training rows; the held-out
images are ``heldout``, evaluated once at the end.

Draw order, on a generator seeded with the seed: 1. a permutation of the 1,797
images, whose first ``round(heldout_fraction * 1797)`` are held out; 2. the
first layer's weight, then its bias, then the second layer's weight, then its
bias, each ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (nn.Linear's default
distribution); 3. one permutation of the training rows per epoch, as many as
``steps * batch_size`` rows need (last, so that changing ``steps`` changes
nothing drawn before).

Optimum: none known (non-convex); the held-out loss and accuracy are the
reference. Measured: CrossEntropyLoss with Adam (lr 0.01) reaches about 0.95
held-out accuracy after 300 steps (chance: 0.1).
"""

import torch

from optbench.problems import datasets
from optbench.problems.draws import generator, new_linear
from optbench.problems.instance import Instance

KIND = "classification"
PARAMETERS = {"hidden": 32, "batch_size": 32, "heldout_fraction": 0.2}
LIMITS = {"hidden": [1, None], "batch_size": [1, None], "heldout_fraction": [0.01, 0.9]}
STOCHASTIC = True
OPTIMUM = None

# Facts for planning and reporting (optbench.problems, docs/problems.md#facts).
# Adam at lr 0.01 is at 0.90-0.94 held-out accuracy after 100 steps (seeds 0-2).
HELDOUT_TARGET = {"accuracy": 0.9}
# Measured 250 KiB per run trained together (model, state, data), rounded up.
RUN_BYTES = 262144
# Microseconds per run-step at the default parameters, one thread, 2-core
# development machine, 2026-12-03: Adam in the loop and batched at 100 runs,
# L-BFGS (strong Wolfe) in the loop and batched at 100 runs (tools/benchmark.py
# --only runstep, --only lbfgs); the dry run's time estimate (planning/cost.py).
# lbfgs_batched None: its L-BFGS history (1.8 MiB per run) is above
# engines.batched.LBFGS_BATCHED_HISTORY_MAX, so it stays in the loop.
RUN_STEP_US = {"loop": 660, "batched": 57.9, "lbfgs_loop": 42749, "lbfgs_batched": None}
# Model sizes a config entry can expand over (sizes:, docs/problems.md#sizes),
# smallest first, and the trained parameters: Linear(64, hidden) and
# Linear(hidden, 10) with biases. xs 610, s 2,410 (the default), m 9,610, l 38,410.
SIZES = {"xs": {"hidden": 8}, "s": {"hidden": 32}, "m": {"hidden": 128}, "l": {"hidden": 512}}
PARAMETER_COUNT = "75 * hidden + 10"


def build(
    seed: int,
    steps: int,
    hidden: int = 32,
    batch_size: int = 32,
    heldout_fraction: float = 0.2,
) -> Instance:
    images, labels = datasets.load_digits()
    g = generator(seed)
    heldout_rows, training_rows = datasets.split(datasets.DIGITS_IMAGES, heldout_fraction, g)
    model = torch.nn.Sequential(
        new_linear(datasets.DIGITS_PIXELS, hidden, bias=True, generator=g),
        torch.nn.ReLU(),
        new_linear(hidden, datasets.DIGITS_CLASSES, bias=True, generator=g),
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
