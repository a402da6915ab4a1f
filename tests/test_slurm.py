"""The grid submitted to a real Slurm (slurm-wlm + munge on loopback) through
snakemake-executor-plugin-slurm with profiles/slurm and profiles/slurm-grouped.

Opt-in: OPTBENCH_SLURM_TESTS=1 runs these tests with the installed Slurm,
OPTBENCH_SLURM_TESTS=install apt-get installs slurm-wlm and munge first (what
.ci/run does); otherwise they skip, saying so. The cluster
(tests/slurm_cluster.py) is private to the suite, started once for this
module, and needs root. What the profiles ask for is checked without Slurm,
in test_profiles.py.
"""

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import slurm_cluster
import yaml

from conftest import CONFIGS, REPO, SNAKEFILE, run_tsvs, snakemake_command

try:
    MODE, MODE_ERROR = slurm_cluster.opt_in(), None
except ValueError as error:
    MODE, MODE_ERROR = "error", str(error)
# Decided at collection, so that a skipped module sets up no fixture (such as
# the session's tiny local run) first.
SKIPPED = None if MODE == "error" else slurm_cluster.unavailable_reason(MODE)
pytestmark = [
    pytest.mark.slurm,
    pytest.mark.workflow,
    pytest.mark.skipif(SKIPPED is not None, reason=SKIPPED or ""),
]
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
# profiles/slurm submits the jobs of a rule as job arrays; a rule name that
# matches no rule submits every job on its own.
NO_ARRAYS = ("--slurm-array-jobs", "none")
SUBMITTED_ARRAY = re.compile(
    r"Submitted array job with Snakemake IDs (\S+) and SLURM job ID (\d+)\. "
    r"The individual task IDs are (\d+)-(\d+)\."
)
TRAINING_ONLY = ["--omit-from", "summarize_cell"]
# The same for a grid packed one job per loss (job_scope loss): its summary
# rules are named per cell, and summarize_cell is not among them.
PACKED_TRAINING_ONLY = [
    "--omit-from",
    "summarize_evaluation_linear_mse",
    "summarize_evaluation_linear_l1",
]
# A user's optimizer file (docs/optimizers.md#your-own-file) for the grids of
# the cluster runs that compare bytes with a local run: plain gradient descent
# that keeps clear of torch.optim.Optimizer's own methods. Those
# (add_param_group, called by Optimizer.__init__, zero_grad, state_dict) are
# wrapped in torch._disable_dynamo, whose first call imports torch._dynamo:
# about 1.4 CPU-seconds in every training process, half of a tiny training
# job's cost, which the array test paid in every task. The class is still a
# torch.optim.Optimizer, checked and loaded as any user's file is.
PLAIN_SGD_FILE = """\
import torch


class PlainSGD(torch.optim.Optimizer):
    def __init__(self, params, lr=0.1):
        self.defaults = {"lr": lr}
        self.state = {}
        self.param_groups = [{"params": list(params), "lr": lr}]

    def zero_grad(self, set_to_none=True):
        for group in self.param_groups:
            for parameter in group["params"]:
                parameter.grad = None

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for parameter in group["params"]:
                if parameter.grad is not None:
                    parameter.add_(parameter.grad, alpha=-group["lr"])
"""
# The parts of the project a run needs, copied with optimizers/plain_sgd.py
# added (as tests/test_grid_workflow.py's user file does).
PROJECT_PARTS = ("Snakefile", "config.yaml", "workflow", "profiles", "envs", "problems")
SUBMITTED = re.compile(r"Job \S+ has been submitted with SLURM jobid (\d+) \(log: ([^)]+)\)")
# Where Slurm and munge keep configuration, keys, sockets, state and logs on
# a Debian machine: the suite writes to none of them.
SYSTEM_PLACES = (
    "/etc/slurm",
    "/run/slurm",
    "/var/lib/slurm",
    "/var/log/slurm",
    "/var/spool/slurm",
    "/var/spool/slurmd",
    "/var/spool/slurmctld",
    "/etc/munge",
    "/run/munge",
    "/var/lib/munge",
    "/var/log/munge",
)


