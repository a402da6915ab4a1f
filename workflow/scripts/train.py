"""Training job: runs the seeds of one or more (problem, loss, optimizer, variant) cells.

Called from the train rules as a plain command, not through ``script:``, so the
job imports torch and the standard library only (no Snakemake, pandas or
matplotlib). Usage:

    python train.py --job JSON [--engine auto|batched|loop] [--threads N] [--problems-dir DIR]
    python train.py --spec JSON --run SEED TSV SIDECAR [--run ...] [...]

``--job`` is optbench.planning.jobs.argument's compact description (cells, seed ranges,
path patterns), which stays short for jobs of any size; ``--spec``/``--run``
lists one cell's runs one by one. The runs of each (problem, loss, optimizer)
are trained together by the batched engine where it is safe (``--engine``),
else one after another in the per-run loop; the log and each sidecar say which.
"""

import argparse
import dataclasses
import json
import platform
import signal
import sys
import time
from pathlib import Path

from optbench.engines import numerics

# The numerical libraries read their code paths when torch is imported, so the
# pins come first (numerics.py). Imported as a module (tests), the importer pins.
NUMERICS_FOUND = (
    numerics.pin(numerics.mode_from_argv(sys.argv[1:])) if __name__ == "__main__" else {}
)

import torch  # noqa: E402

from optbench import progress, reuse, runfiles  # noqa: E402
from optbench.engines import (  # noqa: E402
    batched,
    checkpoints,
    eligibility,
    timing,
    training,
    verification,
)
from optbench.planning import batch_policy, commands, jobs  # noqa: E402
from optbench.planning.cost import MAX_BATCH  # noqa: E402  (runs trained together at most)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", help="the job's cells, seeds and path patterns as JSON")
    parser.add_argument("--spec", help="one cell's settings as JSON (with --run)")
    parser.add_argument(
        "--run", nargs=3, action="append", default=[], metavar=("SEED", "TSV", "SIDECAR")
    )
    parser.add_argument(
        "--manifest", help="with --job: after every run, list the files written here"
    )
    parser.add_argument(
        "--index",
        help="the run index shared by all studies (optbench.reuse): runs found there are "
        "reused, runs trained are listed there",
    )
    parser.add_argument(
        "--progress", help="keep the job's progress here as it trains (optbench.progress)"
    )
    parser.add_argument("--engine", choices=("auto", "batched", "loop"), default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--numerics",
        choices=numerics.MODES,
        default=numerics.DEFAULT_MODE,
        help="portable: pin the CPU code paths (same bits on any x86-64); native: the host's",
    )
    parser.add_argument(
        "--problems-dir", default="", help="the folder of user problems (problems/ of the repo)"
    )
    parser.add_argument(
        "--optimizers-dir",
        default="",
        help="the folder of users' optimizer files (optimizers/ of the repo)",
    )
    parser.add_argument(
        "--checkpoint",
        help="the job's checkpoint file (default: <manifest>.checkpoint; none without either)",
    )
    parser.add_argument(
        "--checkpoint-steps",
        type=int,
        default=0,
        help="save a checkpoint after this many steps trained (0: no step trigger)",
    )
    parser.add_argument(
        "--checkpoint-seconds",
        type=float,
        default=checkpoints.DEFAULT_SECONDS,
        help="save a checkpoint after this many seconds since the last (0: no time trigger)",
    )
    args = parser.parse_args(argv)
    if bool(args.job) == bool(args.spec) or bool(args.spec) != bool(args.run):
        parser.error("give --job, or --spec with one or more --run")
    return args


def _exit_on_sigterm(signum, frame):
    # Snakemake and Slurm stop jobs with SIGTERM; exiting through SystemExit
    # lets the atomic writers remove their temporary files. Once the job knows
    # its runs, checkpoints.JobCheckpoint.on_signal takes over (saves, exits 75).
    raise SystemExit(128 + signum)


def describe_cell(spec: dict) -> str:
    """A job's first log lines: which cell and settings it trains."""
    problem, loss, optimizer = spec["problem"], spec["loss"], spec["optimizer"]
    trained_by = (
        "minimised directly (objective)"
        if loss is None
        else f"loss {loss['name']} = torch.nn.{loss['class']}(**{loss['kwargs']})"
    )
    return (
        f"cell: problem {problem['name']} = {problem['problem']}(**{problem['kwargs']}), "
        f"{trained_by}, optimizer {optimizer['name']} variant {spec['variant']} = "
        f"{_qualified(optimizer['class'])}(**{optimizer['kwargs']}), {spec['steps']} steps"
    )


def _qualified(cls: str) -> str:
    return cls if "." in cls else f"torch.optim.{cls}"


