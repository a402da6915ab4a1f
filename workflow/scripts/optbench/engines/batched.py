"""Batched engine: train the runs of one (problem, loss, optimizer) cell together.

A cell's runs (seeds x variants; a variant is one set of the optimizer's
keyword arguments) share the problem's shapes, so each model parameter is
stacked into one leaf tensor ``[runs, ...]``. Every step then does one forward
and one backward pass for all runs, and one optimizer step per variant, where
each variant's optimizer holds row slices (views) of the stacked tensors, so
the variant's hyper-parameters apply to its rows only.

Why each run stays exactly its own run:

- The loss is computed with ``reduction='none'`` and reduced per run, never
  over runs: a mean over runs would scale every gradient by 1/runs. The
  per-run losses are back-propagated with a gradient of exactly 1 each, and the
  1/n of a mean is applied where torch's own backward applies it
  (``batch_policy.PER_RUN_REDUCTION``), so gradients equal the solo ones.
- The forward pass never mixes rows: ``bmm``/``baddbmm`` for linear layers
  (one matrix product per run), ``torch.func.vmap`` of the model otherwise.
- Only optimizers that act element by element are batched
  (``batch_policy.ELEMENTWISE``). L-BFGS, Adafactor, Muon and anything
  unknown run in the per-run loop (``train_loop``); the result says which
  engine ran and why. So an inf or NaN in one run stays in that run.

Bit-exactness against the loop (CPU, one thread, as training jobs run;
tests/test_batched.py checks every element-wise optimizer on every built-in
problem and loss): losses and weights bit-identical on linear (the reference
problem), quadratic, noisy_quadratic (MSE, L1, Huber, SmoothL1), logistic (BCE
with logits) and rosenbrock; on digits_mlp the weights are bit-identical and
the recorded loss values of cross entropy and multi margin differ by at most
2 (B - 1) 2^-24 relatively (measured: 3e-7), because torch's own kernels sum a
batch's B per-sample losses in a cascade order and the engine with ``sum``;
cross entropy with class weights also divides by a total weight summed in that
other order, so its runs drift at float32 rounding level (measured: 9e-8 in the
weights after 20 steps). Models other than nn.Linear and Sequential stacks of
Linear and element-wise activations go through ``torch.func.vmap``, whose
batched matrix products round differently from the loop's: bit-exact without
matrix products (Rosenbrock), else at float32 rounding level (measured: 7e-8 in
the weights after 25 Adam steps). Three things make the rest exact:

- Each stacked linear layer calibrates its kernels (``_calibrate``): bmm can
  reach a different BLAS or ATen kernel than the loop's F.linear for the same
  shapes, so equivalent formulations are tried once on random data and the
  first that matches the loop's forward, weight and input gradients bit for bit
  is kept (``details["kernels"]``; ``details["kernels_exact"]`` is False when
  none matched, e.g. with several threads, where MKL splits the loop's own
  products differently: the loop's bits then change with the thread count).
- The 1/n of a mean goes where the loop's backward puts it (see above).
- BCE's sigmoid and log round the last elements of a vectorised loop
  differently from the others, so its input gets a row stride one wider than
  the row: each run's elements then sit where they sit in the loop.

Memory (tools/benchmark_engines.py): the engine keeps per run the weights,
their gradients, the optimizer's state and the run's own data
(``details["bytes_per_run"]``: 6.4 KiB for Adam on the reference problem,
48 KiB on digits_mlp), plus one step's activations for all runs. A whole
1,000-run job, instances included, peaks at about 22 KiB per run on the
reference problem (325 MiB in all) and 250 KiB on digits_mlp (550 MiB; each of
its instances holds its own held-out images), above a 300 MiB process.

Device: everything stays on the device given; nothing reads a device tensor on
the host during training (no ``.item()``, no value-dependent Python branch;
the one-off kernel calibration compares once), and the losses are copied to
the host once, at the end. Untested on CUDA (no GPU here).
"""

from __future__ import annotations

import copy
import inspect
import time
from dataclasses import dataclass, field

import torch

from optbench.planning.batch_policy import PER_RUN_REDUCTION, can_batch
from optbench.problems.instance import Instance, stack

__all__ = [
    "EngineResult",
    "RunOutcome",
    "can_batch",
    "needs_closure",
    "train_batched",
    "train_loop",
]


