"""Checkpoints of a training job, and a resume that gives the same bytes.

A job keeps at most one checkpoint file (``<manifest>.checkpoint``), replaced
atomically (runfiles.atomic_path) and removed once the job's files are
written. It holds

- ``job``: the SHA-256 of the job's runs' settings digests (reuse.py), in
  order: a checkpoint of other settings, code or runs is ignored;
- ``finished``: per unit (one run in the loop, one chunk of runs in the
  batched engine), what its runs' files are written from, so a resumed job
  writes them again without training;
- ``partial``: the unit in training at the last save, with its step and the
  state its loop continues from (``capture_loop``/``capture_batched``): model
  weights, optimizer state (with any plain attributes the optimizer keeps
  outside ``state_dict``), the schedule's position, the losses, learning
  rates, evaluation counts and held-out curve so far;
- ``rng``: torch's global CPU and CUDA generators and Python's ``random``
  (the problems draw on their own seeded generators when built, which a
  resume rebuilds from the seed; their data order is the drawn ``index``).

A save happens at a step boundary when ``checkpoint_every`` is due (steps
trained since the last save, or seconds since it) or after SIGTERM/SIGUSR1,
after which the job exits with ``EXIT_PREEMPTED``. The file is a header line
``optbench-checkpoint 1 <sha256 of the rest>`` and a ``torch.save`` payload;
a file that is truncated, corrupt or of other settings is ignored with a log
line, and the job starts from step 0.
"""

from __future__ import annotations

import hashlib
import io
import random
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from optbench import runfiles

# sysexits.h EX_TEMPFAIL ("try again later"): the job saved a checkpoint on
# SIGTERM/SIGUSR1 and stopped; run it again (Snakemake --retries, a Slurm
# requeue) and it continues from there.
EXIT_PREEMPTED = 75
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
SUFFIX = ".checkpoint"
MAGIC = b"optbench-checkpoint 1 "
# The default of config key checkpoint_every: a job saves after every 120
# seconds of training, so a job shorter than that never writes one, and a
# save (milliseconds to a second) costs well under 1 % of the time between two.
DEFAULT_SECONDS = 120.0


@dataclass(frozen=True)
class Interval:
    """When a job saves: after ``steps`` steps trained or ``seconds`` seconds since
    the last save, whichever comes first (0: that trigger is off)."""

    steps: int = 0
    seconds: float = 0.0

    @property
    def off(self) -> bool:
        return not self.steps and not self.seconds

    def describe(self) -> str:
        parts = [
            f"{self.steps} steps" if self.steps else "",
            f"{self.seconds:g} s" if self.seconds else "",
        ]
        said = " or ".join(part for part in parts if part)
        return f"every {said}" if said else "off (only on SIGTERM/SIGUSR1)"


def job_key(run_digests: list[str]) -> str:
    """What a checkpoint must have been made for: these runs, in this order."""
    return hashlib.sha256("\n".join(run_digests).encode()).hexdigest()


def path_for(manifest) -> Path | None:
    return None if not manifest else Path(f"{manifest}{SUFFIX}")


def encode(payload: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    body = buffer.getvalue()
    return MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + body


def decode(data: bytes) -> dict:
    """The payload of a checkpoint file's bytes; ValueError saying what is wrong."""
    header, newline, body = data.partition(b"\n")
    if not newline or not header.startswith(MAGIC):
        raise ValueError("not an optbench checkpoint (no header line)")
    if hashlib.sha256(body).hexdigest().encode() != header[len(MAGIC) :]:
        raise ValueError("its SHA-256 does not match its header (truncated or corrupt)")
    try:
        return torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except Exception as error:  # a payload torch cannot read back
        raise ValueError(f"torch.load failed: {error}") from error


class Preempted(SystemExit):
    """Raised at a step boundary after a SIGTERM/SIGUSR1, once the checkpoint is saved."""

    def __init__(self, signum: int):
        super().__init__(EXIT_PREEMPTED)
        self.signum = signum


# ---- the global random generators ------------------------------------------


def capture_rng() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    numpy = sys.modules.get("numpy")
    if numpy is not None:  # only if something imported it (user code)
        kind, keys, position, has_gauss, cached = numpy.random.get_state()
        state["numpy"] = [kind, torch.from_numpy(keys.copy()), position, has_gauss, cached]
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuples(state["python"]))
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy = sys.modules.get("numpy")
    if numpy is not None and "numpy" in state:
        kind, keys, position, has_gauss, cached = state["numpy"]
        numpy.random.set_state((kind, keys.numpy(), position, has_gauss, cached))


