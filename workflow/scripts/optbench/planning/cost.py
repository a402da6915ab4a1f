"""What a grid will cost, known before any job runs: runs, steps and each training job's memory.

Torch-free, for planning. A problem's own figures are facts its file declares
(``optbench.problems.Facts``: ``RUN_BYTES``, ``RUN_STEP_US``), read with its
declaration; where a file leaves one out, the fallbacks here apply.

The memory of a training job is estimated from what the code keeps (an upper
estimate, not a measurement):

- ``PROCESS_BYTES``: the process with torch imported (measured: about 300 MB
  on the CPU build; rounded up);
- per run trained at once (the batched engine holds a chunk of at most
  ``MAX_BATCH`` runs, the loop one): its model, gradients, optimizer state and
  data, the problem's ``RUN_BYTES`` (``text_transformer`` keeps its
  activations, 4 MiB), else ``STATE_BYTES`` (``digits_mlp``'s figure, measured
  250 KiB per run and rounded up, above every other small problem's);
- per run-step of those runs: the recorded loss as float32 on the device, as
  a Python float in a list, and as a line of text when the TSV is written,
  ``STEP_BYTES``.

So ``steps: 1000000000`` on the default grid (40 runs a job) needs about
40 x 1e9 x 120 B = 4.8 TB and is refused; the default job is about 420 MiB.

The training time is estimated (``training_seconds``) from the per-run-step
costs each problem declares (``RUN_STEP_US``, measured on every built-in) for
the engine each cell will use, plus each job's start-up: a rough figure (the
machine, the optimizer and the problem's parameters move it by a factor of a
few), said as such in the dry run. A cost a problem does not declare is
guessed (``GUESSED_RUN_STEP_US``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from optbench.planning import batch_policy

PROCESS_BYTES = 400 * 2**20
# Bytes per run trained together, for a problem that declares no RUN_BYTES.
STATE_BYTES = 256 * 2**10
STEP_BYTES = 120
# Runs a training job trains together at most (group_training's chunk): the engine
# keeps them all in memory (about 22 KiB per run on the reference problem,
# 250 KiB on digits_mlp), and the speed-up levels off well before this
# (tools/benchmark_engines.py).
MAX_BATCH = 1000

# Microseconds per run-step for an engine a problem's RUN_STEP_US leaves out
# (a user's problem: guessed): the loop, no batched figure (the loop's cost is
# taken), L-BFGS in the loop, no batched L-BFGS (the loop's L-BFGS is taken).
GUESSED_RUN_STEP_US = {"loop": 1000, "batched": None, "lbfgs_loop": 20000, "lbfgs_batched": None}
JOB_START_SECONDS = 2.5  # a training job's start-up: Python and torch imported


def run_step_us(problem) -> dict:
    """A problem entry's microseconds per run-step by engine (optbench.problems
    RUN_STEP_ENGINES): what its file declares, else the guess."""
    return {**GUESSED_RUN_STEP_US, **problem.facts.run_step_us}


def run_bytes(problem) -> int:
    """The bytes a run of a problem entry keeps while trained together with others."""
    declared = problem.facts.run_bytes
    return STATE_BYTES if declared is None else declared


def job_bytes(runs: int, steps: int, state: int = STATE_BYTES) -> int:
    """Estimated peak memory of a training job of ``runs`` runs of ``steps`` steps,
    each run trained together keeping ``state`` bytes."""
    together = min(runs, MAX_BATCH)
    return PROCESS_BYTES + together * (state + steps * STEP_BYTES)


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
    seconds: float | None = None  # training time on one core, estimated (rough)

    def describe(self, limit: int | None, share: float | None = None) -> str:
        """The plan in one line; ``share``: the fraction of its run-steps still to
        train (the rest reused), which scales the time estimate where given."""
        have = f" (this machine: {_size(limit)})" if limit else ""
        time = (
            ""
            if self.seconds is None
            else f"; training takes roughly {_duration(self.seconds)} on one core"
        )
        if self.seconds is not None and share is not None and share < 1:
            time += f" ({_duration(self.seconds * share)} for the runs to train)"
        return (
            f"planned: {self.runs:,} runs, {self.run_steps:,} run-steps in {self.jobs:,} "
            f"training job(s); the largest job, {self.largest_runs:,} runs of "
            f"{self.largest_steps:,} steps, needs about {_size(self.largest_bytes)}{have}{time}"
        )


def plan(jobs: list[tuple], runs: int, run_steps: int, seconds: float | None = None) -> Plan:
    """``jobs``: (runs, steps of its longest problem[, bytes per run]) per training job."""
    largest_job = max(jobs, key=lambda job: job_bytes(*job)) if jobs else (0, 0)
    runs_of, steps_of = largest_job[:2]
    largest = job_bytes(*largest_job)
    return Plan(runs, run_steps, len(jobs), runs_of, steps_of, largest, seconds)


def training_seconds(experiment, jobs: int) -> float:
    """The training time of ``experiment`` on one core, roughly: each cell's
    run-steps at the measured cost of its problem under the engine it will use
    (the batched engine where the policy allows it; a class the job's probe
    decides: the loop), with the runs that verify each batch in the loop, plus
    ``jobs`` start-ups."""
    # A batched cell's job re-trains one run of it in the loop to verify the
    # batch (engines/verification.py): one run per seed range.
    checks = len(experiment.seed_ranges())
    seeds = len(experiment.all_seeds)
    return jobs * JOB_START_SECONDS + sum(
        cell_seconds(experiment, cell, seeds, checks) for cell in experiment.cells()
    )


def job_seconds(experiment, cells, seeds: int) -> float:
    """One training job's time on one core, roughly: ``cells`` for ``seeds`` seeds
    each, its start-up and the one run per cell that verifies a batch."""
    return JOB_START_SECONDS + sum(cell_seconds(experiment, cell, seeds, 1) for cell in cells)


def cell_seconds(experiment, cell, seeds: int, checks: int) -> float:
    """One cell's training time for ``seeds`` runs, with ``checks`` runs that verify
    its batches in the loop where it trains batched (the engine as the policy
    chooses it for the grid's number of seeds)."""
    problem = experiment.problems[cell.problem]
    costs = run_step_us(problem)
    optimizer = experiment.optimizers[cell.optimizer]
    loss = experiment.losses.get(cell.loss)
    # No probe at plan time: a class the job's probe decides counts as the loop.
    batched = batch_policy.choose_engine(
        experiment.engine,
        optimizer.cls,
        problem.kind,
        loss and loss.cls,
        loss and loss.kwargs,
        len(experiment.all_seeds),
        grouped=bool(optimizer.groups),
    ).batched
    lbfgs = optimizer.cls == "LBFGS"  # its own costs: several evaluations per step
    loop_us = costs["lbfgs_loop"] if lbfgs else costs["loop"]
    batched_us = costs["lbfgs_batched"] if lbfgs else costs["batched"]
    batched = batched and batched_us is not None
    cost_us = batched_us if batched else loop_us
    total = 0.0
    if batched:
        total += loop_us * problem.step_cost_factor * problem.steps * checks / 1e6
    # A larger model size: its run-steps cost more than the defaults' measured ones.
    return total + cost_us * problem.step_cost_factor * problem.steps * seeds / 1e6


def plan_for(experiment) -> Plan:
    """The work of a settings.Experiment and its largest training job, as planned."""
    steps = {name: problem.steps for name, problem in experiment.problems.items()}
    state = {name: run_bytes(problem) for name, problem in experiment.problems.items()}
    cells = experiment.cells()
    if experiment.job_scope != "cell":
        sizes = [
            (
                job.runs,
                max(steps[cell.problem] for cell in job.cells),
                max(state[cell.problem] for cell in job.cells),
            )
            for job in experiment.training_jobs()
        ]
    else:  # one job per cell and seed range
        ranges = experiment.seed_ranges()
        sizes = [
            (len(seeds.seeds), steps[cell.problem], state[cell.problem])
            for cell in cells
            for seeds in ranges
        ]
    run_steps = sum(steps[cell.problem] for cell in cells) * len(experiment.all_seeds)
    seconds = training_seconds(experiment, len(sizes))
    return plan(sizes, experiment.n_runs, run_steps, seconds)


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


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _size(count: int) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if count >= scale:
            return f"{count / scale:.3g} {unit}"
    return f"{count / 1e3:.3g} kB"
