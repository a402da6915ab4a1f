"""A small MLP classifier on real data (scikit-learn's bundled 8x8 handwritten
digits), trained with seeded mini-batches. Stresses what the toy problems
lack: a non-convex model, noisy mini-batch gradients and a held-out split, so
that an optimizer's training loss can be compared with how well the model
generalises. The 1,797 images (64 pixel intensities 0..16, scaled to [0, 1];
ten classes) ship inside the scikit-learn package as
``sklearn/datasets/data/digits.csv.gz``; the file is read directly (located
with ``importlib.util.find_spec``, which does not import scikit-learn, whose
import costs seconds), so nothing is downloaded.

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

import functools
import gzip
import importlib.util
from pathlib import Path

import torch

from optbench.problems import ProblemError
from optbench.problems.draws import generator, new_linear
from optbench.problems.instance import Instance

KIND = "classification"
PARAMETERS = {"hidden": 32, "batch_size": 32, "heldout_fraction": 0.2}
LIMITS = {"hidden": [1, None], "batch_size": [1, None], "heldout_fraction": [0.01, 0.9]}
STOCHASTIC = True
OPTIMUM = None

IMAGES, PIXELS, CLASSES = 1797, 64, 10


def digits_file() -> Path:
    """scikit-learn's bundled digits CSV, found without importing scikit-learn."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ProblemError(
            "problem digits_mlp reads the digits data bundled with scikit-learn, which is not "
            "installed here. Fix: install the version in requirements.txt "
            "(pip install -r requirements.txt, or the conda env of envs/)."
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    path = root / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        raise ProblemError(f"problem digits_mlp: {path} is missing from scikit-learn.")
    return path


@functools.cache
def load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """(images [1797, 64] float32 in [0, 1], labels [1797] int64), read once per process."""
    path = digits_file()
    with gzip.open(path, "rb") as stream:
        text = stream.read()
    # One image per line, its 64 pixels then its label, comma-separated integers.
    flat = [int(value) for value in text.replace(b"\n", b",").split(b",") if value.strip()]
    if len(flat) != IMAGES * (PIXELS + 1):
        raise ProblemError(
            f"problem digits_mlp: {path} holds {len(flat)} values, not "
            f"{IMAGES} x {PIXELS + 1}; the file is not scikit-learn's digits."
        )
    values = torch.tensor(flat, dtype=torch.int64).view(IMAGES, PIXELS + 1)
    images, labels = values[:, :PIXELS].float() / 16, values[:, PIXELS].clone()
    if images.min() < 0 or images.max() > 1 or labels.min() < 0 or labels.max() >= CLASSES:
        raise ProblemError(f"problem digits_mlp: {path} holds values out of range.")
    return images, labels


def build(
    seed: int,
    steps: int,
    hidden: int = 32,
    batch_size: int = 32,
    heldout_fraction: float = 0.2,
) -> Instance:
    images, labels = load_digits()
    g = generator(seed)
    order = torch.randperm(IMAGES, generator=g)
    held = round(heldout_fraction * IMAGES)
    heldout_rows, training_rows = order[:held], order[held:]
    model = torch.nn.Sequential(
        new_linear(PIXELS, hidden, bias=True, generator=g),
        torch.nn.ReLU(),
        new_linear(hidden, CLASSES, bias=True, generator=g),
    )
    needed = steps * batch_size
    epochs = -(-needed // len(training_rows))
    stream = torch.cat(
        [training_rows[torch.randperm(len(training_rows), generator=g)] for _ in range(epochs)]
        or [training_rows[:0]]
    )
    return Instance(
        kind=KIND,
        model=model,
        inputs=images,
        targets=labels,
        index=stream[:needed].view(steps, batch_size),
        heldout=(images[heldout_rows], labels[heldout_rows]),
        info={"training_images": len(training_rows), "heldout_images": held},
    )
