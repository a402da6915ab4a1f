"""What a grid costs, stated before any job: runs, run-steps, the largest job's memory."""

import pytest

from conftest import CONFIGS, SCHEMA, snakemake
from optbench import problems
from optbench.planning import cost, settings


def declared_costs(name: str) -> tuple:
    """A built-in problem's microseconds per run-step, as its file declares them:
    (the loop, batched, L-BFGS in the loop, the batched L-BFGS)."""
    costs = problems.declaration(name).facts.run_step_us
    return tuple(costs[engine] for engine in ("loop", "batched", "lbfgs_loop", "lbfgs_batched"))


def test_job_bytes_counts_the_runs_held_together():
    assert cost.job_bytes(40, 40) == cost.PROCESS_BYTES + 40 * (
        cost.STATE_BYTES + 40 * cost.STEP_BYTES
    )
    # beyond one chunk of the batched engine, the runs held at once stop growing
    assert cost.job_bytes(5000, 40) == cost.job_bytes(cost.MAX_BATCH, 40)


def test_plan_of_the_default_grid_and_a_huge_step_count():
    config = {"seeds": list(range(10)), "steps": 40}
    planned = cost.plan_for(settings.validate(config, SCHEMA))
    assert (planned.runs, planned.run_steps, planned.jobs) == (80, 3200, 2)
    assert (planned.largest_runs, planned.largest_steps) == (40, 40)
    assert cost.too_large(planned, 24 * 2**30) is None
    huge = cost.plan_for(settings.validate({**config, "steps": 10**9}, SCHEMA, memory_bytes=None))
    message = cost.too_large(huge, 24 * 2**30)
    assert message.startswith("the largest training job (40 runs of 1,000,000,000 steps)")
    assert "4.8 TB" in message and "more than this machine's 25.8 GB" in message
    assert cost.too_large(huge, None) is None  # unknown memory (a cluster): not refused


def test_one_job_per_run_plans_each_run():
    config = {"seeds": [0, 1, 2], "steps": 7, "job_scope": "cell", "seeds_per_job": 1}
    planned = cost.plan_for(settings.validate(config, SCHEMA))
    assert planned.jobs == planned.runs == 24
    assert planned.largest_runs == 1 and planned.largest_steps == 7


def test_machine_memory_from_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24576000 kB\nMemFree:  1 kB\n")
    assert cost.machine_bytes(meminfo) == 24576000 * 1024
    assert cost.machine_bytes(tmp_path / "missing") is None


@pytest.mark.parametrize(
    ("count", "text"), [(430e6, "430 MB"), (4.8e12, "4.8 TB"), (999, "0.999 kB")]
)
def test_sizes_in_words(count, text):
    assert cost._size(int(count)) == text


@pytest.mark.workflow
def test_the_dry_run_states_the_planned_work(tmp_path):
    process = snakemake(tmp_path, "-n", configfile=CONFIGS / "tiny.yaml")
    assert (
        "planned: 8 runs, 40 run-steps in 8 training job(s); the largest job, 1 runs of 5 "
        "steps, needs about 420 MB (this machine: "
    ) in process.stderr
    # and, roughly, its time: 8 jobs' start-ups and 40 run-steps in the per-run loop
    # (one seed per job: nothing to batch)
    expected = 8 * cost.JOB_START_SECONDS + 40 * declared_costs("linear")[0] / 1e6
    assert f"; training takes roughly {expected:.0f} s on one core" in process.stderr


def test_the_config_check_refuses_a_job_beyond_the_memory_given():
    config = {"seeds": list(range(10)), "steps": 10**6}  # about 5 GB for a job of 40 runs
    with pytest.raises(settings.ConfigError, match="config key steps: the largest training job"):
        settings.validate(config, SCHEMA, memory_bytes=4 * 10**9)
    assert settings.validate(config, SCHEMA, memory_bytes=6 * 10**9).n_runs == 80
    assert settings.validate(config, SCHEMA, memory_bytes=None).n_runs == 80


def test_the_training_time_estimate_follows_each_cells_engine():
    """Per cell: its problem's measured cost per run-step under the engine it will
    use, times its run-steps; plus each job's start-up."""
    base = {"seeds": list(range(10)), "problems": {"linear": {}, "digits_cnn": {}}}
    base["losses"] = {"mse": {"class": "MSELoss"}, "ce": {"class": "CrossEntropyLoss"}}
    base["optimizers"] = {
        "adam": {"class": "Adam", "kwargs": {"lr": 0.01}},
        "lbfgs": {"class": "LBFGS", "kwargs": {}},
    }
    experiment = settings.validate(base, SCHEMA, memory_bytes=None)
    linear, cnn = declared_costs("linear"), declared_costs("digits_cnn")
    run_steps = {"linear": 10 * 40, "digits_cnn": 10 * 40}  # 10 seeds, default steps 40
    expected = (
        linear[1] * run_steps["linear"]  # Adam on linear: batched
        + linear[2] * run_steps["linear"]  # L-BFGS: the loop, line search included
        + cnn[0] * run_steps["digits_cnn"]  # digits_cnn: the loop (vmap is not exact)
        + cnn[2] * run_steps["digits_cnn"]
        # the batch verified: one Adam run of its one seed range again in the loop
        + linear[0] * 40
    ) / 1e6
    jobs = len(experiment.training_jobs())
    assert cost.training_seconds(experiment, jobs) == pytest.approx(
        jobs * cost.JOB_START_SECONDS + expected, rel=1e-12
    )
    looped = settings.validate({**base, "engine": "loop"}, SCHEMA, memory_bytes=None)
    assert cost.training_seconds(looped, jobs) - cost.training_seconds(
        experiment, jobs
    ) == pytest.approx(
        ((linear[0] - linear[1]) * run_steps["linear"] - linear[0] * 40) / 1e6, rel=1e-9
    )
    assert cost.plan_for(experiment).describe(None).endswith(" on one core")
    # engine batched: L-BFGS on linear through the batched L-BFGS; digits_cnn's
    # history is too large for it, so its L-BFGS stays at the loop's cost. The
    # batched L-BFGS is verified too: one run in the loop.
    batched = settings.validate({**base, "engine": "batched"}, SCHEMA, memory_bytes=None)
    assert cost.training_seconds(batched, jobs) - cost.training_seconds(
        experiment, jobs
    ) == pytest.approx(
        ((linear[3] - linear[2]) * run_steps["linear"] + linear[2] * 40) / 1e6, rel=1e-9
    )


def test_a_problem_that_keeps_more_per_run_raises_the_job_estimate():
    config = {"seeds": list(range(10)), "problems": {"text_transformer": {}}}
    config["losses"] = {"ce": {"class": "CrossEntropyLoss"}}
    plan = cost.plan_for(settings.validate(config, SCHEMA, memory_bytes=None))
    runs = plan.largest_runs
    # text_transformer's file declares 4 MiB per run (its activations)
    assert plan.largest_bytes == cost.PROCESS_BYTES + runs * (
        4 * 2**20 + plan.largest_steps * cost.STEP_BYTES
    )