@dataclass
class RunOutcome:
    """One run's record, as the per-run loop gives it."""

    losses: list[float]  # the loss of each step, before that step's update
    evaluations: list[int]  # loss evaluations made by each step (1 without a closure)


@dataclass
class EngineResult:
    """The runs in the order given, and which engine trained them and why."""

    runs: list[RunOutcome]
    engine: str  # "batched" or "loop"
    reason: str
    seconds: float  # training time of all runs together (building excluded)
    details: dict = field(default_factory=dict)  # forward path, variant groups


# ----------------------------------------------------------------- the loop


def _optimizer_class(optimizer_class) -> type:
    if isinstance(optimizer_class, str):
        found = getattr(torch.optim, optimizer_class, None)
        if not (isinstance(found, type) and issubclass(found, torch.optim.Optimizer)):
            raise ValueError(f"{optimizer_class!r} is not a torch.optim optimizer class")
        return found
    return optimizer_class


def needs_closure(optimizer_class) -> bool:
    """Whether ``step`` must be given a closure (its ``closure`` has no default, as L-BFGS)."""
    cls = _optimizer_class(optimizer_class)
    parameter = inspect.signature(cls.step).parameters.get("closure")
    return parameter is not None and parameter.default is inspect.Parameter.empty


def _per_run_kwargs(optimizer_kwargs, runs: int) -> list[dict]:
    if isinstance(optimizer_kwargs, dict):
        return [optimizer_kwargs] * runs
    kwargs = list(optimizer_kwargs)
    if len(kwargs) != runs:
        raise ValueError(f"{len(kwargs)} optimizer kwargs for {runs} runs; give one per run")
    return kwargs


def train_loop(
    instances: list[Instance],
    criterion,
    optimizer_class,
    optimizer_kwargs,
    steps: int,
    device=None,
) -> list[RunOutcome]:
    """The per-run loop, one run after another (the engine's fallback).

    The arguments are those of ``train_batched``. A closure optimizer's step
    gets a closure that counts its evaluations; its recorded loss is the one
    ``step`` returns (the first evaluation, at the weights before the step).
    """
    cls = _optimizer_class(optimizer_class)
    kwargs_list = _per_run_kwargs(optimizer_kwargs, len(instances))
    return [
        _train_one(instance, criterion, cls, kwargs, steps, device)
        for instance, kwargs in zip(instances, kwargs_list, strict=True)
    ]


def _train_one(instance, criterion, cls, kwargs, steps, device) -> RunOutcome:
    # The pipeline's own loop (training.train_instance), so that a cell that
    # falls back records exactly what an unbatched job records.
    from optbench.engines.training import train_instance

    if device is not None:
        instance.to(device)
    optimizer = cls(instance.model.parameters(), **kwargs)
    losses, evaluations, _ = train_instance(instance, criterion, optimizer, steps)
    return RunOutcome(losses, evaluations)


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


# ------------------------------------------------------------ forward paths

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


# The loop's F.linear calls one BLAS product per run; bmm may reach a
# different kernel for the same maths (ATen sums products below 400
# multiply-adds itself, and MKL picks kernels by shape and orientation), which
# rounds differently. So each stacked layer tries a few equivalent
# formulations once, on random data of the layer's shapes, against F.linear
# and its gradients run per run, and keeps the first that matches bit for bit
# (or the first one, when none does: the result then says so).
_SMALL_BMM = 400  # ATen's own bmm kernel below this many multiply-adds per run


def _t(tensor):
    return tensor.transpose(1, 2)


def _padded_rows(x, rows: int):
    """x [runs, rows0, in] with zero rows appended up to ``rows`` (sliced off afterwards)."""
    extra = rows - x.shape[1]
    return x if extra <= 0 else torch.cat([x, x.new_zeros(x.shape[0], extra, x.shape[2])], 1)


def _forward_x_wt(x, weight, bias, rows=0):
    xp = _padded_rows(x, rows)
    if bias is None:
        out = torch.bmm(xp, _t(weight))
    else:
        out = torch.baddbmm(bias.unsqueeze(1), xp, _t(weight))
    return out[:, : x.shape[1]] if xp is not x else out


def _forward_w_xt(x, weight, bias, rows=0):
    xp = _padded_rows(x, rows)
    if bias is None:
        out = torch.bmm(weight, _t(xp))
    else:
        out = torch.baddbmm(bias.unsqueeze(2), weight, _t(xp))
    return _t(out[:, :, : x.shape[1]]).contiguous()


