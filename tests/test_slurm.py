"""The grid submitted to a real Slurm (slurm-wlm + munge on loopback) through
snakemake-executor-plugin-slurm with profiles/slurm and profiles/slurm-grouped.

The cluster (tests/slurm_cluster.py) is started once for this module; it needs
root and apt, and the tests skip with the reason otherwise (.ci/run has both).
"""

import json
import re
import subprocess
import time
from pathlib import Path

import pytest
import slurm_cluster
import yaml

from conftest import CONFIGS, REPO, run_tsvs, snakemake, snakemake_command

pytestmark = [pytest.mark.slurm, pytest.mark.workflow]
TINY = CONFIGS / "tiny.yaml"
PROFILES = REPO / "profiles"
# Test-only settings on top of a profile: without accounting sacct fails and
# the plugin would wait forever, so status comes from squeue; the first status
# check after 1 s instead of 40; no account lookup; no retry of a real error.
TEST_OVERRIDES = [
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "1",
    "--slurm-no-account",
    "--retries",
    "0",
    "--latency-wait",
    "5",
]
SUBMITTED = re.compile(r"Job \S+ has been submitted with SLURM jobid (\d+) \(log: ([^)]+)\)")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = slurm_cluster.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    slurm_cluster.install()
    cluster = slurm_cluster.Cluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def submit(cluster, workdir, profile, *args, configfile=TINY, seconds=150):
    """snakemake --workflow-profile profiles/<profile> on the cluster, bounded by timeout -k."""
    cluster.wait_idle()
    command = slurm_cluster.bounded(
        seconds,
        *snakemake_command(
            workdir,
            "--workflow-profile",
            str(PROFILES / profile),
            *TEST_OVERRIDES,
            *args,
            configfile=configfile,
        ),
    )
    before = {record["JobId"] for record in cluster.completed_jobs()}
    process = subprocess.run(command, env=cluster.env, capture_output=True, text=True)
    output = process.stdout + process.stderr
    submitted = dict(SUBMITTED.findall(output))
    # Slurm's own record of the jobs this run made (completion log, per job id)
    records = {
        record["JobId"]: record
        for record in cluster.completed_jobs()
        if record["JobId"] not in before
    }
    return process, output, submitted, records


@pytest.fixture(scope="module")
def local_runs(tiny_results):
    return run_tsvs(tiny_results)


@pytest.fixture(scope="module")
def sgd_grid(tmp_path_factory):
    """The tiny config with SGD only: 4 training jobs (2 losses x 2 seeds)."""
    config = yaml.safe_load(TINY.read_text())
    config["optimizers"] = {"sgd": config["optimizers"]["sgd"]}
    path = tmp_path_factory.mktemp("configs") / "sgd.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def gpu_run(cluster, tmp_path_factory, sgd_grid):
    """4 training jobs with device auto: every one asks Slurm for a GPU, on a
    node with two, so jobs must queue for them."""
    workdir = tmp_path_factory.mktemp("cluster")
    started = time.monotonic()
    process, output, submitted, records = submit(
        cluster, workdir, "slurm", "--config", "device=auto", configfile=sgd_grid
    )
    assert process.returncode == 0, output[-8000:] + cluster.logs()
    return workdir, output, submitted, records, time.monotonic() - started


def test_profiles_are_commented_and_grouped_profile_only_adds_grouping():
    base = yaml.safe_load((PROFILES / "slurm" / "config.yaml").read_text())
    grouped = yaml.safe_load((PROFILES / "slurm-grouped" / "config.yaml").read_text())
    assert base["executor"] == "slurm" and base["resource-scopes"] == {"gpu": "local"}
    assert {"runtime", "mem_mb"} <= set(base["default-resources"])
    assert {key: value for key, value in grouped.items() if not key.startswith("group")} == base
    assert grouped["groups"] == {"train": "training"}
    for profile in ("default", "slurm", "slurm-grouped"):
        lines = (PROFILES / profile / "config.yaml").read_text().splitlines()
        keys = [i for i, line in enumerate(lines) if re.match(r"^[a-z][\w-]*:", line)]
        for i in keys:  # every top-level entry has a comment right above it
            assert lines[i - 1].startswith("#"), f"{profile}: {lines[i]} is not commented"
        assert "--gres" not in "\n".join(line for line in lines if not line.startswith("#"))


def test_dry_run_asks_slurm_for_one_gpu_per_training_job(workdir):
    process = snakemake(
        workdir,
        "-n",
        "--workflow-profile",
        str(PROFILES / "slurm"),
        "--config",
        "device=cuda",
        configfile=TINY,
    )
    assert "gpu=1" in process.stdout + process.stderr
    cpu = snakemake(workdir, "-n", "--workflow-profile", str(PROFILES / "slurm"), configfile=TINY)
    assert "gpu=0" in cpu.stdout + cpu.stderr and "gpu=1" not in cpu.stdout + cpu.stderr


