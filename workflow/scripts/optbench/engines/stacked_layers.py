"""Stacked layers: the forward pass of many runs' models at once without mixing
them, ``bmm`` for Linear layers and Sequential stacks of Linear and
element-wise modules (calibrated kernels), ``torch.func.vmap`` for the rest.
"""

from __future__ import annotations

import torch

from optbench.engines import calibration

# Parameter-free modules that act on each element, so they apply unchanged to
# a [runs, batch, ...] tensor.
_ELEMENTWISE_MODULES = (
    torch.nn.ReLU,
    torch.nn.Tanh,
    torch.nn.Sigmoid,
    torch.nn.GELU,
    torch.nn.SiLU,
    torch.nn.LeakyReLU,
    torch.nn.ELU,
    torch.nn.Softplus,
    torch.nn.Identity,
)


class _LinearFunction(torch.autograd.Function):
    """nn.Linear of every run at once with the layer's calibrated formulations."""

    @staticmethod
    def forward(ctx, x, weight, bias, kernels):
        ctx.save_for_backward(x, weight)
        ctx.kernels, ctx.has_bias = kernels, bias is not None
        return calibration.FORWARDS[kernels.forward](x, weight, bias, kernels.rows)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        kernels = ctx.kernels
        grad = grad.contiguous()  # the layout calibration used
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = calibration.GRAD_INPUTS[kernels.grad_input](x, weight, grad)
        if ctx.needs_input_grad[1]:
            grad_w = calibration.GRAD_WEIGHTS[kernels.grad_weight](x, weight, grad)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum(1)
        return grad_x, grad_w, grad_b, None


class _StackedLinear:
    """One nn.Linear layer applied to [runs, ..., in] inputs with [runs, out, in] weights."""

    def __init__(self):
        self.kernels: dict[tuple, calibration.Kernels] = {}  # per input shape

    def __call__(self, inputs, weight, bias):
        runs, features = inputs.shape[0], inputs.shape[-1]
        x = inputs.reshape(runs, -1, features).contiguous()  # the layout calibration used
        key = tuple(x.shape)
        if key not in self.kernels:
            self.kernels[key] = calibration.calibrate(
                runs,
                x.shape[1],
                features,
                weight.shape[1],
                bias is not None,
                weight.dtype,
                weight.device,
            )
        out = _LinearFunction.apply(x, weight, bias, self.kernels[key])
        return out.reshape(*inputs.shape[:-1], weight.shape[1])


class BmmForward:
    """Forward over stacked parameters for nn.Linear and Sequential stacks of Linear and
    element-wise activations; other models get None from ``build``."""

    def __init__(self, layers):
        self.layers = [
            (name, _StackedLinear() if module is None else module) for name, module in layers
        ]

    @classmethod
    def build(cls, model):
        # Exact classes only: a subclass may compute something else in forward().
        if type(model) is torch.nn.Linear:
            return cls([("", None)])
        if type(model) is not torch.nn.Sequential or not len(model):
            return None
        layers = []
        for name, module in model.named_children():
            if type(module) is torch.nn.Linear:
                layers.append((name, None))
            elif type(module) in _ELEMENTWISE_MODULES:
                layers.append((name, module))
            else:
                return None
        return cls(layers)

    def __call__(self, params, inputs):
        out = inputs
        for name, layer in self.layers:
            if isinstance(layer, _StackedLinear):
                prefix = f"{name}." if name else ""
                out = layer(out, params[f"{prefix}weight"], params.get(f"{prefix}bias"))
            else:
                out = layer(out)
        return out

    def exact(self) -> bool:
        """Whether every calibrated kernel matched the loop's bit for bit."""
        return all(
            all(kernels.exact.values())
            for _, layer in self.layers
            if isinstance(layer, _StackedLinear)
            for kernels in layer.kernels.values()
        )

    def describe(self) -> dict:
        return {
            name or "linear": kernels.describe()
            for name, layer in self.layers
            if isinstance(layer, _StackedLinear)
            for kernels in layer.kernels.values()
        }


def vmap_forward(model, buffers: dict, objective: bool):
    """A forward over stacked parameters by torch.func.vmap of the model itself."""
    from torch.func import functional_call, vmap

    if objective:
        one = vmap(lambda p, b: functional_call(model, (p, b), ()))
        return lambda params, inputs: one(params, buffers)
    one = vmap(lambda p, b, x: functional_call(model, (p, b), (x,)))
    return lambda params, inputs: one(params, buffers, inputs)
