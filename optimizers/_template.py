"""Template of a user optimizer: signSGD with momentum ("Signum"). Each step
moves every weight by lr in the direction of the sign of its momentum, so the
step size is the same for every weight whatever its gradient's scale.

Copy this file to ``optimizers/<module>.py`` (lower-case letters, digits and
``_``, starting with a letter, and not the name of an installed package;
files whose stem starts with ``_``, like this one, are never loaded) and name
its class in the configuration:

    optimizers:
      signum: {class: <module>.Signum, kwargs: {lr: 0.01, momentum: 0.9}}

Planning reads this file without running it: the class's ``__init__`` keyword
arguments (names, and types where the defaults are literals) check the
config's kwargs before any job starts. The training job imports it.

Protocol: what the training loop must do for this optimizer. A ``step``
whose ``closure`` has no default, or that raises when it is given none
(``if closure is None: raise ...``), gets a closure that re-evaluates the
loss: called by ``step`` first (as L-BFGS), or after the loop's own gradients
where ``step`` calls a method of its own before the closure (as SAM's
``first_step``); declare ``PROTOCOL = {"closure": "second_pass"}`` (or
``"evaluates"``) to say which. ``train()`` and ``eval()`` methods (as
schedule-free optimizers) are called before the first and after the last
step. Declare ``PROTOCOL = {"create_graph": True}`` when ``step`` takes
Hessian-vector products (the loop then back-propagates with
``create_graph=True``). The
batched engine trains it only when the job's run-independence probe shows
that it steps stacked runs as it steps each alone (docs/optimizers.md); this
one, acting element by element, passes.
"""

import torch

PROTOCOL = {"create_graph": False}


class Signum(torch.optim.Optimizer):
    def __init__(self, params, lr=0.01, momentum=0.9, weight_decay=0.0):
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for parameter in group["params"]:
                if parameter.grad is None:
                    continue
                gradient = parameter.grad
                if group["weight_decay"]:
                    gradient = gradient.add(parameter, alpha=group["weight_decay"])
                state = self.state[parameter]
                if "momentum" not in state:
                    state["momentum"] = torch.zeros_like(parameter)
                momentum = state["momentum"]
                momentum.mul_(group["momentum"]).add_(gradient, alpha=1 - group["momentum"])
                parameter.add_(momentum.sign(), alpha=-group["lr"])
        return loss
