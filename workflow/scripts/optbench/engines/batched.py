"""Batched engine: train the runs of one (problem, loss, optimizer) cell together.

Its parts: ``stacked_layers`` (the forward pass of all runs at once),
``calibration`` (which kernels give the loop's bits), ``per_run_losses`` (each
run's own loss and gradient); this module stacks the runs and steps them.

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
  (``batch_policy.ELEMENTWISE``), and torch.optim.LBFGS through the batched
  L-BFGS (``batched_lbfgs.py``: each run its own history, step length, line
  search and stopping tests; float32 rounding, so under ``exact_only`` it
  runs in the loop). Adafactor, Muon and anything unknown run in the per-run
  loop (``train_loop``); the result says which engine ran and why. So an inf
  or NaN in one run stays in that run.

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
the weights after 25 Adam steps). With ``exact_only`` (``engine: auto``)
such a model trains batched only where the vmapped step 0 gives the first
runs' gradients bit for bit as the loop does (``_vmap_gradients_exact``; a
convolution, as in digits_cnn, does not), else in the loop. Three things make
the rest exact:

- Each stacked linear layer calibrates its kernels (``calibration.calibrate``): bmm can
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

import time
from dataclasses import dataclass, field

import torch

from optbench.engines import batched_lbfgs, checkpoints, optimizers
from optbench.engines.per_run_losses import PerRunLoss
from optbench.engines.scheduling import LearningRates
from optbench.engines.stacked_layers import BmmForward, vmap_forward
from optbench.engines.training import evaluation_steps
from optbench.planning import batch_policy
from optbench.planning.batch_policy import can_batch
from optbench.problems.instance import Instance, stack

__all__ = [
    "EngineResult",
    "RunOutcome",
    "can_batch",
    "train_batched",
    "train_loop",
]


@dataclass
class RunOutcome:
    """One run's record, as the per-run loop gives it."""

    losses: list[float]  # the loss of each step, before that step's update
    evaluations: list[int]  # loss evaluations made by each step (1 without a closure)
    lrs: list[float | None] = field(default_factory=list)  # the learning rate of each step
    curve: list[dict] = field(default_factory=list)  # held-out metrics every eval_every steps


@dataclass
class EngineResult:
    """The runs in the order given, and which engine trained them and why."""

    runs: list[RunOutcome]
    engine: str  # "batched" or "loop"
    reason: str
    seconds: float  # training time of all runs together (building excluded)
    details: dict = field(default_factory=dict)  # forward path, variant groups


# ----------------------------------------------------------------- the loop


def _per_run(values, runs: int, what: str) -> list:
    """One value for every run (a dict or None given once), or the list given, checked."""
    if values is None or isinstance(values, dict):
        return [values] * runs
    values = list(values)
    if len(values) != runs:
        raise ValueError(f"{len(values)} {what} for {runs} runs; give one per run")
    return values


def train_loop(
    instances: list[Instance],
    criterion,
    optimizer_class,
    optimizer_kwargs,
    steps: int,
    device=None,
    schedules=None,
    eval_every: int = 0,
    on_step=None,
) -> list[RunOutcome]:
    """The per-run loop, one run after another (the engine's fallback).

    The arguments are those of ``train_batched``. A closure optimizer's step
    gets a closure that counts its evaluations; its recorded loss is the one
    ``step`` returns (the first evaluation, at the weights before the step).
    """
    cls = optimizers.resolve(optimizer_class)
    kwargs_list = _per_run(optimizer_kwargs, len(instances), "optimizer kwargs")
    schedule_list = _per_run(schedules, len(instances), "schedules")
    return [
        _train_one(instance, criterion, cls, kwargs, steps, device, schedule, eval_every, on_step)
        for instance, kwargs, schedule in zip(instances, kwargs_list, schedule_list, strict=True)
    ]


def _train_one(
    instance, criterion, cls, kwargs, steps, device, schedule, eval_every, on_step=None
) -> RunOutcome:
    # The pipeline's own loop (training.train_instance), so that a cell that
    # falls back records exactly what an unbatched job records.
    from optbench.engines.training import train_instance

    if device is not None:
        instance.to(device)
    optimizer = cls(instance.model.parameters(), **kwargs)
    looped = train_instance(
        instance,
        criterion,
        optimizer,
        steps,
        schedule=schedule,
        eval_every=eval_every,
        on_step=on_step,
    )
    return RunOutcome(looped.losses, looped.evaluations, looped.lrs, looped.curve)


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


# ------------------------------------------------------------ forward paths


# --------------------------------------------------------- per-run losses


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


