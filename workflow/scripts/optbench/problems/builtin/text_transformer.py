"""A small causal transformer language model trained on bytes of real text: the
Python sources of the installed torch's ``torch/optim`` package (about 0.5 MB),
which every install of the pinned torch has, so nothing is downloaded.
Stresses what language models bring: embeddings, multi-head self-attention
with a causal mask, layer normalisation, an MLP, one prediction per position,
noisy mini-batches of text windows, and a held-out stretch of text.

Corpus: the files ``torch/optim/*.py`` (not subfolders) in name order, their
bytes concatenated; its SHA-256 must be ``CORPUS_SHA256`` (torch 2.13.0's), or
the build stops with the corpus found, since another torch has other sources
and so another problem; the digest is recorded in each run's sidecar
(``problem_info``). The last ``heldout_fraction`` of the bytes is held out.

Model (byte level, 256 symbols): token embedding plus a learned position
embedding (width ``width``), ``layers`` pre-norm blocks (LayerNorm ->
``heads``-head causal self-attention -> residual; LayerNorm -> Linear(width,
4 width) -> GELU -> Linear(4 width, width) -> residual), a final LayerNorm and
a Linear(width, 256) head. The model returns logits ``[batch, 256,
positions]`` for ``CrossEntropyLoss`` (mean over every position: nats per
byte; divide by ln 2 for bits per byte).

Each step takes ``batch_size`` windows of ``context + 1`` consecutive bytes
(inputs: the first ``context``, targets: the next byte at each position)
starting at positions drawn uniformly from the training text. The held-out
loss and accuracy (next-byte accuracy) are taken after the last step over
windows of the held-out text: it is cut into non-overlapping windows of
``context + 1`` bytes, of which every k-th is kept, k the smallest stride that
keeps at most ``HELDOUT_WINDOWS`` (256; 8,192 predicted bytes at the default
context), evenly spread over the held-out text.

Draw order, on a generator seeded with the seed: 1. the token embedding, then
the position embedding, each N(0, 0.02^2); 2. per block, the attention's
input projection (weight, bias), its output projection (weight, bias), the
MLP's first and second layers (weight, bias each), each nn.Linear's default
U(-1/sqrt(fan_in), 1/sqrt(fan_in)); 3. the head's weight and bias; 4. the
window starts of every step, ``steps x batch_size`` of them (last, so that
changing ``steps`` changes nothing drawn before). LayerNorms start at weight
1, bias 0 (no draw).

Optimum: none known; the held-out loss is the reference. Measured (seed 0):
Adam (lr 0.003) brings the held-out loss from 5.29 nats per byte (uniform
over 256 symbols: 5.55) to 2.29 in 200 steps (next-byte accuracy 0.06 ->
0.40).
"""

import functools
import hashlib
import importlib.util
import math
from pathlib import Path

import torch

from optbench.problems import ProblemError
from optbench.problems.draws import generator, new_linear
from optbench.problems.instance import Instance

KIND = "classification"
# One prediction per position: logits [batch, 256, positions], which
# CrossEntropyLoss takes and MultiMarginLoss does not.
LOSSES = ("CrossEntropyLoss",)
PARAMETERS = {
    "context": 32,
    "width": 32,
    "heads": 2,
    "layers": 2,
    "batch_size": 16,
    "heldout_fraction": 0.1,
}
LIMITS = {
    "context": [1, 512],
    "width": [1, None],
    "heads": [1, None],
    "layers": [1, None],
    "batch_size": [1, None],
    "heldout_fraction": [0.01, 0.5],
}
STOCHASTIC = True
OPTIMUM = None

# Facts for planning and reporting (optbench.problems, docs/problems.md#facts).
# Nats per byte; reached by Adam at lr 0.003 within 200 steps (2.29).
HELDOUT_TARGET = {"loss": 2.5}
# The batched engine's bytes per run, 3.2 MB measured (its activations), rounded
# up to 4 MiB.
RUN_BYTES = 4194304
# Microseconds per run-step at the default parameters, one thread, 2-core
# development machine, 2026-12-03: Adam in the loop and batched at 100 runs,
# L-BFGS (strong Wolfe) in the loop and batched at 100 runs (tools/benchmark.py
# --only runstep, --only lbfgs); the dry run's time estimate (planning/cost.py).
# batched None: engine auto trains it in the loop (vmap's attention is not the
# loop's bits); lbfgs_batched None: its L-BFGS history is above
# engines.batched.LBFGS_BATCHED_HISTORY_MAX (1 MiB per run), so it stays in the loop.
RUN_STEP_US = {"loop": 9732, "batched": None, "lbfgs_loop": 301244, "lbfgs_batched": None}
# Model sizes a config entry can expand over (sizes:, docs/problems.md#sizes),
# smallest first, and the trained parameters at any parameter values: per block
# two LayerNorms (4 w), qkv (3 w^2 + 3 w), out (w^2 + w), up (4 w^2 + 4 w) and
# down (4 w^2 + w); embeddings (256 w + context w), final LayerNorm (2 w), head
# (256 w + 256). xs 12,272, s 43,136 (the defaults), m 135,168, l 863,232.
SIZES = {
    "xs": {"width": 16, "layers": 1},
    "s": {"width": 32, "layers": 2},
    "m": {"width": 64, "layers": 2},
    "l": {"width": 128, "layers": 4},
}
PARAMETER_COUNT = "12 * layers * width**2 + 13 * layers * width + (514 + context) * width + 256"