def job_runs(args) -> list[jobs.Run]:
    """The job's runs, each spec told where the user's problem files are."""
    if args.job:
        runs = jobs.expand(args.job)
    else:
        spec = json.loads(args.spec)
        runs = [jobs.Run(spec, int(seed), tsv, sidecar) for seed, tsv, sidecar in args.run]
    # Given on the command line, so that moving the repository changes no spec.
    extra = {"problems_dir": args.problems_dir, "optimizers_dir": args.optimizers_dir}
    specs = {}  # one dict per cell, shared by its runs
    return [
        jobs.Run(
            specs.setdefault(id(run.spec), {**run.spec, **extra}), run.seed, run.tsv, run.sidecar
        )
        for run in runs
    ]


def _group_key(spec: dict) -> tuple:
    """Runs that one batched call may train together: one (problem, loss, optimizer)."""
    # An objective problem has no loss; its runs' paths say "objective" (settings.OBJECTIVE).
    loss = "objective" if spec["loss"] is None else spec["loss"]["name"]
    return spec["problem"]["name"], loss, spec["optimizer"]["name"]


def groups_of(runs: list[jobs.Run]) -> list[list[jobs.Run]]:
    grouped: dict[tuple, list[jobs.Run]] = {}
    for run in runs:
        grouped.setdefault(_group_key(run.spec), []).append(run)
    return list(grouped.values())


def choose_engine(requested: str, runs: list[jobs.Run]) -> tuple[bool, str, bool]:
    """(batched?, why, probed?) for one group, before anything is built: the policy
    (batch_policy.choose) and, for a class from a package or a file, the
    run-independence probe (engines/probe.py) on the group's keyword arguments."""
    spec = runs[0].spec
    loss = spec["loss"]
    name = spec["optimizer"]["class"]
    grouped = bool(spec["optimizer"].get("groups"))
    ok, reason = batch_policy.choose(
        requested,
        name,
        spec["problem"]["kind"],
        loss and loss["class"],
        loss and loss["kwargs"],
        len(runs),
        grouped=grouped,
    )
    single = requested == "auto" and len(runs) == 1
    if ok or requested == "loop" or grouped or single or not batch_policy.needs_probe(name):
        return ok, reason, False
    loss_ok, loss_reason = batch_policy.loss_batchable(
        spec["problem"]["kind"], loss and loss["class"], loss and loss["kwargs"]
    )
    if not loss_ok:
        return False, loss_reason, False
    kwargs = [training.optimizer_kwargs(run.spec["optimizer"]) for run in runs]
    # The same verdict the config check gave engine batched before any job.
    passed, verdict = eligibility.class_verdict(
        spec["optimizer"], spec.get("optimizers_dir"), kwargs
    )
    if passed:
        return True, f"batched: {verdict}; {loss_reason}", True
    if requested == "batched":
        raise training.RunError(batch_policy.batched_refusal(["/".join(_group_key(spec))], verdict))
    return False, verdict, False


def _for_seed(seed, build, *args):
    """build(*args), a RunError telling which seed failed (the job's log names it)."""
    try:
        return build(*args)
    except training.RunError as error:
        error.seed = seed
        raise


def train_loop(runs, device, reason, on_step=None, job=None):
    for run in runs:
        if job is not None and job.stored(run.tsv):
            yield from _stored(job, run.tsv, [run], on_step)
            continue
        hook = None if job is None else job.unit(run.tsv)
        result = _for_seed(run.seed, training.train_one, run.spec, run.seed, device, on_step, hook)
        if job is not None:
            job.finish(run.tsv, [_kept(result, "loop", reason, {})])
        yield run, result, "loop", reason, {}


def _kept(result, engine, reason, details) -> dict:
    """What a checkpoint keeps of a trained run to write its files after a restart."""
    return {"result": dataclasses.asdict(result), "engine": [engine, reason, details]}


def _stored(job, unit, runs, on_step):
    """The runs of a unit the checkpoint holds as trained, as the engines yield them."""
    for run, kept in zip(runs, job.stored(unit), strict=True):
        if on_step is not None:
            on_step(run.spec["steps"])
        yield run, training.RunResult(**kept["result"]), *kept["engine"]