@pytest.fixture(scope="module")
def slurm_ready():
    """Install Slurm when asked to (OPTBENCH_SLURM_TESTS=install)."""
    if MODE_ERROR is not None:
        pytest.fail(MODE_ERROR, pytrace=False)
    if MODE == "install":
        slurm_cluster.install()


@pytest.fixture(scope="module")
def cluster(slurm_ready, tmp_path_factory):
    cluster = slurm_cluster.Cluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def system_traces() -> dict[str, tuple]:
    """Every entry under SYSTEM_PLACES: kind, size, mtime, link target."""
    traces = {}
    for place in map(Path, SYSTEM_PLACES):
        if not place.exists() and not place.is_symlink():
            continue
        for path in [place, *place.rglob("*")] if place.is_dir() else [place]:
            info = path.lstat()
            target = os.readlink(path) if path.is_symlink() else None
            changed = None if path.is_dir() else info.st_mtime_ns
            traces[str(path)] = (oct(info.st_mode), info.st_size, changed, target)
    return traces


def live_processes() -> dict[int, str]:
    """PID -> command line (or name) of every process that is not a zombie."""
    processes = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").strip()
            name = (entry / "comm").read_text().strip()
        except OSError:
            continue  # ended meanwhile
        if state != "Z":
            processes[int(entry.name)] = command.decode(errors="replace") or f"[{name}]"
    return processes


def dry_run_seconds(workdir) -> float:
    """The best of two `snakemake -n` starts, with Slurm's default configuration
    lookup (not the suite's SLURM_CONF=/dev/null): the plugin's import runs
    scontrol, which waits ~10 s when a configuration names a dead controller."""
    env = {key: value for key, value in os.environ.items() if key != "SLURM_CONF"}
    command = snakemake_command(workdir, "-n", configfile=TINY)
    times = []
    for _ in range(2):
        started = time.monotonic()
        process = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
        times.append(time.monotonic() - started)
        assert process.returncode == 0, process.stdout[-2000:] + process.stderr[-4000:]
    return min(times)


# First in the module, before the module's cluster starts: the machine as a
# user has it.
def test_cluster_start_and_stop_leave_the_machine_as_found(slurm_ready, tmp_path):
    seconds_before = dry_run_seconds(tmp_path / "dry")
    traces, processes = system_traces(), live_processes()
    cluster = slurm_cluster.Cluster(tmp_path / "slurm")
    try:
        cluster.start()
        daemons = set(cluster.pids)
        # a batch job with a job step (srun inside sbatch), as the plugin submits
        out = tmp_path / "job.out"
        step = "srun -n1 sh -c 'echo gpu=$CUDA_VISIBLE_DEVICES'"
        job = cluster.command(
            30, "sbatch", "--parsable", "--gpus=1", "--output", str(out), "--wrap", step
        ).stdout.strip()
        cluster.wait_idle()
        states = [r["JobState"] for r in cluster.completed_jobs() if r["JobId"] == job]
        assert states == ["COMPLETED"] and out.read_text().strip() in {"gpu=0", "gpu=1"}
    finally:
        cluster.stop()
    # nothing left where Slurm and munge keep configuration, keys and state
    assert system_traces() == traces
    # no daemon of the suite (by PID), no job step of its cluster still running
    left = {
        pid: command
        for pid, command in live_processes().items()
        if pid in daemons
        or (pid not in processes and re.search(r"slurm|munge", command))
        or str(cluster.root) in command
    }
    assert left == {}
    # and a Snakemake start with the Slurm plugin is as fast as before
    seconds_after = dry_run_seconds(tmp_path / "dry")
    print(f"snakemake -n: {seconds_before:.2f} s before, {seconds_after:.2f} s after")
    assert seconds_after <= 1.5 * seconds_before + 1.5


