"""Real data sets every install has, and the seeded splits and mini-batches of them.

The data ship inside the scikit-learn package (``sklearn/datasets/data/``):
the files are read directly, located with ``importlib.util.find_spec``, which
does not import scikit-learn (its import costs seconds), so nothing is
downloaded and every machine with the pinned dependencies reads the same
bytes. Each loader reads its file once per process and checks its shape.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import math
from pathlib import Path

import torch

from optbench.problems import ProblemError

DIGITS_IMAGES, DIGITS_PIXELS, DIGITS_CLASSES = 1797, 64, 10
CANCER_SAMPLES, CANCER_FEATURES = 569, 30


def sklearn_data_file(name: str, problem: str) -> Path:
    """scikit-learn's bundled data file ``name``, found without importing scikit-learn."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ProblemError(
            f"problem {problem} reads data bundled with scikit-learn, which is not "
            "installed here. Fix: install the version in requirements.txt "
            "(pip install -r requirements.txt, or the conda env of envs/)."
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    path = root / "datasets" / "data" / name
    if not path.is_file():
        raise ProblemError(f"problem {problem}: {path} is missing from scikit-learn.")
    return path


@functools.cache
def load_digits(problem: str = "digits_mlp") -> tuple[torch.Tensor, torch.Tensor]:
    """(images [1797, 64] float32 in [0, 1], labels [1797] int64), read once per process."""
    path = sklearn_data_file("digits.csv.gz", problem)
    with gzip.open(path, "rb") as stream:
        text = stream.read()
    # One image per line, its 64 pixels then its label, comma-separated integers.
    flat = [int(value) for value in text.replace(b"\n", b",").split(b",") if value.strip()]
    if len(flat) != DIGITS_IMAGES * (DIGITS_PIXELS + 1):
        raise ProblemError(
            f"problem {problem}: {path} holds {len(flat)} values, not "
            f"{DIGITS_IMAGES} x {DIGITS_PIXELS + 1}; the file is not scikit-learn's digits."
        )
    values = torch.tensor(flat, dtype=torch.int64).view(DIGITS_IMAGES, DIGITS_PIXELS + 1)
    images, labels = values[:, :DIGITS_PIXELS].float() / 16, values[:, DIGITS_PIXELS].clone()
    if images.min() < 0 or images.max() > 1 or labels.min() < 0 or labels.max() >= DIGITS_CLASSES:
        raise ProblemError(f"problem {problem}: {path} holds values out of range.")
    return images, labels


@functools.cache
def load_digit_images(problem: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``load_digits`` as one-channel 8 x 8 images [1797, 1, 8, 8]: one tensor per
    process, so that the runs of a batch share it instead of stacking copies."""
    images, labels = load_digits(problem)
    return images.view(DIGITS_IMAGES, 1, 8, 8), labels


@functools.cache
def load_breast_cancer(problem: str) -> tuple[tuple[tuple[float, ...], ...], tuple[int, ...]]:
    """The Wisconsin diagnostic breast cancer data: 569 rows of 30 float features
    (as Python floats, unscaled) and labels (0 malignant, 1 benign)."""
    path = sklearn_data_file("breast_cancer.csv", problem)
    lines = path.read_text(encoding="ascii").splitlines()
    # First line: samples, features, then the class names.
    header = lines[0].split(",")
    rows = [line.split(",") for line in lines[1:] if line.strip()]
    if (
        header[:2] != [str(CANCER_SAMPLES), str(CANCER_FEATURES)]
        or len(rows) != CANCER_SAMPLES
        or any(len(row) != CANCER_FEATURES + 1 for row in rows)
    ):
        raise ProblemError(
            f"problem {problem}: {path} is not scikit-learn's breast cancer data "
            f"({CANCER_SAMPLES} rows of {CANCER_FEATURES} features and a label)."
        )
    features = tuple(tuple(float(value) for value in row[:-1]) for row in rows)
    labels = tuple(int(row[-1]) for row in rows)
    if set(labels) != {0, 1}:
        raise ProblemError(f"problem {problem}: {path} has labels other than 0 and 1.")
    return features, labels


def standardized(rows, fitted_on) -> torch.Tensor:
    """``rows`` (Python floats) as float32, each column centred and scaled by the
    mean and standard deviation of the rows ``fitted_on`` (the training split:
    nothing of the held-out rows leaks into the scaling). Computed in Python
    with exactly rounded sums (math.fsum), so no CPU or library changes a bit."""
    columns = list(zip(*(rows[i] for i in fitted_on), strict=True))
    count = len(fitted_on)
    means = [math.fsum(column) / count for column in columns]
    scales = [
        math.sqrt(math.fsum((value - mean) ** 2 for value in column) / count) or 1.0
        for column, mean in zip(columns, means, strict=True)
    ]
    return torch.tensor(
        [
            [(value - mean) / scale for value, mean, scale in zip(row, means, scales, strict=True)]
            for row in rows
        ],
        dtype=torch.float32,
    )


def split(samples: int, heldout_fraction: float, g: torch.Generator):
    """(held-out rows, training rows): a seeded permutation, its first
    round(heldout_fraction x samples) rows held out."""
    order = torch.randperm(samples, generator=g)
    held = round(heldout_fraction * samples)
    return order[:held], order[held:]


def minibatches(training_rows, steps: int, batch_size: int, g: torch.Generator) -> torch.Tensor:
    """``[steps, batch_size]`` rows: the training rows epoch after epoch, each epoch
    in a fresh seeded order, the stream cut into consecutive batches (a batch may
    straddle two epochs, so every batch has the same size)."""
    needed = steps * batch_size
    epochs = -(-needed // len(training_rows))
    stream = torch.cat(
        [training_rows[torch.randperm(len(training_rows), generator=g)] for _ in range(epochs)]
        or [training_rows[:0]]
    )
    return stream[:needed].view(steps, batch_size)
