"""Per-run losses: a torch loss reduced run by run, never over runs, with the
1/n of a mean applied where torch's own backward applies it, so each run's
gradient is bit for bit its solo gradient (batch_policy.PER_RUN_REDUCTION).
"""

from __future__ import annotations

import copy

import torch

from optbench.planning.batch_policy import PER_RUN_REDUCTION


class PerRunLoss:
    """criterion(outputs, targets) of every run: [runs, ...] in, [runs] out.

    The loss runs with reduction='none', is summed per run, and a mean divides
    where torch's backward for the loop's criterion divides (module docstring).
    """

    def __init__(self, criterion, runs: int):
        self.runs = runs
        self.name = type(criterion).__name__
        self.strategy = PER_RUN_REDUCTION[self.name]
        self.mean = criterion.reduction == "mean"
        self.none = copy.copy(criterion)
        self.none.reduction = "none"

    def __call__(self, outputs, targets):
        runs = self.runs
        if self.strategy == "samples":
            # Classification: [runs, batch, classes] -> [runs * batch, classes].
            flat = outputs.reshape(runs * outputs.shape[1], *outputs.shape[2:])
            labels = targets.reshape(runs * targets.shape[1], *targets.shape[2:])
            per = self.none(flat, labels).reshape(runs, -1).sum(1)
            # A run's targets: a batch of labels, or of label sequences (a
            # language model's [batch, positions]); a mean is over all of them.
            return per / self._sample_norm(labels, targets[0].numel()) if self.mean else per
        count = outputs[0].numel()
        if self.strategy == "after":
            # Its kernels (sigmoid, log) round the last elements of a vector
            # loop differently from the others, so each run's elements must
            # sit where the loop has them: a row stride one wider than the row
            # keeps torch from fusing the runs into one long loop.
            wide = torch.nn.functional.pad(outputs.reshape(runs, count), (0, 1))
            rows = wide[:, :count].view(outputs.shape)
            if self.mean and rows.requires_grad:
                rows.register_hook(lambda grad: grad / count)
            per = self.none(rows, targets).reshape(runs, -1).sum(1)
            if not self.mean:
                return per
            # The value is the mean; the gradient of the sum is divided above.
            return _MeanOfSum.apply(per, count)
        per = self.none(outputs, targets).reshape(runs, -1).sum(1)
        return per / count if self.mean else per

    def _sample_norm(self, labels, count: int):
        """What a mean divides each run's sum by: its targets' weights (or their count)."""
        weight = getattr(self.none, "weight", None)
        ignore = getattr(self.none, "ignore_index", -100)
        if self.name != "CrossEntropyLoss" or (weight is None and ignore < 0):
            return count  # no class index is negative, so none is ignored
        kept = labels != ignore
        if weight is None:
            return kept.reshape(self.runs, -1).sum(1)
        weights = weight[labels.clamp(min=0)] * kept
        return weights.reshape(self.runs, -1).sum(1)


class _MeanOfSum(torch.autograd.Function):
    """Forward ``x / n`` (the mean of a sum); backward passes the gradient unscaled.

    For losses whose backward divides by n after the fact (``"after"``): the
    division happens in a hook on the loss's input instead, where the loop's
    backward does it.
    """

    @staticmethod
    def forward(ctx, x, n):
        return x / n

    @staticmethod
    def backward(ctx, grad):
        return grad, None
