"""Training job: runs one or more seeds of one (problem, loss, optimizer, variant) cell.

Called from rule train as a plain command, not through ``script:``, so the job
imports torch and the standard library only (no Snakemake, pandas or
matplotlib). Usage:

    python train.py --spec JSON --run SEED TSV SIDECAR [--run ...] [--threads N]
        [--problems-dir DIR]
"""

import argparse
import json
import platform
import signal
import sys
import time

import torch

from optbench import runfiles, training


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, help="the cell's settings as JSON")
    parser.add_argument(
        "--run", nargs=3, action="append", required=True, metavar=("SEED", "TSV", "SIDECAR")
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--problems-dir", default="", help="the folder of user problems (problems/ of the repo)"
    )
    return parser.parse_args(argv)


def _exit_on_sigterm(signum, frame):
    # Snakemake and Slurm stop jobs with SIGTERM; exiting through SystemExit
    # lets the atomic writers remove their temporary files.
    raise SystemExit(128 + signum)


def describe_cell(spec: dict) -> str:
    """The job's first log line: which cell and settings it trains."""
    problem, loss, optimizer = spec["problem"], spec["loss"], spec["optimizer"]
    trained_by = (
        "minimised directly (objective)"
        if loss is None
        else f"loss {loss['name']} = torch.nn.{loss['class']}(**{loss['kwargs']})"
    )
    return (
        f"cell: problem {problem['name']} = {problem['problem']}(**{problem['kwargs']}), "
        f"{trained_by}, optimizer {optimizer['name']} variant {spec['variant']} = "
        f"torch.optim.{optimizer['class']}(**{optimizer['kwargs']}), {spec['steps']} steps"
    )


def main(argv=None) -> int:
    started = time.perf_counter()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    args = parse_args(argv)
    # Where the user's problem files are: the repository's problems/ folder,
    # given on the command line so that moving the repository changes no spec.
    spec = {**json.loads(args.spec), "problems_dir": args.problems_dir}
    torch.set_num_threads(max(1, args.threads))
    # The log says what ran, line by line as it happens, so that a job's log
    # is never empty and a killed job's log shows how far it got.
    log = sys.stderr
    print(describe_cell(spec), file=log, flush=True)
    print(f"runs: seeds {' '.join(seed for seed, _, _ in args.run)}", file=log, flush=True)
    try:
        device = training.resolve_device(spec["device"])
    except training.RunError as error:
        print(f"error: {error}", file=log)
        return 2
    environment = training.environment(device)
    print(
        f"training on {environment['device']} ({environment['device_name']}), "
        f"device {spec['device']} requested, torch {environment['torch_version']}, "
        f"{torch.get_num_threads()} thread(s)",
        file=log,
        flush=True,
    )
    for seed_text, tsv, sidecar in args.run:
        seed = int(seed_text)
        try:
            result = training.train_one(spec, seed, device)
        except training.RunError as error:
            print(f"error: seed {seed}: {error}", file=log)
            return 2
        metadata = {
            **{key: value for key, value in spec.items() if key != "device"},
            "device_requested": spec["device"],
            "seed": seed,
            **environment,
            "python_version": platform.python_version(),
            "train_seconds": result.seconds,
            "job_seconds_before_this_run": time.perf_counter() - started,
            "first_nonfinite_step": runfiles.first_nonfinite_step(result.losses),
            "evaluations": sum(result.evaluations),
            "heldout": result.heldout,
        }
        runfiles.write_run(tsv, result.losses, sidecar, metadata, result.evaluations)
        print(
            f"seed {seed}: final loss {result.losses[-1]!r} after {len(result.losses)} steps, "
            f"{result.seconds!r} s training, written to {tsv} and {sidecar}",
            file=log,
            flush=True,
        )
    print(f"done: {len(args.run)} run(s) in {time.perf_counter() - started:.3f} s", file=log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
