"""How a training job trains one group of runs: two engines behind one ``train``.

A group is the runs of one (problem, loss, optimizer) that a job trains
(``groups_of``). ``engine_for`` turns the job's engine choice
(batch_policy.choose_engine) into a ``Loop`` or a ``Batched``; both have

    train(runs, on_step=None, checkpoint=None) -> iterator of Trained

which yields each run with its result, the engine that trained it and why:
the loop each run as it finishes (the job writes it at once, so a killed job
keeps what it finished), the batched engine its group once verified against
the loop (verification.py). ``on_step(n)`` is called after every step with
the run-steps it finished (the job's progress). ``checkpoint`` is the job's
checkpoints.JobCheckpoint (None: none): each run of the loop, each chunk of the
batched engine is one unit of it, resumed where a saved state ends, and a unit
it holds as finished is yielded from it without training. Library level:
``training.train_one`` is one run in the loop, ``batched.train_batched`` one
chunk of runs stacked.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch

from optbench.engines import batched, training, verification
from optbench.planning.batch_policy import EngineChoice
from optbench.planning.cost import MAX_BATCH  # runs trained together at most

# The details of a batch that its runs' sidecars record (engine_details).
BATCH_DETAILS = (
    "forward",
    "variants",
    "runs",
    "batches",
    "kernels_exact",
    "bytes_per_run",
    "probe",
)


class Trained(NamedTuple):
    """One run as trained: what the job writes (verification.check_group's tuple)."""

    run: object  # jobs.Run
    result: training.RunResult
    engine: str  # "batched" or "loop"
    reason: str
    details: dict


def group_key(settings) -> tuple:
    """Runs that one batched call may train together: one (problem, loss, optimizer)."""
    # An objective problem has no loss; its runs' paths say "objective" (settings.OBJECTIVE).
    loss = "objective" if settings["loss"] is None else settings["loss"]["name"]
    return settings["problem"]["name"], loss, settings["optimizer"]["name"]


def group_name(settings) -> str:
    return "/".join(map(str, group_key(settings)))


def groups_of(runs: list) -> list[list]:
    """The job's runs grouped by ``group_key``, in the order groups first appear."""
    grouped: dict[tuple, list] = {}
    for run in runs:
        grouped.setdefault(group_key(run.spec), []).append(run)
    return list(grouped.values())


def for_seed(seed, build, *args):
    """build(*args), a RunError telling which seed failed (the job's log names it)."""
    try:
        return build(*args)
    except training.RunError as error:
        error.seed = seed
        raise


RESULT = training.RunResult


def _kept(trained: Trained) -> dict:
    """What a checkpoint keeps of a trained run to write its files after a restart."""
    return {
        # The fields as they are (asdict would deep-copy every loss: 1 ms a run,
        # as long as training a reference run); nothing changes them after this.
        "result": {f.name: getattr(trained.result, f.name) for f in dataclasses.fields(RESULT)},
        "engine": [trained.engine, trained.reason, trained.details],
    }


def _stored(checkpoint, unit: str, runs: list, on_step):
    """The runs of a unit the checkpoint holds as finished, as the engines yield them."""
    for run, kept in zip(runs, checkpoint.stored(unit), strict=True):
        if on_step is not None:
            on_step(run.spec["steps"])
        yield Trained(run, training.RunResult(**kept["result"]), *kept["engine"])


def _finished(checkpoint, unit: str, trained):
    """A unit's trained runs, kept in the job's checkpoint as finished."""
    trained = list(trained)
    if checkpoint is not None:
        checkpoint.finish(unit, [_kept(entry) for entry in trained])
    yield from trained


class Loop:
    """The per-run loop: the group's runs one after another (training.train_one)."""

    def __init__(self, device: torch.device, log, reason: str):
        self.device, self.log, self.reason = device, log, reason

    def train(self, runs: list, on_step=None, checkpoint=None):
        for run in runs:
            unit = run.tsv  # the run's name in the checkpoint
            if checkpoint is not None and checkpoint.stored(unit):
                yield from _stored(checkpoint, unit, [run], on_step)
                continue
            hook = None if checkpoint is None else checkpoint.unit(unit)
            result = for_seed(
                run.seed, training.train_one, run.spec, run.seed, self.device, on_step, hook
            )
            trained = Trained(run, result, "loop", self.reason, {})
            yield from _finished(checkpoint, unit, [trained])


class Batched:
    """The batched engine: the group's runs stacked in chunks of MAX_BATCH
    (batched.train_batched), each chunk verified against the loop."""

    def __init__(self, device: torch.device, log, requested: str, choice: EngineChoice):
        self.device, self.log = device, log
        # engine auto promises the loop's bits: inexact kernels and a batch that
        # differs from the loop send the runs to the loop.
        self.exact_only = requested == "auto"
        self.probed = choice.reason if choice.probed else None

    def train(self, runs: list, on_step=None, checkpoint=None):
        # The whole group is trained before a sample of it is re-trained in the
        # loop: one sample per group (at least one run per variant).
        trained = []
        for start in range(0, len(runs), MAX_BATCH):
            chunk = runs[start : start + MAX_BATCH]
            unit = f"{len(chunk)} run(s) from {chunk[0].tsv}"  # its name in the checkpoint
            if checkpoint is not None and checkpoint.stored(unit):
                trained += _stored(checkpoint, unit, chunk, on_step)
            else:
                hook = None if checkpoint is None else checkpoint.unit(unit)
                trained += _finished(checkpoint, unit, self._chunk(chunk, on_step, hook))
        written, line = verification.check_group(
            trained,
            lambda run: for_seed(run.seed, training.train_one, run.spec, run.seed, self.device),
            fall_back=self.exact_only,
        )
        if line:
            print(line, file=self.log, flush=True)
        yield from (Trained(*entry) for entry in written)

    def _chunk(self, chunk: list, on_step, hook=None):
        settings = chunk[0].spec
        criterion = None
        if settings["loss"] is not None:
            criterion = for_seed(chunk[0].seed, training.build_loss, settings["loss"])
        instances = [
            for_seed(run.seed, training.build_instance, run.spec, run.seed) for run in chunk
        ]
        kwargs = []
        checked = set()
        for run, instance in zip(chunk, instances, strict=True):
            entry = run.spec["optimizer"]
            if run.spec["variant"] not in checked:
                # Bad kwargs fail here with the loop's message naming the entry.
                for_seed(
                    run.seed,
                    training.build_optimizer,
                    entry,
                    instance.model.parameters(),
                    run.spec.get("optimizers_dir"),
                )
                checked.add(run.spec["variant"])
            kwargs.append(training.optimizer_kwargs(entry))
        cls = training.optimizer_class(settings["optimizer"], settings.get("optimizers_dir"))
        try:
            result = batched.train_batched(
                instances,
                criterion,
                cls,
                kwargs,
                settings["steps"],
                self.device,
                exact_only=self.exact_only,
                probed=self.probed,
                schedules=[run.spec["optimizer"].get("schedule") for run in chunk],
                eval_every=settings.get("eval_every", 0),
                on_step=on_step,
                checkpoint=hook,
            )
        except torch.OutOfMemoryError:
            raise
        except Exception as error:
            # A value torch accepts at construction and refuses in use (a Huber
            # delta of 0) fails here; the loop runs the chunk again, so the
            # error is reported as an unbatched job reports it (naming the entry).
            reason = f"the batched engine failed ({type(error).__name__}: {error}); ran the loop"
            print(f"engine: {reason}", file=self.log, flush=True)
            yield from Loop(self.device, self.log, reason).train(chunk, on_step)
            return
        details = {key: result.details[key] for key in BATCH_DETAILS if key in result.details}
        details["batch_seconds"] = result.seconds
        print(
            f"engine {result.engine}: {len(chunk)} run(s) of {group_name(settings)}"
            f" together in {result.seconds:.3f} s; {result.reason}"
            + (f"; forward {details['forward']}" if "forward" in details else "")
            + (f", kernels exact {details['kernels_exact']}" if "kernels_exact" in details else ""),
            file=self.log,
            flush=True,
        )
        share = result.seconds / len(chunk)
        for run, instance, outcome in zip(chunk, instances, result.runs, strict=True):
            # Each instance holds its run's final weights, as after the loop.
            heldout = instance.evaluate(criterion)
            yield Trained(
                run,
                training.RunResult(
                    run.seed,
                    outcome.losses,
                    share,
                    outcome.evaluations,
                    heldout,
                    outcome.lrs,
                    instance.info,
                    outcome.curve,
                ),
                result.engine,
                result.reason,
                details,
            )


def engine_for(choice: EngineChoice, requested: str, device: torch.device, log):
    """The engine that trains a group, as ``choice`` says."""
    if choice.batched:
        return Batched(device, log, requested, choice)
    return Loop(device, log, choice.reason)
