"""Training job: runs the seeds of one or more (problem, loss, optimizer, variant) cells.

Called from the train rules as a plain command, not through ``script:``, so the
job imports torch and the standard library only (no Snakemake, pandas or
matplotlib). Usage:

    python train.py --job JSON [--engine auto|batched|loop] [--threads N] [--problems-dir DIR]
    python train.py --spec JSON --run SEED TSV SIDECAR [--run ...] [...]

``--job`` is optbench.planning.jobs.argument's compact description (cells, seed ranges,
path patterns), which stays short for jobs of any size; ``--spec``/``--run``
lists one cell's runs one by one. This script parses the command line; the job
itself is one call, optbench.engines.job.run (reuse, engine choice, training,
writing), and its log and each sidecar say which engine trained each run.
"""

import argparse
import gc
import signal
import sys

from optbench.engines import numerics

# The numerical libraries read their code paths when torch is imported, so the
# pins come first (numerics.py). Imported as a module (tests), the importer pins.
NUMERICS_FOUND = (
    numerics.pin(numerics.mode_from_argv(sys.argv[1:])) if __name__ == "__main__" else {}
)

from optbench import run_layout  # noqa: E402
from optbench.engines import checkpoints, job  # noqa: E402  (imports torch)

# torch leaves a few hundred thousand objects alive for good, and each of
# Python's full collections would walk them all again (torch._dynamo's import
# at the first optimizer step triggers several): frozen, they are skipped, which
# saves about 1 s of CPU per job. They stay alive as they would anyway. (Not
# when imported: the importer's own objects are its business.)
if __name__ == "__main__":
    gc.freeze()


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
        "--checkpoint", help="the job's checkpoint file (default: <manifest>.checkpoint)"
    )
    parser.add_argument(
        "--checkpoint-steps", type=int, default=0, help="save after this many steps (0: never)"
    )
    parser.add_argument(
        "--checkpoint-seconds",
        type=float,
        default=checkpoints.DEFAULT_SECONDS,
        help="save after this many seconds since the last save (0: never)",
    )
    parser.add_argument(
        "--run-files",
        choices=run_layout.LAYOUTS,
        default=run_layout.PER_RUN,
        help="per_run: a TSV and sidecar per run; per_job: one run file per job (with --job)",
    )
    args = parser.parse_args(argv)
    if args.run_files == run_layout.PER_JOB and not (args.job and args.manifest):
        parser.error("--run-files per_job needs --job and --manifest (a packed job)")
    if bool(args.job) == bool(args.spec) or bool(args.spec) != bool(args.run):
        parser.error("give --job, or --spec with one or more --run")
    return args


def _exit_on_sigterm(signum, frame):
    # Snakemake and Slurm stop jobs with SIGTERM; exiting through SystemExit
    # lets the atomic writers remove their temporary files. Once the job knows
    # its runs, checkpoints.JobCheckpoint.on_signal takes over (saves, exits 75).
    raise SystemExit(128 + signum)


def main(argv=None) -> int:
    for signum in (signal.SIGTERM, signal.SIGUSR1):  # Slurm's warning signals too
        signal.signal(signum, _exit_on_sigterm)
    args = parse_args(argv)
    return job.run(
        job.JobRequest(
            job=args.job,
            spec=args.spec,
            runs=tuple(map(tuple, args.run)),
            manifest=args.manifest,
            index=args.index,
            progress=args.progress,
            engine=args.engine,
            threads=args.threads,
            numerics=args.numerics,
            problems_dir=args.problems_dir,
            optimizers_dir=args.optimizers_dir,
            numerics_found=NUMERICS_FOUND,
            checkpoint=args.checkpoint,
            checkpoint_steps=args.checkpoint_steps,
            checkpoint_seconds=args.checkpoint_seconds,
            run_files=args.run_files,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
