"""A training job's progress file, and the command that shows every job's progress."""

import json
import re
import subprocess
import sys
import time

import pytest
import yaml

from conftest import REPO, ForkedSnakemake
from optbench import progress

PROGRESS_SCRIPT = REPO / "workflow" / "scripts" / "progress.py"


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_the_file_is_rewritten_at_most_once_a_second_and_at_the_end(tmp_path, monkeypatch):
    writes = []
    real = progress.runfiles.write_text_atomic
    monkeypatch.setattr(
        progress.runfiles, "write_text_atomic", lambda p, t: (writes.append(t), real(p, t))
    )
    clock = Clock()
    tracker = progress.Progress(tmp_path / "job.log.progress.json", runs=2, steps=200, clock=clock)
    assert len(writes) == 1  # at the start
    for _ in range(100):  # 100 steps within the same second: no rewrite
        clock.now += 0.005
        tracker.steps(1)
    assert len(writes) == 1
    clock.now += 1.0
    tracker.steps(1)
    assert len(writes) == 2
    tracker.runs(1)
    tracker.finish()
    record = progress.read(tmp_path / "job.log.progress.json")
    assert len(writes) == 3 and record["state"] == progress.DONE
    assert (record["runs_done"], record["steps_done"], record["steps_planned"]) == (1, 101, 200)


def test_the_remaining_time_is_the_steps_left_at_the_rate_since_the_first_step():
    clock = Clock()
    tracker = progress.Progress(None, runs=1, steps=1000, clock=clock)
    clock.now += 30.0  # start-up: imports, building; not part of the rate
    tracker.steps(100)
    assert "remaining unknown" in progress.describe(tracker.record, clock.now)
    clock.now += 10.0
    tracker.steps(100)  # 100 run-steps in 10 s: 800 left take 80 s
    line = progress.describe(tracker.record, clock.now)
    assert line == (
        "0 of 1 runs, 200 of 1,000 run-steps (20%), 0:40 elapsed, about 1:20 left, running"
    )


def test_a_job_whose_process_is_gone_is_stalled():
    record = {"state": progress.RUNNING, "pid": 2**22 + 12345, "started": 0.0}
    record["host"] = progress.socket.gethostname()
    assert progress.stalled(record, now=10.0)
    assert not progress.stalled({**record, "state": progress.DONE}, now=10.0)
    elsewhere = {**record, "host": "another-node", "updated": 100.0}
    assert not progress.stalled(elsewhere, now=130.0) and progress.stalled(elsewhere, now=200.0)


def show(workdir, config) -> str:
    process = subprocess.run(
        [sys.executable, str(PROGRESS_SCRIPT), "--directory", str(workdir), str(config)],
        capture_output=True,
        text=True,
        check=True,
    )
    return process.stdout


@pytest.mark.workflow
def test_the_progress_command_follows_a_real_grid(tmp_path):
    config = {
        "seeds": [0, 1],
        "steps": 20000,
        "device": "cpu",
        "engine": "loop",  # one run after another: slow enough to be seen half-way
        "problems": {"linear": {"kwargs": {"dim": 20}, "losses": ["mse"]}},
        "losses": {"mse": {"class": "MSELoss"}},
        "optimizers": {"sgd": {"class": "SGD", "kwargs": {"lr": 0.001}}},
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(config))
    workdir = tmp_path / "w"
    assert "no training job has started" in show(workdir, path)
    # In the background (forked: without Snakemake's start-up); study: the file's stem.
    output = tmp_path / "snakemake.out"
    until = ("--until", "train_linear_mse_seeds_0-1")
    run = ForkedSnakemake(
        workdir, "--cores", "1", *until, output_path=output, configfile=path, study=None
    )
    record_path = workdir / "results/grid/logs/train/linear/mse/seeds0-1.log.progress.json"
    seen = None
    deadline = time.monotonic() + 120
    while run.poll() is None and time.monotonic() < deadline:
        # The command (0.3 CPU-seconds a call) is asked once the job has begun
        # to count its steps: before, it could only say that nothing runs.
        if record_path.exists() and json.loads(record_path.read_text())["steps_done"] > 0:
            text = show(workdir, path)
            if "running" in text and "of 40,000 run-steps" in text and " 0 of 40,000" not in text:
                seen = text
                break
        time.sleep(0.2)
    assert run.wait(300) == 0, output.read_text()[-2000:]
    assert seen is not None, "no partial progress was seen"
    job, grid = seen.splitlines()[-2:]
    assert job.startswith("[") and "linear/mse/seeds0-1.log: " in job
    assert "of 2 runs" in job and "elapsed" in job and ("left" in job or "unknown" in job)
    match = re.search(
        r"grid: ([\d,]+) of 40,000 run-steps of the grid \((\d+)%\); "
        r"1 job\(s\) running, 0 finished$",
        grid,
    )
    assert match and 0 < int(match[1].replace(",", "")) < 40000, grid
    final = show(workdir, path)
    assert final.strip().endswith(
        "grid: 40,000 of 40,000 run-steps of the grid (100%); 0 job(s) running, 1 finished"
    )
    log = (workdir / "results/grid/logs/train/linear/mse/seeds0-1.log").read_text()
    assert "progress: 2 of 2 runs, 40,000 of 40,000 run-steps (100%)" in log
    record = json.loads(record_path.read_text())
    assert record["state"] == "done"