def _as_tuples(value):
    if isinstance(value, list | tuple):
        return tuple(_as_tuples(v) for v in value)
    return value


# ---- an optimizer's state, and a schedule's ---------------------------------

_PLAIN = (bool, int, float, str, type(None))
_OWN = {"state", "param_groups", "defaults"}


def capture_optimizer(optimizer) -> dict:
    """``state_dict()`` and the plain attributes some optimizers keep outside it
    (step counters, a generator of their own), so that these resume as well."""
    extra = {}
    for name, value in vars(optimizer).items():
        if name.startswith("_") or name in _OWN:
            continue
        if isinstance(value, torch.Generator):
            extra[name] = {"generator": value.get_state()}
        elif isinstance(value, torch.Tensor):
            extra[name] = {"tensor": value.detach().clone()}
        elif isinstance(value, _PLAIN):
            extra[name] = {"plain": value}
    return {"state_dict": optimizer.state_dict(), "extra": extra}


def restore_optimizer(optimizer, saved: dict) -> None:
    optimizer.load_state_dict(saved["state_dict"])
    for name, value in saved["extra"].items():
        if "generator" in value:
            getattr(optimizer, name).set_state(value["generator"])
        elif "tensor" in value:
            current = getattr(optimizer, name)
            setattr(optimizer, name, value["tensor"].to(current.device))
        else:
            setattr(optimizer, name, value["plain"])


def capture_rates(rates) -> dict:
    """A LearningRates' position: a torch scheduler's state (families are a
    function of the step alone, from base rates fixed at construction)."""
    return {} if rates.scheduler is None else {"scheduler": rates.scheduler.state_dict()}


def restore_rates(rates, saved: dict) -> None:
    if "scheduler" in saved:
        rates.scheduler.load_state_dict(saved["scheduler"])


# ---- the per-run loop --------------------------------------------------------


@dataclass
class LoopState:
    """What training.train_instance's loop holds between steps (lists shared with
    the loop, changed in place)."""

    model: torch.nn.Module
    optimizer: object
    rates: object
    recorded: list  # the losses so far, 0-dim tensors
    evaluations: list  # per step (all steps, filled up to the current one)
    lrs: list
    curve: list

    def capture(self, done: int) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": capture_optimizer(self.optimizer),
            "rates": capture_rates(self.rates),
            "recorded": torch.stack(self.recorded) if self.recorded else torch.empty(0),
            "evaluations": self.evaluations[:done],
            "lrs": list(self.lrs),
            "curve": list(self.curve),
        }

    def restore(self, saved: dict) -> None:
        self.model.load_state_dict(saved["model"])
        restore_optimizer(self.optimizer, saved["optimizer"])
        restore_rates(self.rates, saved["rates"])
        device = next(self.model.parameters()).device
        self.recorded[:] = list(saved["recorded"].to(device).unbind())
        self.evaluations[: len(saved["evaluations"])] = saved["evaluations"]
        self.lrs[:] = saved["lrs"]
        self.curve[:] = saved["curve"]


# ---- the batched engine's first-order loop ---------------------------------