def _groups(kwargs_list: list[dict], schedule_list: list) -> tuple[list[int], list[tuple]]:
    """Runs ordered so that each variant's runs are adjacent, and (kwargs, schedule,
    start, stop) per variant, in order of first appearance."""
    keys: dict[str, list[int]] = {}
    first: dict[str, tuple] = {}
    for run, (kwargs, schedule) in enumerate(zip(kwargs_list, schedule_list, strict=True)):
        key = repr((sorted(kwargs.items()), sorted((schedule or {}).items())))
        keys.setdefault(key, []).append(run)
        first.setdefault(key, (kwargs, schedule))
    order, groups, start = [], [], 0
    for key, runs in keys.items():
        order += runs
        groups.append((*first[key], start, start + len(runs)))
        start += len(runs)
    return order, groups


def _bytes_per_run(stacked: dict, optimizers: list, data, runs: int) -> int:
    """What the engine keeps for the whole training, per run: weights, gradients,
    optimizer state, and the run's own data (data shared by all runs counted once)."""

    def size(tensor):
        return tensor.numel() * tensor.element_size() if isinstance(tensor, torch.Tensor) else 0

    # Each weight's gradient has its shape: counted so, it is the same whether or
    # not this process took a step (a job resumed at its last step takes none).
    total = sum(2 * size(t) for t in stacked.values())
    total += sum(
        size(value)
        for optimizer in optimizers
        for state in optimizer.state.values()
        for value in state.values()
    )
    total += sum(size(t) for t in (data.inputs, data.targets, data.index))
    return total // runs


def _evaluate_runs(ordered, stacked, names, criterion, done: int, curves) -> None:
    """Each run's held-out metrics after ``done`` steps: its rows of the stacked
    weights copied into its own model, evaluated as the loop evaluates it."""
    with torch.no_grad():
        for position, instance in enumerate(ordered):
            for name in names:
                instance.model.get_parameter(name).copy_(stacked[name][position])
            metrics = instance.evaluate(criterion)
            if metrics is not None:
                curves[position].append({"step": done, **metrics})


def _vmap_gradients_exact(step_forward, per_run_loss, stacked, names, ordered, data, criterion):
    """Whether the vmapped forward and backward of step 0 give the first runs'
    gradients bit for bit as the loop computes them (CPU: the bits the loop's
    kernels give; elsewhere nothing is promised and the check is skipped)."""
    device = next(iter(stacked.values())).device
    if device.type != "cpu":
        return True
    probe = {name: tensor.detach().clone().requires_grad_() for name, tensor in stacked.items()}
    inputs, targets = data.batch(0)
    outputs = step_forward(probe, inputs)
    losses = outputs if per_run_loss is None else per_run_loss(outputs, targets)
    losses.backward(torch.ones_like(losses))
    for position, instance in enumerate(ordered[:2]):
        parameters = [instance.model.get_parameter(name) for name in names]
        if any(p.device != device for p in parameters):
            return True
        loss = instance.loss(criterion, *instance.batch(0))
        gradients = torch.autograd.grad(loss, parameters)
        for name, gradient in zip(names, gradients, strict=True):
            if not torch.equal(gradient, probe[name].grad[position]):
                return False
    return True


def _fallback(
    instances,
    criterion,
    cls,
    kwargs_list,
    steps,
    device,
    reason,
    schedule_list,
    eval_every=0,
    on_step=None,
) -> EngineResult:
    started = time.perf_counter()
    runs = train_loop(
        instances, criterion, cls, kwargs_list, steps, device, schedule_list, eval_every, on_step
    )
    return EngineResult(runs, "loop", reason, time.perf_counter() - started)


def _first_order_steps(
    views,
    stacked,
    names,
    data,
    steps,
    losses_of,
    evaluate_held_out,
    eval_every,
    on_step,
    checkpoint=None,
    curves=None,
):
    """Train an element-wise optimizer's runs: each step one forward and backward of
    all runs and one optimizer step per variant. Returns (each run's losses, each
    run's evaluations per step, each variant's learning rates, seconds, extras)."""
    first = stacked[names[0]]
    runs = first.shape[0]
    lrs: list[list[float | None]] = [[] for _ in views]  # Python floats: no wait for the device
    recorded = torch.empty(steps, runs, dtype=first.dtype, device=first.device)
    ones = torch.ones(runs, dtype=recorded.dtype, device=first.device)
    evaluate_after = evaluation_steps(steps, eval_every)
    untimed = 0.0
    state = checkpoints.BatchedState(stacked, views, recorded, lrs, curves)
    first = 0 if checkpoint is None else checkpoint.resume(state, on_step)
    started = time.perf_counter()
    for step in range(first, steps):
        for tensor in stacked.values():
            tensor.grad = None
        losses = losses_of(*data.batch(step))
        # A gradient of exactly 1 per run: each run's gradient is its own.
        losses.backward(ones)
        for (optimizer, rows, rates), variant_lrs in zip(views, lrs, strict=True):
            for view, name, start, stop in rows:
                view.grad = stacked[name].grad[start:stop]
            rates.before(step)
            variant_lrs.append(rates.current())
            optimizer.step()
            rates.after()
        recorded[step] = losses.detach()
        if on_step is not None:
            on_step(runs)
        if step + 1 in evaluate_after:
            paused = time.perf_counter()
            evaluate_held_out(step + 1)
            untimed += time.perf_counter() - paused
        if checkpoint is not None:
            checkpoint.boundary(step + 1, state, runs)
    per_run = recorded.T.tolist()  # the one copy to the host
    seconds = time.perf_counter() - started - untimed
    return per_run, [[1] * steps for _ in range(runs)], lrs, seconds, {}


