"""Kernel calibration for stacked linear layers: equivalent formulations of a
linear layer's forward pass and its two gradients as batched matrix products,
and the choice, made once per shape on random data, of the first that gives
the per-run loop's bits exactly (batched.py explains why bits matter).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# The loop's F.linear calls one BLAS product per run; bmm may reach a
# different kernel for the same maths (ATen sums products below 400
# multiply-adds itself, and MKL picks kernels by shape and orientation), which
# rounds differently. So each stacked layer tries a few equivalent
# formulations once, on random data of the layer's shapes, against F.linear
# and its gradients run per run, and keeps the first that matches bit for bit
# (or the first one, when none does: the result then says so).
SMALL_BMM = 400  # ATen's own bmm kernel below this many multiply-adds per run


def transposed(tensor):
    return tensor.transpose(1, 2)


def padded_rows(x, rows: int):
    """x [runs, rows0, in] with zero rows appended up to ``rows`` (sliced off afterwards)."""
    extra = rows - x.shape[1]
    return x if extra <= 0 else torch.cat([x, x.new_zeros(x.shape[0], extra, x.shape[2])], 1)


def _forward_x_wt(x, weight, bias, rows=0):
    xp = padded_rows(x, rows)
    if bias is None:
        out = torch.bmm(xp, transposed(weight))
    else:
        out = torch.baddbmm(bias.unsqueeze(1), xp, transposed(weight))
    return out[:, : x.shape[1]] if xp is not x else out


def _forward_w_xt(x, weight, bias, rows=0):
    xp = padded_rows(x, rows)
    if bias is None:
        out = torch.bmm(weight, transposed(xp))
    else:
        out = torch.baddbmm(bias.unsqueeze(2), weight, transposed(xp))
    return transposed(out[:, :, : x.shape[1]]).contiguous()


FORWARDS = {
    "x@W^T": lambda x, w, b, rows: _forward_x_wt(x, w, b),
    "(W@x^T)^T": lambda x, w, b, rows: _forward_w_xt(x, w, b),
    "x@W^T padded": lambda x, w, b, rows: _forward_x_wt(x, w, b, rows),
    "(W@x^T)^T padded": lambda x, w, b, rows: _forward_w_xt(x, w, b, rows),
}


GRAD_WEIGHTS = {
    "G^T@x": lambda x, w, grad: torch.bmm(transposed(grad), x),
    "(x^T@G)^T": lambda x, w, grad: transposed(torch.bmm(transposed(x), grad)).contiguous(),
}


GRAD_INPUTS = {
    "G@W": lambda x, w, grad: torch.bmm(grad, w),
    "(W^T@G^T)^T": lambda x, w, grad: transposed(
        torch.bmm(transposed(w), transposed(grad))
    ).contiguous(),
}


@dataclass
class Kernels:
    """The formulations one stacked linear layer uses, and whether each matched the loop."""

    forward: str
    grad_weight: str
    grad_input: str
    rows: int  # padded row count for the "padded" forwards
    exact: dict  # part -> bool

    def describe(self) -> str:
        return (
            f"forward {self.forward}, weight grad {self.grad_weight}, "
            f"input grad {self.grad_input}; "
            + ", ".join(f"{k} {'exact' if v else 'NOT exact'}" for k, v in self.exact.items())
        )


@torch.enable_grad()  # it runs the loop's backward, also when called under no_grad
def calibrate(runs, rows, features, outputs, bias, dtype, device) -> Kernels:
    """Pick, for one layer shape, formulations bit-identical to F.linear run per run."""
    # A kernel's summation order depends on the shapes and layout of one run's
    # product, not on how many runs there are: 64 runs settle it for any job.
    runs = min(runs, 64)
    g = torch.Generator().manual_seed(12345)

    def draw(*shape):
        return torch.randn(*shape, generator=g).to(dtype).to(device)

    x, w = draw(runs, rows, features), draw(runs, outputs, features)
    grad = draw(runs, rows, outputs)
    b = draw(runs, outputs) if bias else None
    # Runs compared with the loop: a spread of 16 (the kernels do not vary by run).
    sample = sorted({i * (runs - 1) // 15 for i in range(16)})
    loop = {"forward": [], "grad_weight": [], "grad_input": [], "grad_bias": []}
    for r in sample:
        xr = x[r].clone().requires_grad_()
        wr = w[r].clone().requires_grad_()
        br = None if b is None else b[r].clone().requires_grad_()
        out = torch.nn.functional.linear(xr, wr, br)
        out.backward(grad[r].clone())
        loop["forward"].append(out.detach())
        loop["grad_weight"].append(wr.grad)
        loop["grad_input"].append(xr.grad)
        if br is not None:
            loop["grad_bias"].append(br.grad)

    def matches(part, value):
        return torch.equal(value[sample], torch.stack(loop[part]))

    padded = -(-SMALL_BMM // (features * outputs))  # rows that reach BLAS
    chosen, exact = {}, {}
    for part, candidates, compute in (
        ("forward", FORWARDS, lambda f: f(x, w, b, padded)),
        ("grad_weight", GRAD_WEIGHTS, lambda f: f(x, w, grad)),
        ("grad_input", GRAD_INPUTS, lambda f: f(x, w, grad)),
    ):
        names = [n for n in candidates if rows < padded or not n.endswith("padded")]
        hit = next((n for n in names if matches(part, compute(candidates[n]))), None)
        chosen[part], exact[part] = hit or names[0], hit is not None
    if bias:
        exact["grad_bias"] = matches("grad_bias", grad.sum(1))
    return Kernels(chosen["forward"], chosen["grad_weight"], chosen["grad_input"], padded, exact)
