"""What a grid will cost, known before any job runs: runs, steps and each training job's memory.

Torch-free, for planning. The memory of a training job is estimated from what
the code keeps (an upper estimate, not a measurement):

- ``PROCESS_BYTES``: the process with torch imported (measured: about 300 MB
  on the CPU build; rounded up);
- per run trained at once (the batched engine holds a chunk of at most
  ``MAX_BATCH`` runs, the loop one): its model, gradients, optimizer state and
  data, ``STATE_BYTES`` (the largest built-in, ``digits_mlp``, measured
  250 KiB per run; rounded up);
- per run-step of those runs: the recorded loss as float32 on the device, as
  a Python float in a list, and as a line of text when the TSV is written,
  ``STEP_BYTES``.

So ``steps: 1000000000`` on the default grid (40 runs a job) needs about
40 x 1e9 x 120 B = 4.8 TB and is refused; the default job is about 420 MiB.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PROCESS_BYTES = 400 * 2**20
STATE_BYTES = 256 * 2**10
STEP_BYTES = 120
# Runs a training job trains together at most (train.py's chunk): the engine
# keeps them all in memory (about 22 KiB per run on the reference problem,
# 250 KiB on digits_mlp), and the speed-up levels off well before this
# (tools/benchmark_engines.py).
MAX_BATCH = 1000


def job_bytes(runs: int, steps: int) -> int:
    """Estimated peak memory of a training job of ``runs`` runs of ``steps`` steps."""
    together = min(runs, MAX_BATCH)
    return PROCESS_BYTES + together * (STATE_BYTES + steps * STEP_BYTES)


def machine_bytes(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """This machine's memory (MemTotal), or None where it cannot be read."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


@dataclass(frozen=True)
class Plan:
    runs: int
    run_steps: int
    jobs: int
    largest_runs: int  # runs of the job with the largest estimate
    largest_steps: int
    largest_bytes: int

    def describe(self, limit: int | None) -> str:
        have = f" (this machine: {_size(limit)})" if limit else ""
        return (
            f"planned: {self.runs:,} runs, {self.run_steps:,} run-steps in {self.jobs:,} "
            f"training job(s); the largest job, {self.largest_runs:,} runs of "
            f"{self.largest_steps:,} steps, needs about {_size(self.largest_bytes)}{have}"
        )


def plan(jobs: list[tuple[int, int]], runs: int, run_steps: int) -> Plan:
    """``jobs``: (runs, steps of its longest problem) per training job."""
    runs_of, steps_of = max(jobs, key=lambda job: job_bytes(*job)) if jobs else (0, 0)
    return Plan(runs, run_steps, len(jobs), runs_of, steps_of, job_bytes(runs_of, steps_of))


def plan_for(experiment) -> Plan:
    """The work of a settings.Experiment and its largest training job, as planned."""
    steps = {name: problem.steps for name, problem in experiment.problems.items()}
    cells = experiment.cells()
    if experiment.job_scope != "cell":
        sizes = [
            (job.runs, max(steps[cell.problem] for cell in job.cells))
            for job in experiment.training_jobs()
        ]
    else:  # one job per cell and seed range
        ranges = experiment.seed_ranges()
        sizes = [(len(seeds.seeds), steps[cell.problem]) for cell in cells for seeds in ranges]
    run_steps = sum(steps[cell.problem] for cell in cells) * len(experiment.all_seeds)
    return plan(sizes, experiment.n_runs, run_steps)


def too_large(found: Plan, limit: int | None) -> str | None:
    """Why the largest job cannot run here, or None."""
    if limit is None or found.largest_bytes <= limit:
        return None
    return (
        f"the largest training job ({found.largest_runs:,} runs of {found.largest_steps:,} "
        f"steps) needs about {_size(found.largest_bytes)} of memory (it keeps each step's "
        f"loss of the runs it trains together), more than this machine's {_size(limit)}. "
        "Fix: fewer steps, or smaller jobs (seeds_per_job, job_scope: cell)"
    )


def _size(count: int) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if count >= scale:
            return f"{count / scale:.3g} {unit}"
    return f"{count / 1e3:.3g} kB"
