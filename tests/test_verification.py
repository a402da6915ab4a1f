"""engine auto keeps the loop's bits by construction: after a group trained
batched, a sample of its runs is re-trained in the per-run loop and compared
byte for byte (engines/verification.py); any difference sends the group to the
loop. Checked with an optimizer that couples stacked runs only after the
run-independence probe's 8 steps, against a hand-written loop."""

import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from test_jobs import PATTERNS, sidecar
from test_optimizers import hand_loop

from conftest import SCHEMA, TRAIN_SCRIPT, training_job
from optbench.engines import optimizers, probe, verification
from optbench.planning import jobs, settings

FILES = Path(__file__).resolve().parent / "optimizer_files"
LATE = "late_coupling.LateCouplingSGD"
STEPS = 40


def late_coupling_class():
    return optimizers.resolve(LATE, FILES)


def grid_of(optimizers, seeds=(0, 1, 2), steps=STEPS):
    config = {
        "seeds": list(seeds),
        "steps": steps,
        "device": "cpu",
        "optimizers": optimizers,
        "losses": {"mse": {"class": "MSELoss"}},
        "tuning_seeds": [100],
    }
    return settings.validate(config, SCHEMA, optimizers_dir=FILES)


def run_job(tmp_path, grid, engine):
    (job,) = jobs.plan(grid.cells(), grid.seed_ranges(), "problem")
    argument = jobs.argument(grid, job.cells, job.seeds, *[str(tmp_path / p) for p in PATTERNS])
    command = [sys.executable, str(TRAIN_SCRIPT), "--job", argument, "--engine", engine]
    command += ["--optimizers-dir", str(FILES)]
    process = training_job(command)
    assert process.returncode == 0, process.stderr
    return process, jobs.expand(argument)


def tsv_losses(run):
    with open(run.tsv) as handle:
        return [float(line.split("\t")[1]) for line in handle.read().splitlines()[1:]]


LATE_ENTRY = {"late": {"class": LATE, "kwargs": {"lr": 0.05}, "sweep": {"lr": [0.02]}}}


def test_the_late_coupling_optimizer_passes_the_probe_and_couples_after_it():
    cls = late_coupling_class()
    assert probe.independent(cls, [{"lr": 0.05}])[0]
    # Stacked, each run's step 11 is scaled by both runs' gradient norm, not its own.

    def trajectory(start, steps):
        weights = torch.tensor(start, requires_grad=True)
        optimizer = cls([weights], lr=0.1)
        for _ in range(steps):
            weights.grad = weights.detach().clone()
            optimizer.step()
        return weights.detach()

    for steps, equal in ((10, True), (11, False)):
        stacked = trajectory([[1.0], [10.0]], steps)
        alone = torch.cat([trajectory([[1.0]], steps), trajectory([[10.0]], steps)])
        assert torch.equal(stacked, alone) == equal, steps


def test_auto_sends_the_late_coupling_optimizer_to_the_loop_with_the_loops_bytes(tmp_path):
    grid = grid_of(LATE_ENTRY)
    process, runs = run_job(tmp_path / "auto", grid, "auto")
    _, loop_runs = run_job(tmp_path / "loop", grid, "loop")
    cls = late_coupling_class()
    for run, looped in zip(runs, loop_runs, strict=True):
        # The loop's bytes, and the losses of a hand-written loop.
        with open(run.tsv, "rb") as a, open(looped.tsv, "rb") as b:
            assert a.read() == b.read(), run.tsv
        lr = run.spec["optimizer"]["kwargs"]["lr"]
        expected, _ = hand_loop(run.spec, run.seed, lambda m, lr=lr: cls(m.parameters(), lr))
        assert tsv_losses(run) == expected
        meta = sidecar(run)
        assert meta["engine"] == "loop", meta["engine_reason"]
        assert meta["engine_reason"].startswith(
            "engine auto re-trained the group in the per-run loop: the batched engine's "
            "bytes differed from the loop's (seed 0 of variant base: loss of step 11 "
        ), meta["engine_reason"]
        assert meta["engine_details"]["verification"]["runs"] == "seed 0 (base), seed 0 (lr0.02)"
    assert "verified: 2 of 8 batched run(s) re-trained" in process.stderr, process.stderr
    assert "re-trained all 8 in the loop" in process.stderr