def test_cluster_run_goes_through_sbatch_and_matches_a_local_run(gpu_run, local_runs):
    workdir, output, submitted, records, seconds = gpu_run
    print(f"cluster run: {seconds:.1f} s, {len(submitted)} Slurm jobs")
    # every training job went through sbatch, and Slurm itself ran each one
    assert len(submitted) == 4, output[-4000:]
    assert set(records) == set(submitted)
    assert {record["JobState"] for record in records.values()} == {"COMPLETED"}
    assert len({record["Name"] for record in records.values()}) == 1  # the run's uuid
    logs = sorted(Path(log).parent.parent.name for log in submitted.values())
    assert logs == ["rule_train"] * 4
    # summaries and figures stayed local: only training jobs were submitted
    assert (workdir / "results/summary/steps.tsv").exists()
    runs = run_tsvs(workdir)
    assert len(runs) == 4 and runs == {name: local_runs[name] for name in runs}


def test_gpu_request_reaches_slurm_and_jobs_queue_for_gpus(gpu_run):
    workdir, output, submitted, records, _ = gpu_run
    sidecars = [json.loads(p.read_text()) for p in (workdir / "results/runs").rglob("*.json")]
    assert len(sidecars) == 4
    for meta in sidecars:
        # Slurm's --gpus=1 gave each job one of the node's GPUs
        assert meta["cuda_visible_devices"] in {str(i) for i in range(slurm_cluster.GPUS)}, meta
        assert meta["device_requested"] == "auto" and meta["device"] == "cpu"  # no CUDA torch
    # four GPU jobs, two GPUs: never more than two ran at once, so the rest queued
    events = []
    for record in records.values():
        events += [(record["StartTime"], 1), (record["EndTime"], -1)]
    running = peak = 0
    for _, change in sorted(events, key=lambda event: (event[0], event[1])):
        running += change
        peak = max(peak, running)
    assert peak <= slurm_cluster.GPUS
    starts = sorted(record["StartTime"] for record in records.values())
    assert starts[0] < starts[-1]


def test_failing_training_job_fails_the_run_naming_its_log(cluster, tmp_path):
    config = yaml.safe_load(TINY.read_text())
    # a value torch rejects only when the optimizer is built, inside the job
    config.update(seeds=[0], losses={"mse": {"class": "MSELoss"}})
    config["optimizers"] = {"sgd": {"class": "SGD", "kwargs": {"lr": -1.0}}}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    workdir = tmp_path / "work"
    process, output, submitted, records = submit(cluster, workdir, "slurm", configfile=bad)
    assert process.returncode != 0
    assert len(submitted) == 1 and [r["JobState"] for r in records.values()] == ["FAILED"]
    slurm_log = next(iter(submitted.values()))
    assert "Error in rule train" in output
    assert "results/logs/train/mse/sgd/seed0.log" in output and slurm_log in output
    job_log = (workdir / "results/logs/train/mse/sgd/seed0.log").read_text()
    assert "config key optimizers.sgd" in job_log and "Invalid learning rate" in job_log
    assert not (workdir / "results/runs/mse/sgd/seed0.tsv").exists()
    assert not (workdir / "results/summary").exists()


def test_grouped_profile_makes_fewer_slurm_jobs_with_identical_results(
    cluster, tmp_path, local_runs, sgd_grid
):
    workdir = tmp_path / "work"
    started = time.monotonic()
    process, output, submitted, records = submit(
        cluster, workdir, "slurm-grouped", "--config", "device=auto", configfile=sgd_grid
    )
    assert process.returncode == 0, output[-8000:] + cluster.logs()
    print(f"grouped run: {time.monotonic() - started:.1f} s, {len(submitted)} Slurm job(s)")
    # 4 training jobs, up to 8 per group: one Slurm job
    assert len(submitted) == 1 and set(records) == set(submitted)
    assert {record["JobState"] for record in records.values()} == {"COMPLETED"}
    assert all("group_" in str(log) for log in submitted.values())  # a group job
    # the group asked for one GPU, not one per member, and its members ran on it in turn
    sidecars = [json.loads(p.read_text()) for p in (workdir / "results/runs").rglob("*.json")]
    assert len(sidecars) == 4 and len({m["cuda_visible_devices"] for m in sidecars}) == 1
    runs = run_tsvs(workdir)
    assert len(runs) == 4 and runs == {name: local_runs[name] for name in runs}