@dataclass
class BatchedState:
    """What batched._first_order_steps holds between steps."""

    stacked: dict  # name -> stacked parameter [runs, ...]
    views: list  # (optimizer, rows, rates) per variant
    recorded: torch.Tensor  # [steps, runs]
    lrs: list  # per variant
    curves: list  # per run

    def capture(self, done: int) -> dict:
        return {
            "stacked": {name: tensor.detach() for name, tensor in self.stacked.items()},
            "optimizers": [capture_optimizer(optimizer) for optimizer, *_ in self.views],
            "rates": [capture_rates(rates) for *_, rates in self.views],
            "recorded": self.recorded[:done],
            "lrs": [list(lrs) for lrs in self.lrs],
            "curves": [list(curve) for curve in self.curves],
        }

    def restore(self, saved: dict) -> None:
        with torch.no_grad():
            for name, tensor in self.stacked.items():
                tensor.copy_(saved["stacked"][name])
        for (optimizer, _, rates), state, position in zip(
            self.views, saved["optimizers"], saved["rates"], strict=True
        ):
            restore_optimizer(optimizer, state)
            restore_rates(rates, position)
        done = len(saved["recorded"])
        self.recorded[:done] = saved["recorded"]
        for lrs, kept in zip(self.lrs, saved["lrs"], strict=True):
            lrs[:] = kept
        for curve, kept in zip(self.curves, saved["curves"], strict=True):
            curve[:] = kept


# ---- the job's checkpoint ------------------------------------------------