_FORWARDS = {
    "x@W^T": lambda x, w, b, rows: _forward_x_wt(x, w, b),
    "(W@x^T)^T": lambda x, w, b, rows: _forward_w_xt(x, w, b),
    "x@W^T padded": lambda x, w, b, rows: _forward_x_wt(x, w, b, rows),
    "(W@x^T)^T padded": lambda x, w, b, rows: _forward_w_xt(x, w, b, rows),
}
_GRAD_WEIGHTS = {
    "G^T@x": lambda x, w, grad: torch.bmm(_t(grad), x),
    "(x^T@G)^T": lambda x, w, grad: _t(torch.bmm(_t(x), grad)).contiguous(),
}
_GRAD_INPUTS = {
    "G@W": lambda x, w, grad: torch.bmm(grad, w),
    "(W^T@G^T)^T": lambda x, w, grad: _t(torch.bmm(_t(w), _t(grad))).contiguous(),
}


@dataclass
class _Kernels:
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
def _calibrate(runs, rows, features, outputs, bias, dtype, device) -> _Kernels:
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

    padded = -(-_SMALL_BMM // (features * outputs))  # rows that reach BLAS
    chosen, exact = {}, {}
    for part, candidates, compute in (
        ("forward", _FORWARDS, lambda f: f(x, w, b, padded)),
        ("grad_weight", _GRAD_WEIGHTS, lambda f: f(x, w, grad)),
        ("grad_input", _GRAD_INPUTS, lambda f: f(x, w, grad)),
    ):
        names = [n for n in candidates if rows < padded or not n.endswith("padded")]
        hit = next((n for n in names if matches(part, compute(candidates[n]))), None)
        chosen[part], exact[part] = hit or names[0], hit is not None
    if bias:
        exact["grad_bias"] = matches("grad_bias", grad.sum(1))
    return _Kernels(chosen["forward"], chosen["grad_weight"], chosen["grad_input"], padded, exact)


class _LinearFunction(torch.autograd.Function):
    """nn.Linear of every run at once with the layer's calibrated formulations."""

    @staticmethod
    def forward(ctx, x, weight, bias, kernels):
        ctx.save_for_backward(x, weight)
        ctx.kernels, ctx.has_bias = kernels, bias is not None
        return _FORWARDS[kernels.forward](x, weight, bias, kernels.rows)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        kernels = ctx.kernels
        grad = grad.contiguous()  # the layout calibration used
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _GRAD_INPUTS[kernels.grad_input](x, weight, grad)
        if ctx.needs_input_grad[1]:
            grad_w = _GRAD_WEIGHTS[kernels.grad_weight](x, weight, grad)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum(1)
        return grad_x, grad_w, grad_b, None


class _StackedLinear:
    """One nn.Linear layer applied to [runs, ..., in] inputs with [runs, out, in] weights."""

    def __init__(self):
        self.kernels: dict[tuple, _Kernels] = {}  # per input shape

    def __call__(self, inputs, weight, bias):
        runs, features = inputs.shape[0], inputs.shape[-1]
        x = inputs.reshape(runs, -1, features).contiguous()  # the layout calibration used
        key = tuple(x.shape)
        if key not in self.kernels:
            self.kernels[key] = _calibrate(
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


class _BmmForward:
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


def _vmap_forward(model, buffers: dict, objective: bool):
    """A forward over stacked parameters by torch.func.vmap of the model itself."""
    from torch.func import functional_call, vmap

    if objective:
        one = vmap(lambda p, b: functional_call(model, (p, b), ()))
        return lambda params, inputs: one(params, buffers)
    one = vmap(lambda p, b, x: functional_call(model, (p, b), (x,)))
    return lambda params, inputs: one(params, buffers, inputs)


# --------------------------------------------------------- per-run losses


class _PerRunLoss:
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
            return per / self._sample_norm(labels, outputs.shape[1]) if self.mean else per
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

    def _sample_norm(self, labels, batch: int):
        """What a mean divides each run's sum by: its targets' weights (or their count)."""
        weight = getattr(self.none, "weight", None)
        ignore = getattr(self.none, "ignore_index", -100)
        if self.name != "CrossEntropyLoss" or (weight is None and ignore < 0):
            return batch  # no class index is negative, so none is ignored
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


# ------------------------------------------------------------- the engine


def _same_layout(instances) -> str | None:
    """Why the instances' models cannot be stacked, or None when they can."""
    first = instances[0].model
    shapes = [(n, p.shape, p.dtype) for n, p in first.named_parameters()]
    buffers = [(n, b.shape, b.dtype) for n, b in first.named_buffers()]
    for instance in instances[1:]:
        model = instance.model
        if type(model) is not type(first):
            return "the runs' models are of different classes"
        if [(n, p.shape, p.dtype) for n, p in model.named_parameters()] != shapes:
            return "the runs' models have parameters of different names, shapes or dtypes"
        if [(n, b.shape, b.dtype) for n, b in model.named_buffers()] != buffers:
            return "the runs' models have buffers of different names, shapes or dtypes"
    if any(not p.requires_grad for _, p in first.named_parameters()):
        return "a parameter does not require a gradient"
    return None


def _groups(kwargs_list: list[dict]) -> tuple[list[int], list[tuple[dict, int, int]]]:
    """Runs ordered so that each variant's runs are adjacent, and (kwargs, start, stop)
    per variant, in order of first appearance."""
    keys: dict[str, list[int]] = {}
    first: dict[str, dict] = {}
    for run, kwargs in enumerate(kwargs_list):
        key = repr(sorted(kwargs.items()))
        keys.setdefault(key, []).append(run)
        first.setdefault(key, kwargs)
    order, groups, start = [], [], 0
    for key, runs in keys.items():
        order += runs
        groups.append((first[key], start, start + len(runs)))
        start += len(runs)
    return order, groups


def _bytes_per_run(stacked: dict, optimizers: list, data, runs: int) -> int:
    """What the engine keeps for the whole training, per run: weights, gradients,
    optimizer state, and the run's own data (data shared by all runs counted once)."""

    def size(tensor):
        return tensor.numel() * tensor.element_size() if isinstance(tensor, torch.Tensor) else 0

    total = sum(size(t) + size(t.grad) for t in stacked.values())
    total += sum(
        size(value)
        for optimizer in optimizers
        for state in optimizer.state.values()
        for value in state.values()
    )
    total += sum(size(t) for t in (data.inputs, data.targets, data.index))
    return total // runs


def _fallback(instances, criterion, cls, kwargs_list, steps, device, reason) -> EngineResult:
    started = time.perf_counter()
    runs = train_loop(instances, criterion, cls, kwargs_list, steps, device)
    return EngineResult(runs, "loop", reason, time.perf_counter() - started)


def train_batched(
    instances: list[Instance],
    criterion,
    optimizer_class,
    optimizer_kwargs,
    steps: int,
    device=None,
    forward: str = "auto",
    exact_only: bool = False,
) -> EngineResult:
    """Train the runs of one cell together, or in the loop where that is not safe.

    ``instances``: one built problem instance per run (same problem and
    parameters; each seed's draw), on the CPU or all on one device.
    ``criterion``: the torch.nn loss module the loop would use (None for an
    objective problem). ``optimizer_class``: a torch.optim class or its name.
    ``optimizer_kwargs``: one dict for all runs, or one per run (runs with
    equal dicts form one variant). ``device``: where to train (None: where
    the instances are). ``forward``: "auto" (bmm for nn.Linear and Sequential
    stacks of Linear and element-wise activations, vmap otherwise), "bmm" or
    "vmap". ``exact_only``: where the calibrated stacked kernels do not match
    the loop's bit for bit on this CPU (``_calibrate``), train in the loop
    instead (``engine: auto``); else train batched at float32 rounding level
    and say so in ``details["kernels_exact"]`` (``engine: batched``).

    Returns the runs in the order given, each as the loop records it, and the
    engine that ran with its reason. On return every instance is on
    ``device`` and its model holds that run's final weights, as after the loop.
    """
    if forward not in ("auto", "bmm", "vmap"):
        raise ValueError(f"forward must be 'auto', 'bmm' or 'vmap', got {forward!r}")
    if not instances:
        return EngineResult([], "batched", "no runs", 0.0)
    cls = _optimizer_class(optimizer_class)
    kwargs_list = _per_run_kwargs(optimizer_kwargs, len(instances))
    kind = instances[0].kind
    loss_name = None if criterion is None else type(criterion).__name__
    loss_kwargs = None if criterion is None else {"reduction": criterion.reduction}
    ok, reason = can_batch(cls.__name__, kind, loss_name, loss_kwargs)
    if ok and needs_closure(cls):
        ok, reason = False, f"optimizer {cls.__name__} runs in the per-run loop: it needs a closure"
    if ok and any(i.kind != kind for i in instances):
        ok, reason = False, "the runs are of different problem kinds"
    layout = _same_layout(instances) if ok else None
    if layout:
        ok, reason = False, f"runs in the per-run loop: {layout}"
    if not ok:
        return _fallback(instances, criterion, cls, kwargs_list, steps, device, reason)
    if device is None:
        device = _device_of(instances[0].model)
    device = torch.device(device)

    order, groups = _groups(kwargs_list)
    runs = len(instances)
    ordered = [instances[i] for i in order]
    model = ordered[0].model
    names = [name for name, _ in model.named_parameters()]
    stacked = {
        name: torch.stack([i.model.get_parameter(name).detach() for i in ordered])
        .to(device)
        .requires_grad_()
        for name in names
    }
    buffers = {
        name: torch.stack([i.model.get_buffer(name) for i in ordered]).to(device)
        for name, _ in model.named_buffers()
    }
    data = stack(ordered)
    if data.inputs is not None:
        data.inputs, data.targets = data.inputs.to(device), data.targets.to(device)
        data.index = None if data.index is None else data.index.to(device)

    objective = kind == "objective"
    bmm = None if forward == "vmap" or buffers or objective else _BmmForward.build(model)
    if forward == "bmm" and bmm is None:
        raise ValueError(f"forward='bmm' needs an nn.Linear or Sequential model, got {model!r}")
    path = "bmm" if bmm is not None else "vmap"
    if bmm is not None:
        step_forward = bmm
        # Calibrate before training (every step's batch has the shape of
        # step 0's), so that an inexact kernel is known before any run uses it.
        with torch.no_grad():
            bmm(stacked, data.batch(0)[0])
        if exact_only and not bmm.exact():
            reason = (
                "runs in the per-run loop: no stacked kernel of this CPU matches the loop's "
                f"bit for bit ({'; '.join(bmm.describe().values())})"
            )
            return _fallback(instances, criterion, cls, kwargs_list, steps, device, reason)
    else:
        step_forward = _vmap_forward(model, buffers, objective)
        try:
            with torch.no_grad():
                step_forward(stacked, data.batch(0)[0])
        except Exception as error:  # a model vmap cannot trace runs in the loop
            reason = f"runs in the per-run loop: torch.func.vmap cannot batch the model ({error})"
            return _fallback(instances, criterion, cls, kwargs_list, steps, device, reason)

    per_run_loss = None if objective else _PerRunLoss(criterion.to(device), runs)
    views = []  # (optimizer, [(view, name, start, stop)])
    for kwargs, start, stop in groups:
        rows = [(stacked[name].detach()[start:stop], name, start, stop) for name in names]
        views.append((cls([view for view, *_ in rows], **kwargs), rows))

    recorded = torch.empty(steps, runs, dtype=stacked[names[0]].dtype, device=device)
    ones = torch.ones(runs, dtype=recorded.dtype, device=device)
    started = time.perf_counter()
    for step in range(steps):
        for tensor in stacked.values():
            tensor.grad = None
        inputs, targets = data.batch(step)
        outputs = step_forward(stacked, inputs)
        losses = outputs if objective else per_run_loss(outputs, targets)
        # A gradient of exactly 1 per run: each run's gradient is its own.
        losses.backward(ones)
        for optimizer, rows in views:
            for view, name, start, stop in rows:
                view.grad = stacked[name].grad[start:stop]
            optimizer.step()
        recorded[step] = losses.detach()
    per_run = recorded.T.tolist()  # the one copy to the host
    seconds = time.perf_counter() - started

    with torch.no_grad():
        for position, instance in enumerate(ordered):
            instance.to(device)
            for name in names:
                instance.model.get_parameter(name).copy_(stacked[name][position])
    outcomes: list[RunOutcome | None] = [None] * runs
    for position, run in enumerate(order):
        outcomes[run] = RunOutcome(per_run[position], [1] * steps)
    details = {
        "forward": path,
        "variants": len(groups),
        "runs": runs,
        "bytes_per_run": _bytes_per_run(stacked, [o for o, _ in views], data, runs),
    }
    if bmm is not None:
        details["kernels"] = bmm.describe()
        details["kernels_exact"] = bmm.exact()
    return EngineResult(outcomes, "batched", reason, seconds, details)
