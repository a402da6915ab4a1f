"""A small MLP classifier of real tabular data: scikit-learn's bundled
Wisconsin diagnostic breast cancer data (569 tumours, 30 features measured
on cell nuclei; malignant 0 or benign 1). Stresses what real tables bring:
features on scales five orders of magnitude apart (each standardised with the
mean and standard deviation of the training split only, by exactly rounded
sums: the same bits on every machine), few samples, noisy mini-batch
gradients and a held-out split to judge generalisation by.

Model: ``Linear(30, hidden) -> ReLU -> Linear(hidden, 1)``, one logit per
tumour for ``BCEWithLogitsLoss``; targets 1.0 for benign. Mini-batches of
``batch_size`` training rows, epoch after epoch, each epoch in a fresh seeded
order (``datasets.minibatches``); the held-out tumours are evaluated after
the last step (loss and accuracy).

Draw order, on a generator seeded with the seed: 1. a permutation of the 569
rows, whose first ``round(heldout_fraction * 569)`` are held out; 2. the first
layer's weight, then its bias, then the second layer's weight, then its bias,
each ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (nn.Linear's default
distribution); 3. one permutation of the training rows per epoch, as many as
``steps * batch_size`` rows need.

Optimum: none known; the held-out loss and accuracy are the reference.
Measured (seed 0): Adam (lr 0.01) reaches 0.96 held-out accuracy after 100
steps (the majority class alone: 0.63).
"""

import torch

from optbench.problems import datasets
from optbench.problems.draws import generator, new_linear
from optbench.problems.instance import Instance

KIND = "binary"
PARAMETERS = {"hidden": 16, "batch_size": 32, "heldout_fraction": 0.2}
LIMITS = {"hidden": [1, None], "batch_size": [1, None], "heldout_fraction": [0.01, 0.9]}
STOCHASTIC = True
OPTIMUM = None

# Facts for planning and reporting (optbench.problems, docs/problems.md#facts).
# Reached by Adam at lr 0.01 within 30 steps on some seeds, not by SGD at 0.1.
HELDOUT_TARGET = {"accuracy": 0.95}
# Microseconds per run-step at the default parameters, one thread, 2-core
# development machine, 2026-12-03: Adam in the loop and batched at 100 runs,
# L-BFGS (strong Wolfe) in the loop and batched at 100 runs (tools/benchmark.py
# --only runstep, --only lbfgs); the dry run's time estimate (planning/cost.py).
RUN_STEP_US = {"loop": 392, "batched": 19.6, "lbfgs_loop": 16772, "lbfgs_batched": 9790}


def build(
    seed: int,
    steps: int,
    hidden: int = 16,
    batch_size: int = 32,
    heldout_fraction: float = 0.2,
) -> Instance:
    features, labels = datasets.load_breast_cancer("breast_cancer_mlp")
    g = generator(seed)
    heldout_rows, training_rows = datasets.split(datasets.CANCER_SAMPLES, heldout_fraction, g)
    inputs = datasets.standardized(features, training_rows.tolist())
    targets = torch.tensor(labels, dtype=torch.float32).unsqueeze(1)
    model = torch.nn.Sequential(
        new_linear(datasets.CANCER_FEATURES, hidden, bias=True, generator=g),
        torch.nn.ReLU(),
        new_linear(hidden, 1, bias=True, generator=g),
    )
    return Instance(
        kind=KIND,
        model=model,
        inputs=inputs,
        targets=targets,
        index=datasets.minibatches(training_rows, steps, batch_size, g),
        heldout=(inputs[heldout_rows], targets[heldout_rows]),
        info={"training_rows": len(training_rows), "heldout_rows": len(heldout_rows)},
    )
