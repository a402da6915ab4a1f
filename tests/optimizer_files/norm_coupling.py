"""A test optimizer that couples stacked runs from its first step: SGD whose
update is divided by the norm of every gradient it holds. The run-independence
probe catches it."""

import torch


class NormCouplingSGD(torch.optim.Optimizer):
    def __init__(self, params, lr=0.1):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            norm = torch.sqrt(sum((p.grad**2).sum() for p in group["params"]))
            for parameter in group["params"]:
                parameter.add_(parameter.grad, alpha=-group["lr"] / (1.0 + float(norm)))
