"""A training job's front door: read the job, reuse, choose engines, train, write.

``workflow/scripts/train.py`` parses the command line into a ``JobRequest``
and calls ``run``; everything a job does after that is here, in order:

1. its runs (``job_runs``: a packed job's argument through jobs.expand, or one
   cell's settings and runs), each with typed settings (planning.run_settings)
   told where the user's problem and optimizer files are;
2. the device, the numerics mode and each run's settings digest (reuse.py);
   runs trained before with these settings are reused (``reused_runs``);
3. the rest grouped by (problem, loss, optimizer), every group timed alone in
   the loop (timing.py), then each group's engine chosen by the one decision
   (batch_policy.choose_engine, with the run-independence probe) and trained by
   it (group_training: the loop or the batched engine, one ``train``);
4. each run written as it comes (``write``: TSV and sidecar), listed in the
   run index, and the job's manifest last.

From step 3 on the job keeps a checkpoint (checkpoints.py, ``<manifest>.checkpoint``
unless ``checkpoint`` names one): saved every ``checkpoint_steps`` steps or
``checkpoint_seconds`` seconds and on SIGTERM/SIGUSR1 (then the job exits 75),
resumed by the job's next start, removed once the manifest is written.

Imports torch and the standard library only (no Snakemake, pandas or
matplotlib): start-up time is most of a small job's cost.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from optbench import progress, reuse, runfiles
from optbench.engines import checkpoints, group_training, numerics, probe, timing, training
from optbench.planning import batch_policy, commands, jobs
from optbench.planning.run_settings import RunSettings
from optbench.planning.run_settings import digested as digested_settings
from optbench.run_layout import PER_JOB, PER_RUN

# The folder of train.py, whose code (and what it imports) a run's digest covers.
SCRIPTS = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class JobRequest:
    """A training job as its command line gives it (train.py's arguments)."""

    job: str | None = None  # jobs.argument's JSON: cells, seed ranges, path patterns
    spec: str | None = None  # or one cell's settings as JSON, with ``runs``
    runs: tuple = ()  # (seed, TSV, sidecar) per run of ``spec``
    manifest: str | None = None  # after every run, list the files written here
    index: str | None = None  # the run index shared by all studies (reuse.py)
    progress: str | None = None  # where the job keeps its progress (progress.py)
    engine: str = "auto"  # config key engine: auto, batched or loop
    threads: int = 1
    numerics: str = numerics.DEFAULT_MODE
    problems_dir: str = ""  # the folder of user problems (problems/ of the repo)
    optimizers_dir: str = ""  # the folder of users' optimizer files
    # What numerics.pin found before torch was imported (train.py pins first).
    numerics_found: dict = field(default_factory=dict)
    checkpoint: str | None = None  # the checkpoint file (default: <manifest>.checkpoint)
    checkpoint_steps: int = 0  # save after this many steps trained (0: no step trigger)
    # save after this many seconds since the last save (0: no time trigger)
    checkpoint_seconds: float = checkpoints.DEFAULT_SECONDS
    # per_run: a TSV and sidecar per run; per_job: one run file per job (jobfiles.py)
    run_files: str = PER_RUN


def run(request: JobRequest, log=None) -> int:
    """Train (or reuse) the job's runs and write their files; the exit code
    (0 done, 2 a run could not train: the log says which and why)."""
    started = time.perf_counter()
    log = log or sys.stderr
    # The runs the job's last finished start wrote (reuse.py), read before the
    # manifest goes: a manifest then exists only if the job's latest start ran
    # to its end (a previous version stays in Snakemake's backup until the job
    # ends), which is what accept_finished.py relies on.
    previous = reuse.previous_runs(request.manifest)
    if request.manifest:
        Path(request.manifest).unlink(missing_ok=True)
    runs = job_runs(request)
    torch.set_num_threads(max(1, request.threads))
    # The log says what ran, line by line as it happens, so that a job's log
    # is never empty and a killed job's log shows how far it got.
    for settings in {id(run.spec): run.spec for run in runs}.values():
        print(describe_cell(settings), file=log, flush=True)
    seeds = " ".join(map(str, dict.fromkeys(run.seed for run in runs)))
    print(f"runs: seeds {seeds}", file=log, flush=True)
    tracker = progress.Progress(
        request.progress, len(runs), sum(run.spec["steps"] for run in runs), log=log
    )
    try:
        code = _train_runs(request, runs, previous, started, log, tracker)
    except BaseException:
        tracker.finish(progress.FAILED)
        raise
    tracker.finish(progress.DONE if code == 0 else progress.FAILED)
    return code


def job_runs(request: JobRequest) -> list[jobs.Run]:
    """The job's runs, each cell's settings told where the user's files are."""
    if request.job:
        runs = jobs.expand(request.job)
    else:
        settings = RunSettings.from_mapping(json.loads(request.spec))
        runs = [jobs.Run(settings, int(seed), tsv, sidecar) for seed, tsv, sidecar in request.runs]
    located = {}  # one RunSettings per cell, shared by its runs
    return [
        jobs.Run(
            located.setdefault(
                id(run.spec), run.spec.located(request.problems_dir, request.optimizers_dir)
            ),
            run.seed,
            run.tsv,
            run.sidecar,
            run.cell,
        )
        for run in runs
    ]


def describe_cell(settings: RunSettings) -> str:
    """A job's first log lines: which cell and settings it trains."""
    problem, loss, optimizer = settings.problem, settings.loss, settings.optimizer
    trained_by = (
        "minimised directly (objective)"
        if loss is None
        else f"loss {loss['name']} = torch.nn.{loss['class']}(**{loss['kwargs']})"
    )
    cls = optimizer["class"] if "." in optimizer["class"] else f"torch.optim.{optimizer['class']}"
    return (
        f"cell: problem {problem['name']} = {problem['problem']}(**{problem['kwargs']}), "
        f"{trained_by}, optimizer {optimizer['name']} variant {settings.variant} = "
        f"{cls}(**{optimizer['kwargs']}), {settings.steps} steps"
    )


def choose_engine(requested: str, group: list[jobs.Run]) -> batch_policy.EngineChoice:
    """The engine of one group, before anything is built: batch_policy.choose_engine,
    probing a class from a package or a file on the group's keyword arguments.
    Under engine batched a class the probe fails is refused (the config check
    refuses it before any job; this is for a job started by hand)."""
    settings = group[0].spec
    loss, optimizer = settings.loss, settings.optimizer

    def probed() -> tuple[bool, str]:
        kwargs = [training.optimizer_kwargs(run.spec["optimizer"]) for run in group]
        passed, verdict = probe.class_verdict(optimizer, settings.optimizers_dir, kwargs)
        if not passed and requested == "batched":
            cells = ["/".join(group_training.group_key(settings))]
            raise training.RunError(batch_policy.batched_refusal(cells, verdict))
        return passed, verdict

    return batch_policy.choose_engine(
        requested,
        optimizer["class"],
        settings.problem["kind"],
        loss and loss["class"],
        loss and loss["kwargs"],
        len(group),
        grouped=bool(optimizer.get("groups")),
        probe=probed,
    )


def _train_runs(request, runs, previous, started, log, tracker) -> int:
    requested_device = runs[0].spec.device
    try:
        device = training.resolve_device(requested_device)
    except training.RunError as error:
        print(f"error: {error}", file=log)
        return 2
    numerics.apply(request.numerics, torch, device)
    environment = training.environment(device)
    environment["numerics"] = numerics.record(
        request.numerics, request.numerics_found, torch, device
    )
    print(
        f"training on {environment['device']} ({environment['device_name']}), "
        f"device {requested_device} requested, torch {environment['torch_version']}, "
        f"{torch.get_num_threads()} thread(s)",
        file=log,
        flush=True,
    )
    print(numerics.describe(environment["numerics"]), file=log, flush=True)
    context = {
        "numerics": request.numerics,
        "engine": request.engine,
        "threads": torch.get_num_threads(),
        "device": environment["device"],
        "torch": environment["torch_version"],
        "code": commands.training_code_digest(SCRIPTS),
    }
    cell_specs = {id(run.spec): run.spec for run in runs}
    digested = {key: digested_settings(spec) for key, spec in cell_specs.items()}  # once a cell
    digests = {
        id(run): reuse.settings_digest(run.spec, run.seed, context, digested[id(run.spec)])
        for run in runs
    }
    per_job = request.run_files == PER_JOB
    if per_job:
        # Rows of the job's last run file, unedited and of these settings (jobfiles.py).
        from optbench import jobfiles  # numpy: only this layout needs it

        records = jobfiles.reusable(previous, {run.tsv: digests[id(run)] for run in runs})
        kept, copied = [run for run in runs if run.tsv in records], 0
    else:
        kept, copied = reused_runs(runs, digests, previous, request.index)
    if kept and per_job:
        print(
            f"reused: {len(kept)} run(s) of the job's run file trained before with these "
            "settings and code (their rows unchanged)",
            file=log,
            flush=True,
        )
    elif kept:
        print(
            f"reused: {len(kept)} run(s) trained before with these settings and code (their "
            f"files and SHA-256 unchanged), {copied} of them copied from another job or "
            "study's files",
            file=log,
            flush=True,
        )
    checkpoint = checkpoints.JobCheckpoint(
        request.checkpoint or checkpoints.path_for(request.manifest),
        checkpoints.job_key([digests[id(run)] for run in runs]),
        checkpoints.Interval(request.checkpoint_steps, request.checkpoint_seconds),
        log,
    )
    checkpoint.load()
    checkpoint.install()  # SIGTERM/SIGUSR1 from now on: save, then exit EXIT_PREEMPTED
    kept_ids = {id(run) for run in kept}
    to_train = [run for run in runs if id(run) not in kept_ids]
    tracker.runs(len(kept))
    tracker.steps(sum(run.spec["steps"] for run in kept))
    groups = group_training.groups_of(to_train)
    names = [group_training.group_name(group[0].spec) for group in groups]
    untimed = [index for index, name in enumerate(names) if name not in checkpoint.timings]
    try:
        # Every group timed before any trains, taking turns (engines/timing.py);
        # a resumed job keeps the timings its first start measured (checkpoint).
        measured = timing.step_times([groups[index][0].spec for index in untimed], device)
    except training.RunError as error:
        print(f"error: {error}", file=log)
        return 2
    for index, step_timing in zip(untimed, measured, strict=True):
        if step_timing is not None:
            checkpoint.timings[names[index]] = step_timing
    timings = [checkpoint.timings.get(name) for name in names]
    if len(untimed) < len(names):
        held = len(names) - len(untimed)
        print(f"timing: {held} group(s) keep the timing of the job's first start", file=log)
    for group, step_timing in zip(groups, timings, strict=True):
        if step_timing is None:
            continue  # it failed to run; its training says why
        print(
            f"timing: {group_training.group_name(group[0].spec)} takes "
            f"{step_timing['seconds_per_step'] * 1e6:.1f} us per step alone in the loop "
            f"(median of {step_timing['timed_steps']}, {step_timing['threads']} thread(s))",
            file=log,
            flush=True,
        )
    for group, step_timing in zip(groups, timings, strict=True):
        try:
            choice = choose_engine(request.engine, group)
            engine = group_training.engine_for(choice, request.engine, device, log)
            if not choice.batched:
                name = group_training.group_name(group[0].spec)
                line = f"engine loop: {len(group)} run(s) of {name}; {choice.reason}"
                print(line, file=log, flush=True)
            for trained in engine.train(group, tracker.steps, checkpoint):
                if per_job:  # kept in memory, written with the others at the end
                    records[trained.run.tsv] = job_record(
                        trained, environment, digests[id(trained.run)], step_timing, started
                    )
                    tracker.runs(1)
                    continue
                write(trained, environment, digests[id(trained.run)], step_timing, started, log)
                reuse.remember(
                    request.index, digests[id(trained.run)], trained.run.tsv, trained.run.sidecar
                )
                tracker.runs(1)
            if per_job:
                name = group_training.group_name(group[0].spec)
                print(f"trained: {len(group)} run(s) of {name}", file=log, flush=True)
        except training.RunError as error:
            seed = getattr(error, "seed", None)
            print(f"error: {'' if seed is None else f'seed {seed}: '}{error}", file=log)
            return 2
    if per_job:
        job_file = jobfiles.path_for(request.manifest)
        cell_digests = {}  # once a cell, not once a run
        for run in runs:
            if id(run.spec) not in cell_digests:
                cell_digests[id(run.spec)] = jobs.cell_digest(run.spec)
        rows = jobfiles.write(
            job_file, [records[run.tsv] for run in runs], [digests[id(run)] for run in runs]
        )
        runfiles.write_job_manifest(
            request.manifest,
            job_file,
            [
                (run.tsv, rows[run.tsv], digests[id(run)], cell_digests[id(run.spec)])
                for run in runs
            ],
        )
        Path(f"{request.manifest}{reuse.PREVIOUS}").unlink(missing_ok=True)
        print(
            f"run file: {job_file} ({len(runs)} runs, {jobfiles.describe_bytes(job_file)})",
            file=log,
        )
        print(f"manifest: {request.manifest}", file=log, flush=True)
    elif request.manifest:
        runfiles.write_manifest(
            request.manifest,
            [(run.tsv, run.sidecar, digests[id(run)], jobs.cell_digest(run.spec)) for run in runs],
        )
        # A manifest set aside for a changed run (reuse.PREVIOUS) has served.
        Path(f"{request.manifest}{reuse.PREVIOUS}").unlink(missing_ok=True)
        print(f"manifest: {request.manifest}", file=log, flush=True)
    checkpoint.remove()  # every file is written: the checkpoint has served
    print(
        f"done: {len(runs)} run(s) ({len(to_train)} trained, {len(kept)} reused) in "
        f"{time.perf_counter() - started:.3f} s",
        file=log,
    )
    return 0


def reused_runs(runs, digests, previous, index) -> tuple[list, int]:
    """The runs already trained with these settings (reuse.py): the job's own, as its
    last manifest lists them, else any the run index lists, copied into place when
    elsewhere; and how many were copied. Each is listed in the index at its path."""
    kept, copied = [], 0
    for run in runs:
        digest = digests[id(run)]
        if reuse.unchanged(run.tsv, run.sidecar, digest, previous):
            place = {"tsv": run.tsv}
        else:
            place = reuse.find(index, digest, run.tsv, run.sidecar)
            if place is None:
                continue
            copied += reuse.put_in_place(place, run.tsv, run.sidecar)
        kept.append(run)
        if place["tsv"] != run.tsv or not any(
            listed["tsv"] == run.tsv for listed in reuse.locations(index, digest)
        ):
            reuse.remember(index, digest, run.tsv, run.sidecar)
    return kept, copied


_SIDECAR_FIELDS: dict[int, tuple] = {}  # id(settings) -> (settings, its sidecar fields)


def _sidecar_fields(settings: RunSettings) -> dict:
    """settings.sidecar_fields(), made once a cell (the settings object its runs share)."""
    cached = _SIDECAR_FIELDS.get(id(settings))
    if cached is None or cached[0] is not settings:
        cached = _SIDECAR_FIELDS[id(settings)] = (settings, settings.sidecar_fields())
    return dict(cached[1])


def sidecar(trained, environment, settings_sha256, step_timing, started) -> dict:
    """One run's sidecar entries (the per-run layout's JSON sidecar)."""
    run, result = trained.run, trained.result
    return {
        **_sidecar_fields(run.spec),
        "seed": run.seed,
        **environment,
        "python_version": platform.python_version(),
        "engine": trained.engine,
        "engine_reason": trained.reason,
        "engine_details": trained.details,
        # Batched: the run's share of its batch's training time.
        "train_seconds": result.seconds,
        "job_seconds_before_this_run": time.perf_counter() - started,
        "first_nonfinite_step": runfiles.first_nonfinite_step(result.losses),
        "evaluations": sum(result.evaluations),
        "heldout": result.heldout,
        "problem_info": result.info,
        # Held-out metrics every eval_every steps ([] without eval_every or held-out data).
        "heldout_curve": result.curve,
        # What determines the run's numbers (reuse.py): an unchanged run is reused.
        "settings_sha256": settings_sha256,
        # Seconds per step of its (problem, loss, optimizer) alone in the loop, on
        # this host (engines/timing.py): machine-specific, unlike the losses.
        "step_timing": step_timing,
    }


def job_record(trained, environment, settings_sha256, step_timing, started):
    """One run as a row of the job's run file (jobfiles.Record)."""
    from optbench import jobfiles

    run, result = trained.run, trained.result
    return jobfiles.Record(
        run.tsv,
        run.cell,
        run.seed,
        # The result's own lists, not copies: a job holds every run until it writes.
        result.losses,
        result.evaluations if result.evaluations else [1] * len(result.losses),
        result.lrs if result.lrs else [None] * len(result.losses),
        sidecar(trained, environment, settings_sha256, step_timing, started),
    )


def write(trained, environment, settings_sha256, step_timing, started, log) -> None:
    """One run's TSV and sidecar (runfiles.write_run), and its log line."""
    run, result = trained.run, trained.result
    metadata = sidecar(trained, environment, settings_sha256, step_timing, started)
    runfiles.write_run(
        run.tsv, result.losses, run.sidecar, metadata, result.evaluations, result.lrs, result.curve
    )
    print(
        f"seed {run.seed}: final loss {result.losses[-1]!r} after {len(result.losses)} steps, "
        f"{result.seconds!r} s training, written to {run.tsv} and {run.sidecar}",
        file=log,
        flush=True,
    )
