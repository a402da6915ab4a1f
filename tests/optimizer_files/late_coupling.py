"""A test optimizer that couples stacked runs only after the probe's steps.

For its first ``alone_steps`` steps it is plain SGD, element by element; from
then on it divides each update by the norm of every gradient it holds. One run
alone sees its own norm; runs stacked into one tensor share one norm, so each
steers the others. The run-independence probe (8 steps) cannot see it: the
batched engine must catch it by re-training a sample in the loop
(engines/verification.py).
"""

import torch


class LateCouplingSGD(torch.optim.Optimizer):
    def __init__(self, params, lr=0.1, alone_steps=10):
        super().__init__(params, {"lr": lr, "alone_steps": alone_steps})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            state = self.state.setdefault("count", {"steps": 0})
            state["steps"] += 1
            scale = group["lr"]
            if state["steps"] > group["alone_steps"]:
                norm = torch.sqrt(sum((p.grad**2).sum() for p in group["params"]))
                scale = group["lr"] / float(norm)
            for parameter in group["params"]:
                parameter.add_(parameter.grad, alpha=-scale)