def _lbfgs_steps(
    views, stacked, names, data, steps, losses_of, evaluate_held_out, eval_every, on_step
):
    """Train torch.optim.LBFGS's runs with the batched L-BFGS (batched_lbfgs.py):
    each run its own history, step length, line search and stopping tests. The
    variants' LBFGS objects hold their hyper-parameters and schedules only."""
    first = stacked[names[0]]
    runs, dtype, device = first.shape[0], first.dtype, first.device
    sizes = [stacked[name][0].numel() for name in names]
    weights = torch.cat([stacked[name].detach().reshape(runs, -1) for name in names], 1)
    groups = [optimizer.param_groups[0] for optimizer, *_ in views]
    runs_of = [rows[0][3] - rows[0][2] for _, rows, _ in views]
    settings = batched_lbfgs.Settings.from_groups(groups, runs_of, dtype, device)
    lbfgs = batched_lbfgs.BatchedLBFGS(settings, runs, weights.shape[1], dtype, device)
    ones = torch.ones(runs, dtype=dtype, device=device)

    def load() -> None:
        """The flat weights into the stacked parameters the forward pass reads."""
        with torch.no_grad():
            for name, part in zip(names, weights.split(sizes, 1), strict=True):
                stacked[name].copy_(part.view_as(stacked[name]))

    lrs: list[list[float | None]] = [[] for _ in views]
    recorded = torch.empty(steps, runs, dtype=dtype, device=device)
    counted = torch.empty(steps, runs, dtype=torch.int64, device=device)
    evaluate_after = evaluation_steps(steps, eval_every)
    untimed = 0.0
    started = time.perf_counter()
    for step in range(steps):
        inputs, targets = data.batch(step)
        for (_, _, rates), variant_lrs in zip(views, lrs, strict=True):
            rates.before(step)
            variant_lrs.append(rates.current())
        rates_now = [float(group["lr"]) for group in groups]
        settings.lr = torch.tensor(
            [lr for lr, n in zip(rates_now, runs_of, strict=True) for _ in range(n)],
            dtype=dtype,
            device=device,
        )

        def evaluate(inputs=inputs, targets=targets):
            load()
            for tensor in stacked.values():
                tensor.grad = None
            with torch.enable_grad():
                losses = losses_of(inputs, targets)
                losses.backward(ones)
            gradient = torch.cat([stacked[name].grad.reshape(runs, -1) for name in names], 1)
            return losses.detach(), gradient

        recorded[step], counted[step] = lbfgs.step(evaluate, weights)
        for _, _, rates in views:
            rates.after()
        if on_step is not None:
            on_step(runs)
        if step + 1 in evaluate_after:
            paused = time.perf_counter()
            load()
            evaluate_held_out(step + 1)
            untimed += time.perf_counter() - paused
    load()
    per_run, evaluations = recorded.T.tolist(), counted.T.tolist()
    seconds = time.perf_counter() - started - untimed
    return per_run, evaluations, lrs, seconds, {"state_bytes": lbfgs.state_bytes()}


# The batched L-BFGS keeps each run's history of curvature pairs: 2 x
# history_size x the model's weights per run. Runs beyond this budget train in
# further batches, one after another.
LBFGS_HISTORY_BYTES = 512 * 2**20
# Above this history per run, the batched two-loop recursion streams the
# histories from memory and is no faster than the loop, whose one history
# stays in cache (tools/benchmark.py --only lbfgs: 2x faster at 400 weights,
# 0.75x at 2,410, with the default history of 100 pairs).
LBFGS_BATCHED_HISTORY_MAX = 2**20


