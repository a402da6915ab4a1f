"""One drawn problem: a model and its data, kept apart (imports torch).

A problem's ``build(seed, steps, **parameters)`` returns an ``Instance``. The
training loop uses it like this (``criterion`` is None for an objective)::

    instance.to(device)
    for step in range(steps):
        inputs, targets = instance.batch(step)   # the same pair for every call of this step
        loss = instance.loss(criterion, inputs, targets)
        # == criterion(instance.model(inputs), targets), or instance.model() for an objective
    metrics = instance.evaluate(criterion)        # None when the problem has no held-out data

Data layout, shared by every problem so that a batched engine can stack runs
(``stack()`` below does it, for the data; ``torch.func.stack_module_state``
does it for the models):

- ``inputs`` and ``targets``: every sample the run may see, first dimension
  the sample. Both None for an objective, whose ``model.forward()`` takes no
  argument and returns the scalar to minimise.
- ``index``: None when every step uses all samples (full batch), else an
  int64 tensor ``[steps, batch]`` of the sample rows of each step (mini-batches
  in a seeded order, or fresh samples drawn for each step and laid out one
  step after another). ``batch(step)`` is then ``inputs[index[step]]``.
- For one problem and one set of parameters, every seed gives tensors and
  model parameters of the same shapes, so runs of different seeds stack.
- ``model`` holds every trainable parameter as an ``nn.Parameter``; its
  ``forward`` is a pure function of parameters, buffers and inputs (no
  in-place state, no randomness, no Python branches on tensor values), so
  ``torch.func.functional_call`` and ``vmap`` can batch it over runs.

Target encodings, fixed per kind (``LOSSES`` in ``__init__.py`` follows them):
regression: float targets shaped like the model's output; binary: float
targets in {0, 1} shaped like the model's output (one logit per sample);
classification: int64 class indices ``[batch]`` beside logits
``[batch, classes]``, or, for a sequence model, ``[batch, positions]`` beside
``[batch, classes, positions]`` (one prediction per position).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from optbench.problems import KINDS, ProblemError


@dataclass(eq=False)
class Instance:
    """A problem drawn for one seed: model, per-step data, optional held-out data."""

    kind: str
    model: torch.nn.Module
    inputs: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    index: torch.Tensor | None = None
    heldout: tuple[torch.Tensor, torch.Tensor] | None = None
    # Known minimum of the training loss for this draw, by torch.nn loss class
    # name ("objective" for an objective problem); only where the maths (or an
    # exact float64 solve, as documented by the problem) fixes it.
    optima: dict[str, float] = field(default_factory=dict)
    # JSON-safe facts about the draw worth keeping in a run's sidecar.
    info: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        # Shapes, not values: an instance may hold a whole data set.
        def shape(tensor):
            return None if tensor is None else f"{list(tensor.shape)} {tensor.dtype}"

        weights = sum(p.numel() for p in self.model.parameters())
        heldout = None if self.heldout is None else shape(self.heldout[0])
        return (
            f"Instance(kind={self.kind!r}, model={type(self.model).__name__} with {weights} "
            f"weights, inputs={shape(self.inputs)}, targets={shape(self.targets)}, "
            f"index={shape(self.index)}, heldout={heldout}, optima={self.optima}, "
            f"info={self.info})"
        )

    def batch(self, step: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The (inputs, targets) of training step ``step``; (None, None) for an objective."""
        if self.index is None:
            return self.inputs, self.targets
        rows = self.index[step]
        return self.inputs[rows], self.targets[rows]

    def loss(self, criterion, inputs, targets) -> torch.Tensor:
        """The scalar training loss of one step's batch."""
        if self.kind == "objective":
            return self.model()
        return criterion(self.model(inputs), targets)

    @torch.no_grad()
    def evaluate(self, criterion) -> dict | None:
        """Loss (and accuracy for classifiers) on the held-out data; None without any."""
        if self.heldout is None:
            return None
        inputs, targets = self.heldout
        training = self.model.training
        self.model.eval()
        try:
            outputs = self.model(inputs)
        finally:
            self.model.train(training)
        return {
            "heldout_loss": float(criterion(outputs, targets)),
            "heldout_accuracy": accuracy(self.kind, outputs, targets),
        }

    def to(self, device) -> Instance:
        """Move the model and all data to ``device`` (in place); returns self."""
        self.model.to(device)

        def move(tensor):
            return None if tensor is None else tensor.to(device)

        self.inputs, self.targets, self.index = map(move, (self.inputs, self.targets, self.index))
        if self.heldout is not None:
            self.heldout = (move(self.heldout[0]), move(self.heldout[1]))
        return self

    @torch.no_grad()
    def check(self, steps: int) -> None:
        """Raise ProblemError unless the instance keeps the contract above for ``steps`` steps."""
        problems = []
        if self.kind not in KINDS:
            problems.append(f"kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if not isinstance(self.model, torch.nn.Module):
            problems.append("model is not a torch.nn.Module")
        elif not any(p.requires_grad for p in self.model.parameters()):
            problems.append("model has no trainable parameter")
        if problems:
            raise ProblemError("problem instance: " + "; ".join(problems))
        if self.kind == "objective":
            if self.inputs is not None or self.targets is not None or self.heldout is not None:
                problems.append("an objective has no inputs, targets or held-out data")
            else:
                value = self.model()
                if not (isinstance(value, torch.Tensor) and value.dim() == 0):
                    problems.append("an objective's model() must return a 0-dim tensor")
        else:
            problems += self._data_problems(steps)
        if problems:
            raise ProblemError("problem instance: " + "; ".join(problems))

    def _data_problems(self, steps: int) -> list[str]:
        if self.inputs is None or self.targets is None:
            return [f"a {self.kind} problem needs inputs and targets"]
        if len(self.inputs) != len(self.targets):
            return ["inputs and targets have different numbers of samples"]
        if self.index is not None:
            if self.index.dtype != torch.int64 or self.index.dim() != 2:
                return ["index must be an int64 tensor [steps, batch]"]
            if len(self.index) < steps:
                return [f"index has {len(self.index)} steps, the run needs {steps}"]
            if self.index.numel() and not 0 <= int(self.index.min()) <= int(self.index.max()) < (
                len(self.inputs)
            ):
                return ["index points outside inputs"]
        pairs = [("training", *self.batch(0))]
        if self.heldout is not None:
            pairs.append(("held-out", *self.heldout))
        problems = []
        for label, inputs, targets in pairs:
            outputs = self.model(inputs)
            problem = target_problem(self.kind, outputs, targets)
            if problem:
                problems.append(f"{label} data: {problem}")
        return problems


def target_problem(kind: str, outputs: torch.Tensor, targets: torch.Tensor) -> str | None:
    """Why ``targets`` do not follow the encoding of ``kind`` for model ``outputs``, or None."""
    if kind == "classification":
        # [batch, classes] with [batch], or a sequence model's [batch, classes,
        # positions] with [batch, positions] (CrossEntropyLoss takes both).
        sequence = outputs.dim() == 3 and targets.dim() == 2
        if targets.dtype != torch.int64 or not (
            (outputs.dim() == 2 and targets.dim() == 1) or sequence
        ):
            return (
                "classification needs logits [batch, classes] and int64 targets [batch] "
                "(or [batch, classes, positions] and [batch, positions])"
            )
        if outputs.shape[0] != targets.shape[0] or (
            sequence and outputs.shape[2] != targets.shape[1]
        ):
            return "logits and targets have different batch sizes"
        if (
            targets.numel()
            and not 0 <= int(targets.min()) <= int(targets.max()) < (outputs.shape[1])
        ):
            return "a class index is outside [0, classes)"
        return None
    if outputs.shape != targets.shape or not targets.is_floating_point():
        return (
            f"{kind} needs float targets shaped like the model's output, got targets "
            f"{tuple(targets.shape)} {targets.dtype} for outputs {tuple(outputs.shape)}"
        )
    if kind == "binary" and not bool(((targets == 0) | (targets == 1)).all()):
        return "binary targets must be 0 or 1"
    return None


def accuracy(kind: str, outputs: torch.Tensor, targets: torch.Tensor) -> float | None:
    """Share of correct predictions: argmax for classification, logit > 0 for binary."""
    if kind == "classification":  # classes on dim 1, whether or not positions follow
        return float((outputs.argmax(dim=1) == targets).double().mean())
    if kind == "binary":
        return float(((outputs > 0) == (targets > 0.5)).double().mean())
    return None


@dataclass(eq=False)
class Stacked:
    """The data of several runs of one problem, stacked for a batched engine.

    ``inputs``/``targets`` are ``[runs, samples, ...]``, or ``[samples, ...]``
    when every run holds the very same tensor (shared, e.g. a data set read
    once); ``index`` is ``[runs, steps, batch]`` or None.
    """

    inputs: torch.Tensor | None
    targets: torch.Tensor | None
    index: torch.Tensor | None
    shared: bool
    runs: int

    def batch(self, step: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Every run's batch of ``step``: ``[runs, batch, ...]`` (or the full data)."""
        if self.inputs is None:
            return None, None
        if self.index is None:
            if self.shared:
                expand = (self.runs, *self.inputs.shape)
                targets = self.targets.expand(self.runs, *self.targets.shape)
                return self.inputs.expand(expand), targets
            return self.inputs, self.targets
        rows = self.index[:, step]
        if self.shared:
            return self.inputs[rows], self.targets[rows]
        runs = torch.arange(self.runs, device=rows.device).unsqueeze(1)
        return self.inputs[runs, rows], self.targets[runs, rows]


def stack(instances: list[Instance]) -> Stacked:
    """Stack the per-step data of runs of one problem (same kind, same shapes)."""
    first = instances[0]
    if any(i.kind != first.kind for i in instances):
        raise ProblemError("stack: instances of different kinds")
    if any((i.index is None) != (first.index is None) for i in instances):
        raise ProblemError("stack: some instances have a per-step index and some do not")
    if first.inputs is None:
        return Stacked(None, None, None, shared=True, runs=len(instances))
    shared = all(i.inputs is first.inputs and i.targets is first.targets for i in instances)
    if shared:
        inputs, targets = first.inputs, first.targets
    else:
        inputs = torch.stack([i.inputs for i in instances])
        targets = torch.stack([i.targets for i in instances])
    index = None if first.index is None else torch.stack([i.index for i in instances])
    return Stacked(inputs, targets, index, shared, len(instances))
