"""One training run: a problem drawn for a seed, trained by one optimizer variant.

The loop is the article's (docs/reference-experiment.md): each step zero_grad, forward, loss,
backward, step, recording the loss of that forward pass. Optimizers whose
``step`` requires a closure (L-BFGS) get one; it re-evaluates the step's batch
and is counted, so every step records how many loss evaluations it made.

Imports torch and the standard library only (and the problem's own file): it
runs in every training job, where start-up time is most of the cost.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from optbench import problems
from optbench.engines import checkpoints, optimizers, scheduling


class RunError(RuntimeError):
    """A run cannot start; the message names the config entry and the fix."""


FIRST_STEP = " in the first training step"


@dataclass
class RunResult:
    seed: int
    losses: list[float]  # the loss before each step's update
    seconds: float
    evaluations: list[int] = field(default_factory=list)  # loss evaluations per step
    heldout: dict | None = None  # held-out loss/accuracy after the last step, where there is one
    lrs: list[float | None] = field(default_factory=list)  # the learning rate of each step
    info: dict = field(default_factory=dict)  # facts about the problem's draw (Instance.info)
    # Held-out metrics every eval_every steps: {"step": steps done, **Instance.evaluate}.
    curve: list[dict] = field(default_factory=list)


@dataclass
class LoopResult:
    """What the per-run loop records (``train_instance``)."""

    losses: list[float]  # the loss of each step, before that step's update
    evaluations: list[int]  # loss evaluations made by each step
    seconds: float  # training time, held-out evaluations excluded
    lrs: list[float | None]  # the learning rate each step used
    curve: list[dict]  # held-out metrics every eval_every steps (evaluation_curve)


def resolve_device(requested: str) -> torch.device:
    """The torch device for a config value: auto, cpu, cuda or cuda:N."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        reason = (
            "this torch build has no CUDA support"
            if not torch.backends.cuda.is_built()
            else "no GPU is visible (check CUDA_VISIBLE_DEVICES and the driver)"
        )
        raise RunError(
            f"config key device: {requested!r} was asked for, but {reason}. "
            "Fix: set device to auto or cpu, or run where a GPU is available."
        )
    device = torch.device(requested)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise RunError(
            f"config key device: {requested!r} was asked for, but only "
            f"{torch.cuda.device_count()} GPU(s) are visible. Fix: use an index below "
            f"{torch.cuda.device_count()} or device: cuda."
        )
    return device


def _as_tuples(value):
    """YAML has no tuples; torch hyper-parameters such as betas are documented as tuples."""
    if isinstance(value, list):
        return tuple(_as_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _as_tuples(v) for k, v in value.items()}
    return value


def _component_class(kind: str, name: str, cls_name: str, module, base):
    cls = getattr(module, cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, base) and cls is not base):
        raise RunError(
            f"config key {kind}.{name}.class: {cls_name!r} is not a class in "
            f"{module.__name__} of kind {base.__name__}. Fix: use a {module.__name__} "
            f"{'optimizer' if kind == 'optimizers' else 'loss'} class name."
        )
    return cls


def _entry_error(kind: str, entry: dict, error: BaseException, when: str = "") -> RunError:
    """The config entry whose class or kwargs torch refused, with torch's own reason."""
    module = "torch.optim" if kind == "optimizers" else "torch.nn"
    qualified = entry["class"] if "." in entry["class"] else f"{module}.{entry['class']}"
    if kind == "optimizers" and entry.get("base") is not None:
        qualified += f" around {entry['base']}"
    # An assert without text has only its type; torch's own full stop is dropped.
    reason = (str(error) or type(error).__name__).rstrip(".")
    # A failure in use can be the class itself (SparseAdam on dense weights).
    fix = "the kwargs of this entry" + (" or choose another class" if when else "")
    return RunError(
        f"config key {kind}.{entry['name']}: {qualified}"
        f"(**{entry['kwargs']}) failed{when}: {reason}. Fix {fix}."
    )


# The constructors receive nothing but the entry's kwargs (and, for optimizers,
# the model's parameters), so any exception they raise is the entry's: torch
# reports bad values as ValueError, but also as RuntimeError (fused with
# foreach) or IndexError (a betas pair with one value).