SYMBOLS = 256
HELDOUT_WINDOWS = 256
CORPUS_SHA256 = "2ba4aca8e1511cb2a38feef203f218a543abd6b2257cb76152cec2488b798a43"


@functools.cache
def corpus() -> tuple[torch.Tensor, str]:
    """(the corpus as int64 bytes, its SHA-256), read once per process."""
    spec = importlib.util.find_spec("torch")
    root = Path(next(iter(spec.submodule_search_locations))) / "optim"
    files = sorted(root.glob("*.py"))
    data = b"".join(path.read_bytes() for path in files)
    digest = hashlib.sha256(data).hexdigest()
    if digest != CORPUS_SHA256:
        raise ProblemError(
            f"problem text_transformer: the corpus (the {len(files)} files torch/optim/*.py "
            f"of the torch in {root.parent}, {len(data):,} bytes) has SHA-256 {digest}, not "
            f"torch 2.13.0's {CORPUS_SHA256}: another torch gives another problem. Fix: "
            "install the torch of requirements.txt (pip install -r requirements.txt)."
        )
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).long(), digest


@functools.cache
def windows(context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets): every window start's ``context`` bytes and their next
    bytes, ``[starts, context]`` each, as views of the corpus (no copy), one
    pair per process and context so that the runs of a batch share them."""
    tokens, _ = corpus()
    spans = tokens.unfold(0, context + 1, 1)
    return spans[:, :context], spans[:, 1:]


def _normal_(tensor: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    with torch.no_grad():
        tensor.normal_(0.0, 0.02, generator=g)
    return tensor


class Block(torch.nn.Module):
    """Pre-norm transformer block: causal self-attention, then an MLP, each residual."""

    def __init__(self, width: int, heads: int, g: torch.Generator):
        super().__init__()
        self.heads = heads
        self.attention_norm = torch.nn.LayerNorm(width)
        self.qkv = new_linear(width, 3 * width, bias=True, generator=g)
        self.out = new_linear(width, width, bias=True, generator=g)
        self.mlp_norm = torch.nn.LayerNorm(width)
        self.up = new_linear(width, 4 * width, bias=True, generator=g)
        self.down = new_linear(4 * width, width, bias=True, generator=g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, positions, width = x.shape
        per_head = width // self.heads
        q, k, v = self.qkv(self.attention_norm(x)).split(width, dim=-1)
        q, k, v = (
            t.reshape(batch, positions, self.heads, per_head).transpose(1, 2) for t in (q, k, v)
        )
        scores = q @ k.transpose(-2, -1) / math.sqrt(per_head)
        future = torch.ones(positions, positions, dtype=torch.bool, device=x.device).triu(1)
        weights = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
        mixed = (weights @ v).transpose(1, 2).reshape(batch, positions, width)
        x = x + self.out(mixed)
        return x + self.down(torch.nn.functional.gelu(self.up(self.mlp_norm(x))))


class CausalTransformer(torch.nn.Module):
    def __init__(self, context: int, width: int, heads: int, layers: int, g: torch.Generator):
        super().__init__()
        self.embedding = torch.nn.Parameter(_normal_(torch.empty(SYMBOLS, width), g))
        self.position = torch.nn.Parameter(_normal_(torch.empty(context, width), g))
        self.blocks = torch.nn.ModuleList(Block(width, heads, g) for _ in range(layers))
        self.norm = torch.nn.LayerNorm(width)
        self.head = new_linear(width, SYMBOLS, bias=True, generator=g)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embedding[tokens] + self.position[: tokens.shape[-1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)).transpose(1, 2)  # [batch, symbols, positions]


def build(
    seed: int,
    steps: int,
    context: int = 32,
    width: int = 32,
    heads: int = 2,
    layers: int = 2,
    batch_size: int = 16,
    heldout_fraction: float = 0.1,
) -> Instance:
    if width % heads:
        raise ProblemError(
            f"problem text_transformer: width {width} is not a multiple of heads {heads}. "
            "Fix: choose width = heads x (the width of one head)."
        )
    tokens, digest = corpus()
    inputs, targets = windows(context)
    held = round(heldout_fraction * len(tokens))
    training_starts = len(tokens) - held - context  # windows that end before the held-out text
    g = generator(seed)
    model = CausalTransformer(context, width, heads, layers, g)
    index = torch.randint(training_starts, (steps, batch_size), generator=g)
    heldout_spans = tokens[len(tokens) - held :]
    count = len(heldout_spans) // (context + 1)
    heldout_spans = heldout_spans[: count * (context + 1)].view(count, context + 1)
    # Evenly spaced windows, at most HELDOUT_WINDOWS: the evaluation stays a
    # fraction of a run's time while covering the whole held-out stretch.
    heldout_spans = heldout_spans[:: -(-count // HELDOUT_WINDOWS)]
    return Instance(
        kind=KIND,
        model=model,
        inputs=inputs,
        targets=targets,
        index=index,
        heldout=(heldout_spans[:, :context], heldout_spans[:, 1:]),
        info={
            "corpus": "torch/optim/*.py",
            "corpus_bytes": len(tokens),
            "corpus_sha256": digest,
            "heldout_bytes": held,
        },
    )