def test_engine_batched_keeps_the_batch_and_records_the_difference(tmp_path):
    process, runs = run_job(tmp_path, grid_of(LATE_ENTRY), "batched")
    assert "kept batched (engine batched was asked for)" in process.stderr, process.stderr
    cls = late_coupling_class()
    differing = 0
    for run in runs:
        meta = sidecar(run)
        assert meta["engine"] == "batched"
        assert "loss of step 11 " in meta["engine_details"]["verification"]["difference"]
        lr = run.spec["optimizer"]["kwargs"]["lr"]
        expected, _ = hand_loop(run.spec, run.seed, lambda m, lr=lr: cls(m.parameters(), lr))
        differing += tsv_losses(run)[:11] == expected[:11] and tsv_losses(run) != expected
    assert differing == len(runs)  # the first 11 losses agree, then each run is steered


def test_an_element_wise_batch_is_verified_bit_identical_and_kept(tmp_path):
    sweep = {"sgd": {"class": "SGD", "kwargs": {"lr": 0.1}, "sweep": {"lr": [0.01]}}}
    process, runs = run_job(tmp_path, grid_of(sweep, steps=12), "auto")
    assert "seed 0 (base), seed 0 (lr0.01)) in " in process.stderr
    assert ": bit-identical" in process.stderr
    for run in runs:
        meta = sidecar(run)
        assert meta["engine"] == "batched"
        assert meta["engine_details"]["verification"]["difference"] is None


def run(seed, variant, steps=10, lr=0.1):
    spec = {"variant": variant, "steps": steps, "optimizer": {"kwargs": {"lr": lr}}}
    return types.SimpleNamespace(seed=seed, spec=spec)


def test_the_sample_is_each_variants_lowest_seed_and_the_longest_run():
    runs = [run(3, "a"), run(1, "a"), run(2, "b", lr=0.5), run(0, "b", lr=0.5, steps=30)]
    assert verification.sample(runs) == [1, 3]
    runs = [run(0, "a"), run(1, "a", steps=50), run(0, "b", lr=0.5)]
    assert verification.sample(runs) == [0, 1, 2]
    # Variants with equal kwargs share one optimizer in a batch: one variant.
    assert verification.sample([run(0, "base"), run(0, "lr0.1")]) == [0]


def result(losses, heldout=None):
    return types.SimpleNamespace(
        losses=losses,
        evaluations=[1] * len(losses),
        lrs=[0.1] * len(losses),
        heldout=heldout,
        curve=[],
    )


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([1.0, 2.0], [1.0, 2.0], None),
        ([1.0, float("nan")], [1.0, float("nan")], None),
        ([1.0, 0.0], [1.0, -0.0], "loss of step 1 0.0 batched vs -0.0 in the loop (1 of 2"),
        ([1.0, 2.0], [1.0, 2.0000000000000004], "loss of step 1 2.0 batched vs 2.0000000000000004"),
    ],
)
def test_first_difference_compares_the_bits_written(a, b, expected):
    found = verification.first_difference(result(a), result(b))
    assert found == expected if expected is None else found.startswith(expected)
    assert verification.first_difference(result(a, {"heldout_loss": 1.0}), result(a)) == (
        "heldout differ"
    )


# --- engine batched: one refusal, before any job --------------------------------

NORM = {"norm": {"class": "norm_coupling.NormCouplingSGD", "kwargs": {"lr": 0.1}}}
PRODIGY = {"prodigy": {"class": "pytorch_optimizer.Prodigy", "kwargs": {}}}


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        (
            NORM,
            "optimizer norm_coupling.NormCouplingSGD runs in the per-run loop: "
            "norm_coupling.NormCouplingSGD failed the run-independence probe",
        ),
        (
            PRODIGY,
            "optimizer pytorch_optimizer.Prodigy runs in the per-run loop: "
            "pytorch_optimizer.Prodigy 4.1.0 failed the run-independence probe",
        ),
        (
            {"sf": {"class": "pytorch_optimizer.ScheduleFreeSGD", "kwargs": {"lr": 0.1}}},
            "optimizer pytorch_optimizer.ScheduleFreeSGD runs in the per-run loop: it needs "
            "train() and eval() modes",
        ),
    ],
    ids=["file", "package", "protocol"],
)
def test_engine_batched_refuses_a_class_that_fails_the_probe_at_plan_time(entry, reason):
    config = {
        "seeds": [0, 1],
        "steps": 5,
        "optimizers": entry,
        "losses": {"mse": {"class": "MSELoss"}},
        "engine": "batched",
    }
    with pytest.raises(settings.ConfigError) as error:
        settings.validate(config, SCHEMA, optimizers_dir=FILES)
    name = next(iter(entry))
    assert str(error.value).startswith(
        f"config key engine: batched, but linear/mse/{name} cannot be: {reason}"
    ), str(error.value)
    assert str(error.value).endswith(
        "Fix: set engine to auto (batched where it is safe, the per-run loop elsewhere) "
        "or leave these entries out."
    )
    # A class that passes the probe is accepted (the late-coupling one does, wrongly:
    # the job's verification records what it then finds).
    config["optimizers"] = {"late": {"class": LATE, "kwargs": {"lr": 0.05}}}
    assert settings.validate(config, SCHEMA, optimizers_dir=FILES).engine == "batched"


