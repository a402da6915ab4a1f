"""What engine auto's verification costs: training jobs of a config, their logs read.

After a group trains batched, the job re-trains a sample of its runs in the
per-run loop and compares bytes (engines/verification.py); its log says
``verified: ... in V s, against B s batched``. This runs some of a config's
training jobs as the workflow would (train.py --job, one thread) in a
temporary folder and prints, per job and in all, the verification's seconds
against the batched training's, against all training (batched, loop and
verification) and against the job's wall time. Run from the repository root:

    python3 tools/verification_cost.py config.yaml
    python3 tools/verification_cost.py configs/tuned.yaml --jobs 2 --engine auto
    python3 tools/verification_cost.py configs/tuned.yaml --parallel 2

``--parallel 2`` runs two jobs at a time (each job's figures are its own, so
its ratios hold; train.py trains on one thread, as the workflow runs it, so a
machine of two cores fits two);
``--every N`` takes every Nth job only.

Not run by CI. Ratios, not absolute times: the same job measures both.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "workflow" / "scripts"
sys.path.insert(0, str(SCRIPTS))

from optbench.planning import jobs, settings  # noqa: E402

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
VERIFIED = re.compile(r"^verified: .* in ([0-9.]+) s, against ([0-9.]+) s batched: (.*)$")
BATCHED = re.compile(r"^engine batched: .* together in ([0-9.]+) s;")


def measure(log: str) -> dict:
    verified = [VERIFIED.match(line) for line in log.splitlines()]
    verified = [m for m in verified if m]
    batched = sum(float(m.group(1)) for m in map(BATCHED.match, log.splitlines()) if m)
    return {
        "verify": sum(float(m.group(1)) for m in verified),
        "batched": batched,
        "groups": len(verified),
        "differ": sum(m.group(3) != "bit-identical" for m in verified),
    }


def run_job(experiment, job, folder: str) -> tuple[subprocess.CompletedProcess, float]:
    """Runs one training job as the workflow would; returns it and its wall seconds."""
    patterns = [
        f"{folder}/{{problem}}/{{loss}}/{{optimizer}}/{{variant}}/{{seed}}.{x}"
        for x in ("tsv", "json")
    ]
    argument = jobs.argument(experiment, job.cells, job.seeds, *patterns)
    command = [
        sys.executable,
        str(SCRIPTS / "train.py"),
        "--job",
        argument,
        "--engine",
        experiment.engine,
        "--problems-dir",
        str(REPO / "problems"),
    ]
    started = time.perf_counter()
    process = subprocess.run(command, capture_output=True, text=True)
    return process, time.perf_counter() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+")
    parser.add_argument("--jobs", type=int, default=0, help="the first N jobs only (0: all)")
    parser.add_argument("--every", type=int, default=1, help="every Nth job only (1: all)")
    parser.add_argument("--parallel", type=int, default=1, help="jobs run at once (default 1)")
    parser.add_argument("--engine", default=None, help="override the config's engine")
    args = parser.parse_args(argv)
    if args.every < 1 or args.parallel < 1:
        parser.error("--every and --parallel must be 1 or more")
    config = settings.load_config_files(args.configs)
    if args.engine:
        config["engine"] = args.engine
    experiment = settings.validate(config, SCHEMA, problems_dir=REPO / "problems")
    planned = experiment.training_jobs()[:: args.every][: args.jobs or None]
    total = {"verify": 0.0, "batched": 0.0, "wall": 0.0, "trained": 0.0}
    with (
        tempfile.TemporaryDirectory() as folder,
        ThreadPoolExecutor(args.parallel) as pool,
    ):
        finished = pool.map(lambda job: run_job(experiment, job, folder), planned)
        for job, (process, wall) in zip(planned, finished, strict=True):
            if process.returncode != 0:
                print(process.stderr[-3000:], file=sys.stderr)
                return 1
            found = measure(process.stderr)
            done = re.search(r"^done: .* in ([0-9.]+) s$", process.stderr, re.M)
            trained = float(done.group(1)) if done else wall
            print(
                f"{'/'.join(job.key)} seeds {job.label}: {job.runs} runs, verification "
                f"{found['verify']:.2f} s of {found['groups']} group(s) ({found['differ']} "
                f"differed) / batched training {found['batched']:.2f} s = "
                f"{found['verify'] / max(found['batched'], 1e-9):.1%}; / job {trained:.2f} s = "
                f"{found['verify'] / trained:.1%}",
                flush=True,
            )
            total["verify"] += found["verify"]
            total["batched"] += found["batched"]
            total["trained"] += trained
            total["wall"] += wall
    print(
        f"all {len(planned)} jobs: verification {total['verify']:.2f} s / batched training "
        f"{total['batched']:.2f} s = {total['verify'] / max(total['batched'], 1e-9):.1%}; / the "
        f"jobs' time in train.py {total['trained']:.2f} s = "
        f"{total['verify'] / total['trained']:.1%}; / wall {total['wall']:.2f} s = "
        f"{total['verify'] / total['wall']:.1%}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