def build_loss(entry: dict) -> torch.nn.Module:
    cls = _component_class(
        "losses", entry["name"], entry["class"], torch.nn, torch.nn.modules.loss._Loss
    )
    try:
        return cls(**_as_tuples(entry["kwargs"]))
    except Exception as error:
        raise _entry_error("losses", entry, error) from error


def optimizer_class(entry: dict, optimizers_dir=None) -> type:
    """The class of an optimizer entry (engines.optimizers, the one lookup)."""
    try:
        return optimizers.resolve(entry["class"], optimizers_dir)
    except optimizers.UnknownOptimizer as error:
        raise RunError(
            f"config key optimizers.{entry['name']}.class: {error}. Fix: use a torch.optim "
            "optimizer class name, or module.Class of an installed package or of optimizers/."
        ) from None


def optimizer_kwargs(entry: dict) -> dict:
    """The keyword arguments an optimizer entry's class is called with."""
    return _as_tuples(entry["kwargs"])


# Parameter roles of an entry's ``groups`` (e.g. Muon on the weight matrices,
# its AdamW part on the rest): each role's parameters form one parameter group.
ROLES = {
    "matrices": lambda parameter: parameter.ndim >= 2,
    "others": lambda parameter: parameter.ndim < 2,
}


def parameter_groups(entry: dict, parameters):
    """The parameters as the optimizer takes them: as they are, or, for an entry
    with ``groups``, one group per role (in ROLES order) with that role's kwargs;
    a role with no parameter in this model is left out."""
    groups = entry.get("groups")
    parameters = list(parameters)
    if not groups:
        return parameters
    made = []
    for role, belongs in ROLES.items():
        members = [p for p in parameters if belongs(p)]
        if members and role not in groups:
            # Left out, they would silently never train.
            raise RunError(
                f"config key optimizers.{entry['name']}.groups: the model has {role} "
                f"parameters, but groups lists no {role!r} role. Fix: add {role}: {{...}} "
                "(its kwargs), or use an optimizer that trains every parameter"
            )
        if members:
            made.append({"params": members, **_as_tuples(groups[role])})
    return made


def base_class(entry: dict, optimizers_dir=None) -> type | None:
    """The base optimizer class a wrapper entry's ``base:`` names (None: no base)."""
    if entry.get("base") is None:
        return None
    try:
        return optimizers.resolve(entry["base"], optimizers_dir)
    except optimizers.UnknownOptimizer as error:
        raise RunError(
            f"config key optimizers.{entry['name']}.base: {error}. Fix: name the optimizer "
            "class the wrapper wraps, as class: is written (AdamW, pytorch_optimizer.Lion)."
        ) from None


def build_optimizer(entry: dict, parameters, optimizers_dir=None) -> torch.optim.Optimizer:
    cls = optimizer_class(entry, optimizers_dir)
    base = base_class(entry, optimizers_dir)
    try:
        return optimizers.construct(
            cls, parameter_groups(entry, parameters), _as_tuples(entry["kwargs"]), base
        )
    except Exception as error:
        raise _entry_error("optimizers", entry, error) from error


def _first_loss_error(spec: dict, error: BaseException) -> RunError:
    """A failure of the first forward/backward pass: the loss entry's, or the problem's."""
    if spec["loss"] is not None:
        return _entry_error("losses", spec["loss"], error, FIRST_STEP)
    name = spec["problem"]["name"]
    return RunError(
        f"config key problems.{name}: the objective failed{FIRST_STEP}: {error}. "
        "Fix the kwargs of this entry or the problem's file."
    )


def build_instance(spec: dict, seed: int):
    """The problem of ``spec`` drawn for ``seed`` (on the CPU generators)."""
    problem = spec["problem"]
    user_dir = Path(spec["problems_dir"]) if spec.get("problems_dir") else None
    try:
        return problems.build(problem["problem"], seed, spec["steps"], problem["kwargs"], user_dir)
    except problems.ProblemError as error:
        raise RunError(f"config key problems.{problem['name']}: {error}") from error