class JobCheckpoint:
    """One job's checkpoint: loaded at the start, saved when due, removed at the end."""

    def __init__(self, path, key: str, interval: Interval, log=None, clock=time.perf_counter):
        self.path = None if path is None else Path(path)
        self.key = key
        self.interval = interval
        self.log = log
        self.clock = clock
        self.finished: dict[str, list] = {}
        self.partial: dict | None = None  # {"unit", "step", "state"} as loaded
        self.rng: dict | None = None  # as loaded: put back where training resumes
        self.signalled: int | None = None
        self.training = False  # inside a unit's loop (a save waits for its boundary)
        self.steps_since = 0
        self.last_save = clock()
        self.saves = 0
        self.seconds_saving = 0.0  # all saves together (tools/benchmark.py reads these)
        self.last_bytes = 0
        self.resumed_from: dict[str, int] = {}  # unit -> step it resumed from
        # Group name -> its step timing (engines/timing.py), measured once per job:
        # a resumed job keeps the first start's instead of timing every group again.
        self.timings: dict[str, dict] = {}

    # -- loading -----------------------------------------------------------

    def load(self) -> None:
        """Take the checkpoint on disk if it was made for this job; else say why not."""
        if self.path is None or not self.path.exists():
            return
        try:
            payload = decode(self.path.read_bytes())
            if payload.get("job") != self.key:
                raise ValueError(
                    "it was made for other settings, code or runs (its settings digest differs)"
                )
        except (OSError, ValueError) as error:
            self.say(f"checkpoint: ignored {self.path}: {error}; the job starts from step 0")
            return
        self.finished = payload["finished"]
        self.partial = payload["partial"]
        self.timings = payload.get("timings", {})  # none in checkpoints of older code
        # The generators as they were at the save: put back where training goes
        # on, in the unit saved half-way (resume_loop) or in the next one (begin).
        if self.partial is None:
            self.rng = payload["rng"]
        else:
            self.partial["rng"] = payload["rng"]
        where = (
            f", unit {self.partial['unit']} at step {self.partial['step']}" if self.partial else ""
        )
        self.say(
            f"checkpoint: resuming from {self.path} ({len(self.finished)} unit(s) finished{where})"
        )

    # -- the units of the job ----------------------------------------------

    def stored(self, unit: str) -> list | None:
        """The results of a unit the checkpoint holds as finished, else None."""
        return self.finished.get(unit)

    def begin(self, unit: str) -> dict | None:
        """Start training ``unit``: the saved loop state it continues from, if any.
        The global generators are put back at the first unit trained after a resume
        (before its problem is built, as in the uninterrupted job)."""
        self.training = True
        if self.partial is not None and self.partial["unit"] == unit:
            partial, self.partial = self.partial, None
            return partial
        if self.rng is not None:
            restore_rng(self.rng)
            self.rng = None
        return None

    def resume_loop(self, unit: str, saved: dict | None, state, on_step=None) -> int:
        """Put ``saved`` (from ``begin``) into a loop's state; the step to go on from."""
        if saved is None:
            return 0
        state.restore(saved["state"])
        restore_rng(saved["rng"])
        self.rng = None
        step = saved["step"]
        self.resumed_from[unit] = step
        self.say(f"checkpoint: {unit} resumed from step {step} (steps 0-{step - 1} not redone)")
        if on_step is not None and step:
            on_step(step * saved.get("runs", 1))
        return step

    def boundary(self, unit: str, done: int, state, runs: int = 1) -> None:
        """After each step: save if due (or asked to by a signal), then exit if asked."""
        self.steps_since += 1
        if self.signalled is None and not self._due():
            return
        self.save(partial={"unit": unit, "step": done, "runs": runs, "state": state.capture(done)})
        if self.signalled is not None:
            self.stop(f"{unit} at step {done}")

    def finish(self, unit: str, results: list) -> None:
        """``unit`` trained: keep what its files are written from."""
        self.training = False
        self.finished[unit] = results
        if self.signalled is not None or self._due():
            self.save()
        if self.signalled is not None:
            self.stop("the next unit")

    def _due(self) -> bool:
        if self.path is None or self.interval.off:
            return False
        if self.interval.steps and self.steps_since >= self.interval.steps:
            return True
        return (
            bool(self.interval.seconds) and self.clock() - self.last_save >= self.interval.seconds
        )

    # -- saving, signals and the end ---------------------------------------

    def save(self, partial: dict | None = None) -> None:
        if self.path is None:
            return
        started = self.clock()
        data = encode(
            {
                "job": self.key,
                "finished": self.finished,
                "partial": partial,
                "rng": capture_rng(),
                "timings": self.timings,
            }
        )
        with runfiles.atomic_path(self.path) as temporary:
            temporary.write_bytes(data)
        self.saves += 1
        self.steps_since = 0
        self.last_save = self.clock()
        self.seconds_saving += self.last_save - started
        self.last_bytes = len(data)
        where = f"{partial['unit']} at step {partial['step']}" if partial else "between units"
        self.say(
            f"checkpoint: saved {len(data):,} bytes in {self.last_save - started:.3f} s "
            f"({len(self.finished)} unit(s) finished, {where})"
        )

    def on_signal(self, signum, frame) -> None:
        """SIGTERM/SIGUSR1: inside a loop, save at the next step boundary and exit
        there; between units, save what is finished and exit now."""
        if self.path is None:
            # No checkpoint to save (a --spec job without --manifest or --checkpoint):
            # stop at once, as a plain stopped process (128 + the signal).
            raise SystemExit(128 + signum)
        self.signalled = signum
        self.say(f"checkpoint: got {signal.Signals(signum).name}; saving and stopping")
        if not self.training:
            self.save()
            self.stop("the next unit")

    def stop(self, where: str) -> None:
        """Exit with EXIT_PREEMPTED after a signal, the checkpoint saved."""
        name = signal.Signals(self.signalled).name
        self.say(
            f"checkpoint: stopped by {name}, exit {EXIT_PREEMPTED}: a retry resumes from {where}"
        )
        raise Preempted(self.signalled)

    def install(self) -> None:
        for signum in SIGNALS:
            signal.signal(signum, self.on_signal)

    def remove(self) -> None:
        """The job's files are written: the checkpoint has served."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)

    def say(self, line: str) -> None:
        if self.log is not None:
            print(line, file=self.log, flush=True)

    def unit(self, unit: str) -> Unit:
        """The hook a unit's loop calls (``begin`` is called now, before its build)."""
        return Unit(self, unit, self.begin(unit))


class Unit:
    """A loop's hook into its job's checkpoint: where to start, and each step boundary."""

    def __init__(self, job: JobCheckpoint, name: str, saved: dict | None):
        self.job, self.name, self.saved = job, name, saved

    def resume(self, state, on_step=None) -> int:
        saved, self.saved = self.saved, None
        return self.job.resume_loop(self.name, saved, state, on_step)

    def boundary(self, done: int, state, runs: int = 1) -> None:
        self.job.boundary(self.name, done, state, runs)