def _lbfgs_history(instance, kwargs_list: list[dict]) -> int:
    """The largest history one run of the cell keeps, in bytes."""
    weight_bytes = sum(p.numel() * p.element_size() for p in instance.model.parameters())
    return 2 * max(kwargs.get("history_size", 100) for kwargs in kwargs_list) * weight_bytes


def _lbfgs_parts(history: int, kwargs_list: list[dict]) -> list[list[int]]:
    """The runs of an L-BFGS cell in batches: one line search per batch (with or
    without), and no more runs than fit ``LBFGS_HISTORY_BYTES``."""
    by_search: dict[object, list[int]] = {}
    for run, kwargs in enumerate(kwargs_list):
        by_search.setdefault(kwargs.get("line_search_fn"), []).append(run)
    fit = max(1, LBFGS_HISTORY_BYTES // max(1, history))
    return [
        runs[start : start + fit]
        for runs in by_search.values()
        for start in range(0, len(runs), fit)
    ]


def _in_parts(parts: list[list[int]], train) -> EngineResult:
    """``train(runs)`` for each part of a cell's runs, merged in the runs' order."""
    outcomes: dict[int, RunOutcome] = {}
    results = []
    for runs in parts:
        result = train(runs)
        results.append(result)
        outcomes.update(zip(runs, result.runs, strict=True))
    first = results[0]
    details = {**first.details, "runs": len(outcomes), "batches": len(parts)}
    return EngineResult(
        [outcomes[run] for run in range(len(outcomes))],
        first.engine,
        first.reason,
        sum(result.seconds for result in results),
        details,
    )


def train_batched(
    instances: list[Instance],
    criterion,
    optimizer_class,
    optimizer_kwargs,
    steps: int,
    device=None,
    forward: str = "auto",
    exact_only: bool = False,
    probed: str | None = None,
    schedules=None,
    eval_every: int = 0,
    on_step=None,
    checkpoint=None,
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
    the loop's bit for bit on this CPU (``calibrate``), train in the loop
    instead (``engine: auto``); else train batched at float32 rounding level
    and say so in ``details["kernels_exact"]`` (``engine: batched``).
    ``probed``: for a class outside torch.optim, the reason the training job's
    engine choice gave with a passed run-independence probe (engines/probe.py),
    which stands in for the policy's list of element-wise classes; None: the
    engine asks batch_policy.choose_engine itself. ``schedules``: the learning-rate schedule
    (optbench.schedules) of all runs, or one per run (None: none); runs of one
    variant share it, and its rates are applied to the variant's optimizer.
    ``eval_every``: take each run's held-out metrics every that many steps and
    after the last (0: never), from its weights at that step, untimed.
    ``on_step(n)``: called after each step with the run-steps it finished.
    ``checkpoint`` (checkpoints.Unit): the first-order batched loop starts where
    a saved state ends and offers a save at each step boundary (the batched
    L-BFGS and the loop fallback save between chunks only).

    Returns the runs in the order given, each as the loop records it, and the
    engine that ran with its reason. On return every instance is on
    ``device`` and its model holds that run's final weights, as after the loop.
    """
    if forward not in ("auto", "bmm", "vmap"):
        raise ValueError(f"forward must be 'auto', 'bmm' or 'vmap', got {forward!r}")
    if not instances:
        return EngineResult([], "batched", "no runs", 0.0)
    cls = optimizers.resolve(optimizer_class)
    kwargs_list = _per_run(optimizer_kwargs, len(instances), "optimizer kwargs")
    schedule_list = _per_run(schedules, len(instances), "schedules")
    kind = instances[0].kind
    loss_name = None if criterion is None else type(criterion).__name__
    loss_kwargs = None if criterion is None else {"reduction": criterion.reduction}
    if probed is None:  # called directly: the one decision, as the job would make it
        choice = batch_policy.choose_engine("batched", cls.__name__, kind, loss_name, loss_kwargs)
        ok, reason = choice.batched, choice.reason
    else:  # the job chose it, with a passed run-independence probe (engines/probe.py)
        ok, reason = True, probed
    lbfgs = cls is torch.optim.LBFGS
    if ok and optimizers.needs_closure(cls) and not lbfgs:
        ok, reason = False, f"optimizer {cls.__name__} runs in the per-run loop: it needs a closure"
    # exact_only is engine auto's promise at the level of kernels; of auto's
    # policy rules only the optimizer's (L-BFGS) concerns a cell's whole run here.
    kept = batch_policy.kept_in_loop_under_auto(cls.__name__) if ok and exact_only else None
    if kept:
        ok, reason = False, kept
    if ok and any(i.kind != kind for i in instances):
        ok, reason = False, "the runs are of different problem kinds"
    layout = _same_layout(instances) if ok else None
    if layout:
        ok, reason = False, f"runs in the per-run loop: {layout}"

    def in_the_loop(reason: str) -> EngineResult:
        return _fallback(
            instances,
            criterion,
            cls,
            kwargs_list,
            steps,
            device,
            reason,
            schedule_list,
            eval_every,
            on_step,
        )

    if not ok:
        return in_the_loop(reason)
    history = _lbfgs_history(instances[0], kwargs_list) if lbfgs else 0
    if history > LBFGS_BATCHED_HISTORY_MAX:
        return in_the_loop(
            f"optimizer LBFGS runs in the per-run loop: its history of {history / 2**20:.1f} MiB "
            f"per run is above {LBFGS_BATCHED_HISTORY_MAX / 2**20:.0f} MiB, where the batched "
            "L-BFGS reads every run's history from memory and is no faster than the loop"
        )
    parts = _lbfgs_parts(history, kwargs_list) if lbfgs else []
    if len(parts) > 1:
        return _in_parts(
            parts,
            lambda runs: train_batched(
                [instances[i] for i in runs],
                criterion,
                cls,
                [kwargs_list[i] for i in runs],
                steps,
                device,
                forward,
                exact_only,
                probed,
                [schedule_list[i] for i in runs],
                eval_every,
                on_step,
            ),
        )
    if device is None:
        device = _device_of(instances[0].model)
    device = torch.device(device)

    order, groups = _groups(kwargs_list, schedule_list)
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
    bmm = None if forward == "vmap" or buffers or objective else BmmForward.build(model)
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
            return in_the_loop(reason)
    per_run_loss = None if objective else PerRunLoss(criterion.to(device), runs)
    if bmm is None:
        step_forward = vmap_forward(model, buffers, objective)
        try:
            with torch.no_grad():
                step_forward(stacked, data.batch(0)[0])
        except Exception as error:  # a model vmap cannot trace runs in the loop
            reason = f"runs in the per-run loop: torch.func.vmap cannot batch the model ({error})"
            return in_the_loop(reason)
        if exact_only and not _vmap_gradients_exact(
            step_forward, per_run_loss, stacked, names, ordered, data, criterion
        ):
            reason = (
                "runs in the per-run loop: torch.func.vmap's batched kernels do not give the "
                "loop's gradients bit for bit for this model (its matrix products or "
                "convolutions round in another order)"
            )
            return in_the_loop(reason)
    views = []  # (optimizer, [(view, name, start, stop)], its learning rates)
    for kwargs, schedule, start, stop in groups:
        rows = [(stacked[name].detach()[start:stop], name, start, stop) for name in names]
        optimizer = cls([view for view, *_ in rows], **kwargs)
        views.append((optimizer, rows, LearningRates(optimizer, schedule, steps)))

    def losses_of(inputs, targets):
        outputs = step_forward(stacked, inputs)
        return outputs if objective else per_run_loss(outputs, targets)

    def evaluate_held_out(done: int) -> None:
        _evaluate_runs(ordered, stacked, names, criterion, done, curves)

    curves: list[list[dict]] = [[] for _ in range(runs)]
    if cls is torch.optim.LBFGS:
        per_run, evaluations, lrs, seconds, extra = _lbfgs_steps(
            views, stacked, names, data, steps, losses_of, evaluate_held_out, eval_every, on_step
        )
    else:
        per_run, evaluations, lrs, seconds, extra = _first_order_steps(
            views,
            stacked,
            names,
            data,
            steps,
            losses_of,
            evaluate_held_out,
            eval_every,
            on_step,
            checkpoint,
            curves,
        )

    with torch.no_grad():
        for position, instance in enumerate(ordered):
            instance.to(device)
            for name in names:
                instance.model.get_parameter(name).copy_(stacked[name][position])
    outcomes: list[RunOutcome | None] = [None] * runs
    variant_of = [v for v, (*_, start, stop) in enumerate(groups) for _ in range(start, stop)]
    for position, run in enumerate(order):
        outcomes[run] = RunOutcome(
            per_run[position], evaluations[position], lrs[variant_of[position]], curves[position]
        )
    details = {
        "forward": path,
        "variants": len(groups),
        "runs": runs,
        "bytes_per_run": _bytes_per_run(stacked, [o for o, *_ in views], data, runs)
        + extra.get("state_bytes", 0) // runs,
    }
    if probed is not None:
        details["probe"] = probed
    if bmm is not None:
        details["kernels"] = bmm.describe()
        details["kernels_exact"] = bmm.exact()
    return EngineResult(outcomes, "batched", reason, seconds, details)