def train_one(
    spec: dict, seed: int, device: torch.device, on_step=None, checkpoint=None
) -> RunResult:
    """One seeded run: the per-step losses, recorded before each update.
    ``checkpoint``: its job's hook (checkpoints.Unit), None outside a job."""
    # The loss draws no random numbers, so building it first keeps each
    # problem's documented draw order (the article's for the linear problem).
    criterion = None if spec["loss"] is None else build_loss(spec["loss"])
    instance = build_instance(spec, seed).to(device)
    optimizer = build_optimizer(
        spec["optimizer"], instance.model.parameters(), spec.get("optimizers_dir")
    )
    looped = train_instance(
        instance,
        criterion,
        optimizer,
        spec["steps"],
        spec,
        spec["optimizer"].get("schedule"),
        spec.get("eval_every", 0),
        on_step,
        checkpoint,
    )
    heldout = instance.evaluate(criterion)
    return RunResult(
        seed,
        looped.losses,
        looped.seconds,
        looped.evaluations,
        heldout,
        looped.lrs,
        instance.info,
        looped.curve,
    )


def evaluation_steps(steps: int, every: int) -> set[int]:
    """After which numbers of steps done the held-out metrics are taken: every
    ``every`` steps and after the last (none when ``every`` is 0)."""
    return set(range(every, steps + 1, every)) | {steps} if every else set()


def evaluated_at(instance, criterion, optimizer, done: int) -> dict | None:
    """The held-out metrics after ``done`` steps, at the optimizer's evaluation point
    (train()/eval() optimizers are switched for the evaluation and back).

    Evaluating never changes training: eval() then train() is not an exact round
    trip in floating point (schedule-free optimizers interpolate the weights each
    way), so the training-point weights are saved before and put back after.
    """
    switch = optimizer is not None and optimizers.has_train_eval(optimizer)
    if switch:
        weights = [p for group in optimizer.param_groups for p in group["params"]]
        saved = [p.detach().clone() for p in weights]
        optimizer.eval()
    try:
        metrics = instance.evaluate(criterion)
    finally:
        if switch:
            optimizer.train()  # back to train mode (the optimizer's own flags) ...
            with torch.no_grad():
                for weight, value in zip(weights, saved, strict=True):
                    weight.copy_(value)  # ... at the exact training-point bits
    return None if metrics is None else {"step": done, **metrics}


def learning_rates(optimizer, schedule: dict | None, steps: int, entry_name: str | None):
    """The schedule driving ``optimizer``; a RunError naming the entry where it cannot."""
    key = f"optimizers.{entry_name}.schedule" if entry_name else "schedule"
    try:
        return scheduling.LearningRates(optimizer, schedule, steps, key)
    except scheduling.ScheduleRunError as error:
        raise RunError(str(error)) from error


# One step function per closure kind (optimizers.CLOSURE_KINDS): each takes the
# optimizer and the step's closure (zero_grad, forward, loss, backward; counted)
# and returns the loss recorded for the step, the one at the weights before it.
# A closure handed to step() computes gradients even where step() runs under
# torch.no_grad() and calls it as it is (AliG, the SAM family's second pass).


def step_gradients_first(optimizer, closure):
    """closure none: the gradients, then ``step()``."""
    loss = closure()
    optimizer.step()
    return loss


def step_evaluates(optimizer, closure):
    """closure evaluates (L-BFGS, AliG): ``step(closure)`` evaluates the loss itself;
    the value it returns is the closure's first evaluation."""
    return optimizer.step(torch.enable_grad()(closure))


def step_second_pass(optimizer, closure):
    """closure second_pass (the SAM family): the gradients, then ``step(closure)``,
    which uses them and re-evaluates the loss (at its perturbed weights)."""
    loss = closure()
    optimizer.step(torch.enable_grad()(closure))
    return loss


STEPS = {
    "none": step_gradients_first,
    "evaluates": step_evaluates,
    "second_pass": step_second_pass,
}