def test_the_job_refuses_in_the_config_checks_words(tmp_path):
    """A job started by hand (no config check) refuses with the same sentence."""
    config = {
        "seeds": [0, 1],
        "steps": 5,
        "device": "cpu",
        "optimizers": NORM,
        "losses": {"mse": {"class": "MSELoss"}},
    }
    grid = settings.validate(config, SCHEMA, optimizers_dir=FILES)  # engine auto: accepted
    (job,) = jobs.plan(grid.cells(), grid.seed_ranges(), "problem")
    argument = jobs.argument(grid, job.cells, job.seeds, *[str(tmp_path / p) for p in PATTERNS])
    command = [sys.executable, str(TRAIN_SCRIPT), "--job", argument, "--engine", "batched"]
    process = training_job([*command, "--optimizers-dir", FILES])
    assert process.returncode == 2
    with pytest.raises(settings.ConfigError) as error:
        settings.validate({**config, "engine": "batched"}, SCHEMA, optimizers_dir=FILES)
    assert f"error: {error.value}" in process.stderr, process.stderr


def test_engine_batched_records_how_far_batched_lbfgs_is_from_torchs(tmp_path):
    """The batched L-BFGS follows torch's only to float32 rounding: engine batched
    keeps it and records the first difference from torch.optim.LBFGS."""
    from test_jobs import grid_of as torch_grid
    from test_jobs import run_job as torch_job

    from optbench.engines import training

    lbfgs = {"lbfgs": {"class": "LBFGS", "kwargs": {}}}
    grid = torch_grid(lbfgs, seeds=(0, 1, 2), steps=10, problem={"quadratic": {}})
    process, runs = torch_job(tmp_path, grid, "batched")
    assert process.returncode == 0, process.stderr
    loop = training.train_one({**runs[0].spec, "problems_dir": ""}, 0, torch.device("cpu"))
    batched = tsv_losses(runs[0])
    step = next(i for i, (a, b) in enumerate(zip(batched, loop.losses, strict=True)) if a != b)
    for run in runs:
        meta = sidecar(run)
        assert meta["engine"] == "batched"
        assert meta["engine_details"]["verification"]["difference"].startswith(
            f"seed 0 of variant base: loss of step {step} {batched[step]!r} batched vs "
            f"{loop.losses[step]!r} in the loop"
        )
    assert "kept batched (engine batched was asked for)" in process.stderr


COST_TOOL = Path(__file__).resolve().parents[1] / "tools" / "verification_cost.py"


def test_the_cost_tool_reads_each_verified_group_of_every_nth_job(tmp_path):
    """tools/verification_cost.py (the figures in docs/speed.md): --every 2 runs
    every second job of the plan, and each job's line counts the groups its
    log says were verified (the default config's four optimizers train
    batched under auto, each one group of its job)."""
    config = Path(__file__).resolve().parents[1] / "config.yaml"
    planned = settings.validate(settings.load_config_files([str(config)]), SCHEMA).training_jobs()
    command = [sys.executable, str(COST_TOOL), str(config), "--every", "2", "--parallel", "2"]
    process = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert process.returncode == 0, process.stderr
    lines = process.stdout.splitlines()
    expected = [f"{'/'.join(job.key)} seeds {job.label}: {job.runs} runs" for job in planned[::2]]
    assert [line.split(", verification")[0] for line in lines[:-1]] == expected
    for line in lines[:-1]:
        assert " of 4 group(s) (0 differed) " in line, line
    assert lines[-1].startswith(f"all {len(expected)} jobs: verification ")


def test_the_cost_tool_refuses_a_step_below_one():
    process = subprocess.run(
        [sys.executable, str(COST_TOOL), "config.yaml", "--every", "0"],
        capture_output=True,
        text=True,
        cwd=COST_TOOL.parents[1],
    )
    assert process.returncode == 2
    assert "--every and --parallel must be 1 or more" in process.stderr
