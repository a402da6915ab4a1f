"""Which cells the batched engine may train together; torch-free, so planning can ask too.

The batched engine (``batched.py``) stacks the runs of one (problem, loss,
optimizer) cell into one tensor per model parameter, ``[runs, ...]``, and
steps them with one optimizer call. That keeps the runs independent only where
the optimizer acts on each element of a tensor by itself (its state and update
of element ``i`` depend on element ``i`` of the parameter and gradient only,
and on per-group scalars such as the step count), and where the loss can be
reduced per run so that each run's gradient is exactly its solo gradient.
``can_batch`` says whether a cell qualifies and ``choose_engine`` which engine
trains a group of runs under config ``engine``: the one decision, which the
config check (engine: batched), the dry run's estimate, the training job and
the batched engine itself all ask. Everything else runs in the per-run loop,
and the caller logs the reason and records it in the sidecar.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# Optimizers whose update is element by element within each tensor: stacking
# runs along a new leading dimension changes nothing a run sees. Checked by
# tests/test_batched.py against the per-run loop for each of them.
ELEMENTWISE = (
    "SGD",
    "Adam",
    "AdamW",
    "NAdam",
    "RAdam",
    "Adamax",
    "RMSprop",
    "Adagrad",
    "Adadelta",
    "Rprop",
    "ASGD",
)

# torch.optim classes that couple the elements of a tensor (or all the
# parameters), so that in a stacked tensor one run would steer another.
COUPLED = {
    "Adafactor": (
        "it factorises the second moment over a tensor's last two dimensions and scales the "
        "step by the norm of the whole tensor, so a stacked tensor would mix the runs"
    ),
    "Muon": (
        "it orthogonalises each 2-D weight matrix as a whole (Newton-Schulz) and accepts 2-D "
        "parameters only, so a stacked [runs, out, in] tensor is neither allowed nor per run"
    ),
    "SparseAdam": "it needs sparse gradients; the loop reports the problem at the first step",
}

# Closure optimizers with a batched form of their own: torch.optim.LBFGS, whose
# line search and history the batched L-BFGS keeps per run
# (engines/batched_lbfgs.py). It agrees with the loop to float32 rounding, not
# bit for bit (its dot products sum in another order), so ``engine: auto``,
# which promises the loop's bits, keeps it in the loop.
CLOSURE_BATCHED = ("LBFGS",)
LBFGS_UNDER_AUTO = (
    "optimizer LBFGS runs in the per-run loop: engine auto promises the loop's bits, and the "
    "batched L-BFGS agrees with torch.optim.LBFGS to float32 rounding only (its dot products "
    "sum in another order); engine: batched trains it batched"
)

# How a loss class is reduced per run so that each run's gradient is bit for
# bit the gradient of its own mean (or sum). torch's backward kernels apply the
# 1/n of a mean in two different places, and matching the place matters:
#   "inside": the kernel folds 1/n into its product (mse, l1, huber, smooth l1),
#             as the backward of sum(none)/n also does;
#   "after":  the kernel divides the finished gradient by n (BCE with logits),
#             so the engine sums per run and divides the logits' gradient by n;
#   "samples": the loss gives one value per sample (cross entropy, multi margin)
#             and the mean divides by the sample count or the targets' weights.
PER_RUN_REDUCTION = {
    "MSELoss": "inside",
    "L1Loss": "inside",
    "HuberLoss": "inside",
    "SmoothL1Loss": "inside",
    "BCEWithLogitsLoss": "after",
    "CrossEntropyLoss": "samples",
    "MultiMarginLoss": "samples",
}

REDUCTIONS = ("mean", "sum")
# A loss of one value per sample is summed over the batch by torch in a cascade
# order and by the engine in another, so its recorded losses differ from the
# loop's at float32 rounding (measured 1e-7 on digits_mlp from step 1 on; the
# verification of engine auto found it, engines/verification.py): auto, which
# promises the loop's bits, keeps it in the loop rather than train it twice.
SAMPLE_LOSSES_UNDER_AUTO = (
    "loss {loss} runs in the per-run loop: engine auto promises the loop's bits, and the "
    "batched engine sums its per-sample losses in another order than torch (float32 "
    "rounding, about 1e-7); engine: batched trains it batched"
)


def loss_batchable(
    problem_kind: str, loss_class_name: str | None = None, loss_kwargs: dict | None = None
) -> tuple[bool, str]:
    """(whether the loss can be reduced run by run, why): the loss half of ``can_batch``."""
    if problem_kind == "objective":
        if loss_class_name is not None:
            return False, f"an objective problem takes no loss, got {loss_class_name}"
        return True, "objective per run"
    if loss_class_name not in PER_RUN_REDUCTION:
        return False, (
            f"loss {loss_class_name} runs in the per-run loop: the batched engine has no "
            f"per-run reduction for it (it has: {', '.join(PER_RUN_REDUCTION)})"
        )
    reduction = (loss_kwargs or {}).get("reduction", "mean")
    if reduction not in REDUCTIONS:
        return False, (
            f"loss {loss_class_name} with reduction={reduction!r} runs in the per-run loop: "
            f"the batched engine reduces per run with 'mean' or 'sum' only"
        )
    return True, f"{loss_class_name} reduced per run ({reduction})"


def batched_refusal(cells: list[str], reason: str) -> str:
    """The message refusing ``engine: batched`` for ``cells`` (problem/loss/optimizer),
    which the config check and the training job both give."""
    return (
        f"config key engine: batched, but {', '.join(dict.fromkeys(cells))} cannot be: "
        f"{reason}. Fix: set engine to auto (batched where it is safe, the per-run loop "
        "elsewhere) or leave these entries out."
    )


def needs_probe(optimizer_class_name: str) -> bool:
    """A class from a package or a file (module.Class): batched only after the
    run-independence probe (engines/probe.py) passes, which the config check
    runs under engine batched and the training job under auto and batched
    (``choose_engine``'s ``probe``)."""
    return "." in optimizer_class_name


def can_batch(
    optimizer_class_name: str,
    problem_kind: str,
    loss_class_name: str | None = None,
    loss_kwargs: dict | None = None,
) -> tuple[bool, str]:
    """(whether the batched engine may train this cell, why), without importing torch.

    ``optimizer_class_name`` is a torch.optim class name, ``problem_kind`` a
    problem's KIND, ``loss_class_name`` the torch.nn loss class (None for an
    objective problem) and ``loss_kwargs`` its keyword arguments (only
    ``reduction`` matters here). The reason is one sentence meant for the job's
    log and the run's sidecar.
    """
    if optimizer_class_name in COUPLED:
        return False, (
            f"optimizer {optimizer_class_name} runs in the per-run loop: "
            f"{COUPLED[optimizer_class_name]}"
        )
    if needs_probe(optimizer_class_name):
        return False, (
            f"optimizer {optimizer_class_name} runs in the per-run loop: a class from a "
            "package or a file is batched only where the run-independence probe passes "
            "(engine auto or batched)"
        )
    if optimizer_class_name not in ELEMENTWISE + CLOSURE_BATCHED:
        return False, (
            f"optimizer {optimizer_class_name} runs in the per-run loop: it is not known to "
            f"update each element of a tensor independently (batched: {', '.join(ELEMENTWISE)})"
        )
    ok, reason = loss_batchable(problem_kind, loss_class_name, loss_kwargs)
    if not ok:
        return False, reason
    if optimizer_class_name in CLOSURE_BATCHED:
        how = "each run its own history, step length and line search (batched L-BFGS)"
        return True, f"batched: {optimizer_class_name}, {how}; {reason}"
    return True, f"batched: {optimizer_class_name} is element-wise; {reason}"


def kept_in_loop_under_auto(
    optimizer_class_name: str, loss_class_name: str | None = None
) -> str | None:
    """Why engine auto, which promises the loop's bits, keeps a batchable cell in the
    loop (None: it need not): the batched L-BFGS and losses of one value per sample
    agree with the loop to float32 rounding only. The batched engine asks it with
    the optimizer alone under ``exact_only`` (its L-BFGS rule)."""
    if optimizer_class_name in CLOSURE_BATCHED:
        return LBFGS_UNDER_AUTO
    if PER_RUN_REDUCTION.get(loss_class_name) == "samples":
        return SAMPLE_LOSSES_UNDER_AUTO.format(loss=loss_class_name)
    return None


@dataclass(frozen=True)
class EngineChoice:
    """Which engine trains a group of runs, and the sentence saying why (the job's
    log and each run's sidecar, ``engine_reason``)."""

    batched: bool
    reason: str
    # A class from a package or a file that the run-independence probe passed:
    # its verdict stands in for the list of element-wise classes.
    probed: bool = False


def choose_engine(
    requested: str,
    optimizer_class_name: str,
    problem_kind: str,
    loss_class_name: str | None = None,
    loss_kwargs: dict | None = None,
    runs: int | None = None,
    grouped: bool = False,
    probe: Callable[[], tuple[bool, str]] | None = None,
) -> EngineChoice:
    """The one engine decision for ``runs`` runs of one cell under config ``engine`` =
    ``requested`` (auto, batched or loop). Asked by the config check (settings.py,
    engine: batched, before any job), the dry run's estimate (cost.py), the training
    job (engines/job.py, before a group trains) and the batched engine called
    directly (batched.train_batched).

    The other arguments are those of ``can_batch``; ``grouped``: the entry has
    parameter groups (roles), which the batched engine does not stack. ``probe``:
    for a class from a package or a file, a callable giving the run-independence
    probe's (passed, verdict) (engines/probe.py ``class_verdict``); None where it
    cannot run (the estimate, torch-free: such a class counts as the loop).
    ``batched`` asks for the engine wherever it is safe (the config check refuses
    the rest before any job); ``auto`` also keeps what is not bit-exact to the
    loop in the loop and leaves a single run to the loop, where batching gains
    nothing."""
    ok, reason = _by_name(
        requested, optimizer_class_name, problem_kind, loss_class_name, loss_kwargs, runs, grouped
    )
    single = requested == "auto" and runs == 1
    if ok or requested == "loop" or grouped or single or probe is None:
        return EngineChoice(ok, reason)
    if not needs_probe(optimizer_class_name):
        return EngineChoice(ok, reason)
    loss_ok, loss_reason = loss_batchable(problem_kind, loss_class_name, loss_kwargs)
    if not loss_ok:
        return EngineChoice(False, loss_reason)
    passed, verdict = probe()
    if passed:
        return EngineChoice(True, f"batched: {verdict}; {loss_reason}", probed=True)
    return EngineChoice(False, verdict)


def _by_name(
    requested: str,
    optimizer_class_name: str,
    problem_kind: str,
    loss_class_name: str | None,
    loss_kwargs: dict | None,
    runs: int | None,
    grouped: bool,
) -> tuple[bool, str]:
    """``choose_engine`` for what its names tell, before any probe."""
    if requested == "loop":
        return False, "engine loop was asked for (config key engine)"
    if grouped:
        return False, (
            f"optimizer {optimizer_class_name} with parameter groups runs in the per-run loop"
        )
    ok, reason = can_batch(optimizer_class_name, problem_kind, loss_class_name, loss_kwargs)
    if ok and requested == "auto":
        kept = kept_in_loop_under_auto(optimizer_class_name, loss_class_name)
        if kept:
            return False, kept
    if ok and runs == 1 and requested == "auto":
        return False, "a single run: the per-run loop (batching one run gains nothing)"
    return ok, reason