def train_instance(
    instance,
    criterion,
    optimizer,
    steps: int,
    spec: dict | None = None,
    schedule: dict | None = None,
    eval_every: int = 0,
    on_step=None,
    checkpoint=None,
) -> LoopResult:
    """The per-run loop on a built instance and optimizer (``LoopResult``): the
    losses, evaluations, seconds, each step's learning rate and, every
    ``eval_every`` steps, the held-out metrics (untimed). ``on_step(1)`` is
    called after each step (a job's progress file, optbench.progress).

    The one loop of the project: ``train_one`` and the batched engine's
    fallback (``batched.train_loop``) both run it. With ``spec``, a failure of
    the first step is a RunError naming the config entry; without, torch's own.
    ``checkpoint`` (checkpoints.Unit): the loop starts where a saved state ends
    and offers a save at each step boundary.
    """
    rates = learning_rates(optimizer, schedule, steps, spec and spec["optimizer"]["name"])
    lrs = []
    curve = []
    evaluate_after = evaluation_steps(steps, eval_every)
    untimed = 0.0
    protocol = optimizers.of(optimizer)
    take_step = STEPS[protocol.closure]
    create_graph = protocol.create_graph
    train_eval = protocol.train_eval
    if train_eval:
        optimizer.train()  # schedule-free: steps are taken at the training point
    # Losses stay on the device and are copied to the host once, after the
    # loop: reading each one would make every step wait for the GPU.
    recorded = []
    evaluations = [0] * steps
    completed = [False] * steps  # whether the step's last closure evaluation finished
    state = checkpoints.LoopState(
        instance.model, optimizer, rates, recorded, evaluations, lrs, curve
    )
    first = 0 if checkpoint is None else checkpoint.resume(state, on_step)
    started = time.perf_counter()
    for step in range(first, steps):
        inputs, targets = instance.batch(step)
        rates.before(step)
        lrs.append(rates.current())

        def closure(inputs=inputs, targets=targets, step=step):
            evaluations[step] += 1
            completed[step] = False
            optimizer.zero_grad()
            loss = instance.loss(criterion, inputs, targets)
            if create_graph:
                with warnings.catch_warnings():
                    # torch warns of a parameter-gradient cycle; zero_grad sets
                    # every gradient to None before the next step, which breaks it.
                    warnings.filterwarnings("ignore", "Using backward\\(\\) with create_graph")
                    loss.backward(create_graph=True)
            else:
                loss.backward()
            completed[step] = True
            return loss

        # Some values torch accepts at construction fail at first use (a
        # reduction it does not know, reduction='none', a Huber delta of 0);
        # the first step names the entry. Later failures are not the config's,
        # and out-of-memory never is. A try block costs nothing unless it raises.
        named = spec is not None and not step
        try:
            loss = take_step(optimizer, closure)
        except Exception as error:
            if not named or isinstance(error, torch.OutOfMemoryError):
                raise
            # The loop's own forward/backward pass failed (not one the optimizer
            # asked for): the loss entry's or the problem's; anything else the
            # optimizer entry's.
            if protocol.closure != "evaluates" and evaluations[step] == 1 and not completed[step]:
                raise _first_loss_error(spec, error) from error
            raise _entry_error("optimizers", spec["optimizer"], error, FIRST_STEP) from error
        rates.after()
        recorded.append(loss.detach())
        if on_step is not None:
            on_step(1)
        if step + 1 in evaluate_after:
            paused = time.perf_counter()
            point = evaluated_at(instance, criterion, optimizer if train_eval else None, step + 1)
            curve += [point] if point else []
            untimed += time.perf_counter() - paused
        if checkpoint is not None:
            checkpoint.boundary(step + 1, state)
    losses = torch.stack(recorded).tolist() if recorded else []
    seconds = time.perf_counter() - started - untimed
    if train_eval:
        optimizer.eval()  # the weights held-out metrics are taken at
    if create_graph:
        optimizer.zero_grad(set_to_none=True)  # frees the last step's graph
    return LoopResult(losses, evaluations, seconds, lrs, curve)


def environment(device: torch.device) -> dict:
    """Which torch build ran, so results show whether CUDA was really used."""
    on_cuda = device.type == "cuda"
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if on_cuda else "cpu",
        "torch_version": torch.__version__,
        "torch_cuda_version": torch.version.cuda,
        "cuda_built": torch.backends.cuda.is_built(),
        "cuda_available": torch.cuda.is_available(),
        # What the scheduler handed this job (Slurm sets it from --gpus); None when unset.
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