def train_batched(runs, device, log, exact_only=False, probed=None, on_step=None, job=None):
    """The group's runs through the batched engine, in chunks of MAX_BATCH runs;
    ``job`` (checkpoints.JobCheckpoint): each chunk is one unit of its checkpoint."""
    spec = runs[0].spec
    criterion = None
    if spec["loss"] is not None:
        criterion = _for_seed(runs[0].seed, training.build_loss, spec["loss"])
    for start in range(0, len(runs), MAX_BATCH):
        chunk = runs[start : start + MAX_BATCH]
        unit = f"{len(chunk)} run(s) from {chunk[0].tsv}"  # its name in the checkpoint
        if job is not None and job.stored(unit):
            yield from _stored(job, unit, chunk, on_step)
            continue
        hook = None if job is None else job.unit(unit)
        instances = [
            _for_seed(run.seed, training.build_instance, run.spec, run.seed) for run in chunk
        ]
        kwargs = []
        checked = set()
        for run, instance in zip(chunk, instances, strict=True):
            entry = run.spec["optimizer"]
            if run.spec["variant"] not in checked:
                # Bad kwargs fail here with the loop's message naming the entry.
                _for_seed(
                    run.seed,
                    training.build_optimizer,
                    entry,
                    instance.model.parameters(),
                    run.spec.get("optimizers_dir"),
                )
                checked.add(run.spec["variant"])
            kwargs.append(training.optimizer_kwargs(entry))
        cls = training.optimizer_class(spec["optimizer"], spec.get("optimizers_dir"))
        try:
            result = batched.train_batched(
                instances,
                criterion,
                cls,
                kwargs,
                spec["steps"],
                device,
                exact_only=exact_only,
                probed=probed,
                schedules=[run.spec["optimizer"].get("schedule") for run in chunk],
                eval_every=spec.get("eval_every", 0),
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
            print(f"engine: {reason}", file=log, flush=True)
            yield from _finished(job, unit, train_loop(chunk, device, reason, on_step))
            continue
        details = {
            key: result.details[key]
            for key in (
                "forward",
                "variants",
                "runs",
                "batches",
                "kernels_exact",
                "bytes_per_run",
                "probe",
            )
            if key in result.details
        }
        details["batch_seconds"] = result.seconds
        print(
            f"engine {result.engine}: {len(chunk)} run(s) of {'/'.join(map(str, _group_key(spec)))}"
            f" together in {result.seconds:.3f} s; {result.reason}"
            + (f"; forward {details['forward']}" if "forward" in details else "")
            + (f", kernels exact {details['kernels_exact']}" if "kernels_exact" in details else ""),
            file=log,
            flush=True,
        )
        share = result.seconds / len(chunk)
        trained = []
        for run, instance, outcome in zip(chunk, instances, result.runs, strict=True):
            # Each instance holds its run's final weights, as after the loop.
            heldout = instance.evaluate(criterion)
            trained.append(
                (
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
            )
        yield from _finished(job, unit, trained)


def _finished(job, unit, trained):
    """A chunk's trained runs, kept in the job's checkpoint as its unit ``unit``."""
    trained = list(trained)
    if job is not None:
        job.finish(unit, [_kept(*outcome[1:]) for outcome in trained])
    yield from trained


def verified(trained, device, log, fall_back: bool):
    """The batched runs of one group, after a sample of them was re-trained in the
    loop and compared byte for byte (engines/verification.py): under engine auto
    (``fall_back``) the group is re-trained in the loop on any difference."""
    written, line = verification.check_group(
        list(trained),
        lambda run: _for_seed(run.seed, training.train_one, run.spec, run.seed, device),
        fall_back,
    )
    if line:
        print(line, file=log, flush=True)
    yield from written


def main(argv=None) -> int:
    started = time.perf_counter()
    for signum in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(signum, _exit_on_sigterm)
    args = parse_args(argv)
    # The runs the job's last finished start wrote (reuse.py), read before the
    # manifest goes: a manifest then exists only if the job's latest start ran
    # to its end (a previous version stays in Snakemake's backup until the job
    # ends), which is what accept_finished.py relies on.
    previous = reuse.previous_runs(args.manifest)
    if args.manifest:
        Path(args.manifest).unlink(missing_ok=True)
    runs = job_runs(args)
    torch.set_num_threads(max(1, args.threads))
    # The log says what ran, line by line as it happens, so that a job's log
    # is never empty and a killed job's log shows how far it got.
    log = sys.stderr
    for spec in {id(run.spec): run.spec for run in runs}.values():
        print(describe_cell(spec), file=log, flush=True)
    seeds = " ".join(map(str, dict.fromkeys(run.seed for run in runs)))
    print(f"runs: seeds {seeds}", file=log, flush=True)
    tracker = progress.Progress(
        args.progress, len(runs), sum(run.spec["steps"] for run in runs), log=log
    )
    try:
        code = train_runs(args, runs, previous, started, log, tracker)
    except BaseException:
        tracker.finish(progress.FAILED)
        raise
    tracker.finish(progress.DONE if code == 0 else progress.FAILED)
    return code


def train_runs(args, runs, previous, started, log, tracker) -> int:
    """Train (or reuse) the job's runs and write their files; the exit code."""
    requested_device = runs[0].spec["device"]
    try:
        device = training.resolve_device(requested_device)
    except training.RunError as error:
        print(f"error: {error}", file=log)
        return 2
    numerics.apply(args.numerics, torch, device)
    environment = training.environment(device)
    environment["numerics"] = numerics.record(args.numerics, NUMERICS_FOUND, torch, device)
    print(
        f"training on {environment['device']} ({environment['device_name']}), "
        f"device {requested_device} requested, torch {environment['torch_version']}, "
        f"{torch.get_num_threads()} thread(s)",
        file=log,
        flush=True,
    )
    print(numerics.describe(environment["numerics"]), file=log, flush=True)
    context = {
        "numerics": args.numerics,
        "engine": args.engine,
        "threads": torch.get_num_threads(),
        "device": environment["device"],
        "torch": environment["torch_version"],
        "code": commands.training_code_digest(Path(__file__).resolve().parent),
    }
    digests = {id(run): reuse.settings_digest(run.spec, run.seed, context) for run in runs}
    kept, copied = reused_runs(runs, digests, previous, args.index)
    if kept:
        print(
            f"reused: {len(kept)} run(s) trained before with these settings and code (their "
            f"files and SHA-256 unchanged), {copied} of them copied from another job or "
            "study's files",
            file=log,
            flush=True,
        )
    job = checkpoints.JobCheckpoint(
        args.checkpoint or checkpoints.path_for(args.manifest),
        checkpoints.job_key([digests[id(run)] for run in runs]),
        checkpoints.Interval(args.checkpoint_steps, args.checkpoint_seconds),
        log,
    )
    job.load()
    job.install()  # SIGTERM/SIGUSR1 from now on: save, then exit EXIT_PREEMPTED
    kept_ids = {id(run) for run in kept}
    to_train = [run for run in runs if id(run) not in kept_ids]
    tracker.runs(len(kept))
    tracker.steps(sum(run.spec["steps"] for run in kept))
    groups = groups_of(to_train)
    try:
        # Every group timed before any trains, taking turns (engines/timing.py).
        timings = timing.step_times([group[0].spec for group in groups], device)
    except training.RunError as error:
        print(f"error: {error}", file=log)
        return 2
    for group, step_timing in zip(groups, timings, strict=True):
        if step_timing is None:
            continue  # it failed to run; its training says why
        print(
            f"timing: {'/'.join(map(str, _group_key(group[0].spec)))} takes "
            f"{step_timing['seconds_per_step'] * 1e6:.1f} us per step alone in the loop "
            f"(median of {step_timing['timed_steps']}, {step_timing['threads']} thread(s))",
            file=log,
            flush=True,
        )
    for group, step_timing in zip(groups, timings, strict=True):
        try:
            use_batched, reason, probed = choose_engine(args.engine, group)
        except training.RunError as error:
            print(f"error: {error}", file=log)
            return 2
        if use_batched:
            trained = train_batched(
                group,
                device,
                log,
                exact_only=args.engine == "auto",
                probed=reason if probed else None,
                on_step=tracker.steps,
                job=job,
            )
            trained = verified(trained, device, log, fall_back=args.engine == "auto")
        else:
            name = "/".join(map(str, _group_key(group[0].spec)))
            print(f"engine loop: {len(group)} run(s) of {name}; {reason}", file=log, flush=True)
            trained = train_loop(group, device, reason, tracker.steps, job)
        try:
            for run, result, engine, engine_reason, details in trained:
                engine_run = (engine, engine_reason, details, step_timing)
                write(run, result, engine_run, environment, digests[id(run)], started, log)
                reuse.remember(args.index, digests[id(run)], run.tsv, run.sidecar)
                tracker.runs(1)
        except training.RunError as error:
            seed = getattr(error, "seed", None)
            print(f"error: {'' if seed is None else f'seed {seed}: '}{error}", file=log)
            return 2
    if args.manifest:
        runfiles.write_manifest(
            args.manifest, [(run.tsv, run.sidecar, digests[id(run)]) for run in runs]
        )
        # A manifest set aside for a changed run (reuse.PREVIOUS) has served.
        Path(f"{args.manifest}{reuse.PREVIOUS}").unlink(missing_ok=True)
        print(f"manifest: {args.manifest}", file=log, flush=True)
    job.remove()  # every file is written: the checkpoint has served
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


def write(run, result, engine_run, environment, settings_sha256, started, log):
    spec, seed = run.spec, run.seed
    engine, engine_reason, details, step_timing = engine_run
    metadata = {
        **{key: value for key, value in spec.items() if key != "device"},
        "device_requested": spec["device"],
        "seed": seed,
        **environment,
        "python_version": platform.python_version(),
        "engine": engine,
        "engine_reason": engine_reason,
        "engine_details": details,
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
    runfiles.write_run(
        run.tsv, result.losses, run.sidecar, metadata, result.evaluations, result.lrs, result.curve
    )
    print(
        f"seed {seed}: final loss {result.losses[-1]!r} after {len(result.losses)} steps, "
        f"{result.seconds!r} s training, written to {run.tsv} and {run.sidecar}",
        file=log,
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