def test_a_second_cluster_runs_beside_the_first_on_its_own_free_ports(cluster, tmp_path):
    second = slurm_cluster.Cluster(tmp_path / "slurm")
    try:
        second.start()
        ports = {cluster.ctld_port, cluster.slurmd_port, second.ctld_port, second.slurmd_port}
        assert len(ports) == 4 and not ports & {6817, 6818}  # not Slurm's defaults
        for each in (cluster, second):
            config = each.command(10, "scontrol", "show", "config").stdout
            assert re.search(rf"^SlurmctldPort\s*=\s*{each.ctld_port}$", config, re.M)
            assert re.search(rf"^SlurmdPort\s*=\s*{each.slurmd_port}$", config, re.M)
            assert each.node_state() == "idle"
    finally:
        second.stop()


def submit(cluster, workdir, profile, *args, configfile=TINY, seconds=150, snakefile=SNAKEFILE):
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
            snakefile=snakefile,
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
def project(tmp_path_factory) -> Path:
    """The Snakefile of a copy of the project with the user optimizer file
    optimizers/plain_sgd.py (PLAIN_SGD_FILE)."""
    project = tmp_path_factory.mktemp("project")
    for name in PROJECT_PARTS:
        if (REPO / name).is_dir():
            shutil.copytree(
                REPO / name, project / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy(REPO / name, project / name)
    (project / "optimizers").mkdir()
    (project / "optimizers" / "plain_sgd.py").write_text(PLAIN_SGD_FILE)
    return project / "Snakefile"


def plain_sgd_grid(folder: Path, name: str, seeds: int) -> Path:
    """The tiny config (linear, 2 losses, 5 steps, one run a job) with one
    optimizer, sgd: PlainSGD at lr 0.1, and seeds 0..seeds-1."""
    config = yaml.safe_load(TINY.read_text())
    config["optimizers"] = {"sgd": {"class": "plain_sgd.PlainSGD", "kwargs": {"lr": 0.1}}}
    config["seeds"] = list(range(seeds))
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def fifty_grid(tmp_path_factory) -> Path:
    """50 one-run training jobs (PlainSGD at lr 0.1, 2 losses x 25 seeds): issue
    33 asks for at least 50 jobs in arrays."""
    return plain_sgd_grid(tmp_path_factory.mktemp("configs"), "fifty", seeds=25)


@pytest.fixture(scope="module")
def sgd_grid(tmp_path_factory) -> Path:
    """4 training jobs (2 losses x 2 seeds, PlainSGD at lr 0.1): 4 of the 50 runs."""
    return plain_sgd_grid(tmp_path_factory.mktemp("configs"), "sgd", seeds=2)


@pytest.fixture(scope="module")
def local_runs(project, fifty_grid, tmp_path_factory) -> dict[str, bytes]:
    """The 50 runs trained locally, packed into one job per loss (its runs
    trained together by the batched engine), training only: the bytes every
    cluster run below must reproduce."""
    local = tmp_path_factory.mktemp("local")
    subprocess.run(
        snakemake_command(
            local,
            "--cores",
            "2",
            *PACKED_TRAINING_ONLY,
            "--config",
            "job_scope=loss",
            "seeds_per_job=all",
            configfile=fifty_grid,
            snakefile=project,
        ),
        check=True,
        capture_output=True,
    )
    runs = run_tsvs(local)
    assert len(runs) == 50 and not (local / "results/summary").exists()
    return runs


@pytest.fixture(scope="module")
def gpu_run(cluster, tmp_path_factory, sgd_grid, project):
    """4 training jobs with device auto: every one asks Slurm for a GPU, on a
    node with two, so jobs must queue for them."""
    workdir = tmp_path_factory.mktemp("cluster")
    started = time.monotonic()
    # One sbatch call per job (the profile's arrays off): what one job asks of
    # Slurm is checked here; arrays are tested below. The run stops at the
    # summary (steps.tsv): that it stays local is checked, the figures after
    # it would add CPU and nothing checked.
    process, output, submitted, records = submit(
        cluster,
        workdir,
        "slurm",
        *NO_ARRAYS,
        "--until",
        "summarize",
        "--config",
        "device=auto",
        configfile=sgd_grid,
        snakefile=project,
    )
    assert process.returncode == 0, output[-8000:] + cluster.logs()
    return workdir, output, submitted, records, time.monotonic() - started


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
    # the summaries stayed local: only training jobs were submitted
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
    # four GPU jobs, two GPUs: Snakemake submitted them all (the profile's
    # gpu cap is scoped to group jobs) and Slurm ran two at once, never more
    events = []
    for record in records.values():
        events += [(record["StartTime"], 1), (record["EndTime"], -1)]
    running = peak = 0
    for _, change in sorted(events, key=lambda event: (event[0], event[1])):
        running += change
        peak = max(peak, running)
    assert peak == slurm_cluster.GPUS
    assert {meta["cuda_visible_devices"] for meta in sidecars} == {"0", "1"}
    starts = sorted(record["StartTime"] for record in records.values())
    assert starts[0] < starts[-1]  # the other two queued for a GPU


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
    assert "results/logs/train/linear/mse/sgd/base/seed0.log" in output and slurm_log in output
    job_log = (workdir / "results/logs/train/linear/mse/sgd/base/seed0.log").read_text()
    assert "config key optimizers.sgd" in job_log and "Invalid learning rate" in job_log
    assert not (workdir / "results/runs/linear/mse/sgd/base/seed0.tsv").exists()
    assert not (workdir / "results/summary").exists()


def test_grouped_profile_makes_fewer_slurm_jobs_with_identical_results(
    cluster, tmp_path, local_runs, sgd_grid, project
):
    workdir = tmp_path / "work"
    started = time.monotonic()
    # Training only: nothing here reads the summaries or figures.
    process, output, submitted, records = submit(
        cluster,
        workdir,
        "slurm-grouped",
        *TRAINING_ONLY,
        "--config",
        "device=auto",
        configfile=sgd_grid,
        snakefile=project,
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


def test_fifty_jobs_go_to_slurm_as_arrays_with_the_results_of_a_local_run(
    cluster, tmp_path, project, fifty_grid, local_runs
):
    """profiles/slurm submits the 50 one-run jobs of rule train (job_scope cell,
    one seed a job) as job arrays, not 50 sbatch calls; each task trains its run,
    byte for byte what a local run of the same grid writes (local_runs: packed
    into one job per loss). The grid's optimizer is a user's file (PlainSGD),
    so that no task imports torch._dynamo."""
    workdir = tmp_path / "cluster"
    # Training only, as the local run: arrays concern training jobs, and the
    # summaries and figures of 50 runs add minutes of CPU and nothing here.
    process, output, submitted, records = submit(
        cluster,
        workdir,
        "slurm",
        *TRAINING_ONLY,
        configfile=fifty_grid,
        snakefile=project,
        seconds=1200,
    )
    assert process.returncode == 0, output[-8000:] + cluster.logs()
    arrays = SUBMITTED_ARRAY.findall(output)
    members = [int(jobid) for ids, *_ in arrays for jobid in ids.split(",")]
    tasks = sum(int(last) - int(first) + 1 for *_, first, last in arrays)
    print(f"array run: {len(arrays)} array job(s), {len(members)} tasks; {len(submitted)} single")
    assert len(members) == len(set(members)) == tasks == 50, output[-4000:]
    assert not submitted  # no training job went on its own
    # Slurm ran every task to completion (its completion log: one record per
    # task; this run submitted nothing else).
    assert len(records) == 50, records
    assert {record["JobState"] for record in records.values()} == {"COMPLETED"}
    runs = run_tsvs(workdir)
    assert len(runs) == 50 and runs == local_runs


def test_a_signalled_training_job_resumes_on_its_retry_with_the_same_bytes(cluster, tmp_path):
    """Preemption on Slurm (docs/reliability.md#checkpoints-and-preemption): a
    running training job gets SIGTERM through Slurm (scancel --signal, as Slurm's
    warning signal and its time limit send it to the job step), saves a
    checkpoint and exits 75; Snakemake's retry submits it again, and it resumes
    from the checkpoint and writes the bytes of an uninterrupted run."""
    config = yaml.safe_load((CONFIGS / "slow.yaml").read_text())
    # No periodic saves: the only checkpoint the retry can find is the one the
    # signal made.
    config.update(seeds=[0], steps=20000, checkpoint_every={"steps": 0, "seconds": 0})
    path = tmp_path / "preempted.yaml"
    path.write_text(yaml.safe_dump(config))
    reference = tmp_path / "uninterrupted"
    local = subprocess.run(
        # Training only: the summaries and figures add nothing here.
        snakemake_command(reference, "--cores", "1", *TRAINING_ONLY, configfile=path),
        capture_output=True,
        text=True,
    )
    assert local.returncode == 0, local.stderr[-4000:]
    workdir = tmp_path / "work"
    cluster.wait_idle()
    command = slurm_cluster.bounded(
        600,
        *snakemake_command(
            workdir,
            "--workflow-profile",
            str(PROFILES / "slurm"),
            *TEST_OVERRIDES,
            "--retries",
            "1",  # after TEST_OVERRIDES' 0: the retry that resumes the job
            *TRAINING_ONLY,
            configfile=path,
        ),
    )
    log = workdir / "results/logs/train/linear/mse/sgd/base/seed0.log"
    progress = Path(f"{log}.progress.json")
    before = {record["JobId"] for record in cluster.completed_jobs()}
    with open(tmp_path / "snakemake.out", "w") as out:
        run = subprocess.Popen(command, env=cluster.env, stdout=out, stderr=subprocess.STDOUT)
    try:
        # Once the job has trained a while, Slurm signals its job step.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and run.poll() is None:
            record = json.loads(progress.read_text()) if progress.exists() else {}
            if record.get("steps_done", 0) >= 4000:
                break
            time.sleep(0.2)
        jobs = cluster.command(10, "squeue", "--noheader", "--format=%i").stdout.split()
        assert len(jobs) == 1, (jobs, (tmp_path / "snakemake.out").read_text()[-4000:])
        cluster.command(10, "scancel", "--signal=TERM", jobs[0])
        finished = run.wait(timeout=500)
        if finished != 0:
            slurm_logs = "".join(p.read_text() for p in workdir.rglob("slurm_logs/**/*.log"))
            job_log = log.read_text() if log.exists() else "(no job log)"
            raise AssertionError(
                (tmp_path / "snakemake.out").read_text()[-6000:]
                + slurm_logs[-4000:]
                + job_log[-3000:]
            )
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    output = (tmp_path / "snakemake.out").read_text()
    records = [r for r in cluster.completed_jobs() if r["JobId"] not in before]
    # Slurm ran the job twice: signalled (failed), then resumed.
    assert sorted(r["JobState"] for r in records) == ["COMPLETED", "FAILED"], records
    assert "Trying to restart job" in output  # Snakemake's retry
    text = log.read_text()  # the retry's log: it went on from the signal's checkpoint
    assert "checkpoint: resuming from" in text and "resumed from step" in text, text[-3000:]
    resumed = int(text.split("resumed from step ")[1].split()[0])
    print(f"Slurm: the signalled job saved at step {resumed:,} of 20,000; its retry went on")
    assert 4000 <= resumed < 20000
    assert run_tsvs(workdir) == run_tsvs(reference)
    assert not list((workdir / "results/manifests").rglob("*.checkpoint"))
