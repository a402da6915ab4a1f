"""Crash safety where it bites: while run files are being written.

A child process writes run files and is killed at every point of the write in
turn (tests/fault_injection.py); a training job is stopped by SIGTERM or
SIGKILL between the two files of a run. After each, nothing half-written may
look complete, a TSV under its final name must have its sidecar, and the next
run must leave exactly the complete files.
"""

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import TRAIN_SCRIPT
from optbench import runfiles
from test_training import (
    ARTICLE_LOSSES,
    ARTICLE_LRS,
    ARTICLE_OPTIMIZERS,
    article_loop,
    article_tsv,
    spec,
)

INJECTOR = Path(__file__).resolve().parent / "fault_injection.py"
SCRIPTS = TRAIN_SCRIPT.parent

# Two runs as a packed job writes them; the values test repr's exactness.
LOSSES = {0: [2.5, 0.1, 1e-45, -0.0], 1: [3.0, math.inf, math.nan, 1 / 3]}
OLD_LOSSES = {0: [9.0, 8.0, 7.0, 6.0], 1: [5.0, 4.0, 3.0, 2.0]}


def run_files(directory: Path, seed: int) -> tuple[Path, Path]:
    return directory / f"seed{seed}.tsv", directory / f"seed{seed}.json"


def metadata(seed: int, generation: str) -> dict:
    return {"seed": seed, "generation": generation, "steps": 4}


def write_runs_in_child(directory: Path, crash_at: int) -> subprocess.CompletedProcess:
    runs = []
    for seed, losses in LOSSES.items():
        tsv, sidecar = run_files(directory, seed)
        runs.append([str(tsv), losses, str(sidecar), metadata(seed, "new")])
    command = [sys.executable, str(INJECTOR), "crash", str(crash_at), str(directory)]
    return subprocess.run([*command, json.dumps(runs)], capture_output=True, text=True, timeout=60)


def file_states(directory: Path) -> dict[str, str]:
    """Each final-named file's content as 'new', 'old' or 'broken ...'."""
    states = {}
    for seed in LOSSES:
        tsv, sidecar = run_files(directory, seed)
        if tsv.exists():
            data = tsv.read_bytes()
            states[tsv.name] = (
                "new"
                if data == article_tsv(LOSSES[seed], None)
                else "old"
                if data == article_tsv(OLD_LOSSES[seed], None)
                else f"broken {data!r}"
            )
        if sidecar.exists():
            try:
                generation = json.loads(sidecar.read_text())["generation"]
                assert json.loads(sidecar.read_text()) == metadata(seed, generation)
                states[sidecar.name] = generation
            except (ValueError, KeyError, AssertionError):
                states[sidecar.name] = f"broken {sidecar.read_bytes()!r}"
    return states


@pytest.mark.parametrize("previous", ["empty directory", "older results"])
def test_writer_killed_at_any_point_leaves_nothing_half_written(tmp_path, previous):
    """Kill the writer at every write event in turn (mid-write, before and after
    each rename); check each state it leaves, then that the next run repairs it."""
    finals = {name for seed in LOSSES for name in (f"seed{seed}.tsv", f"seed{seed}.json")}
    events = []
    for crash_at in range(1, 200):
        directory = tmp_path / f"crash{crash_at}"
        directory.mkdir()
        if previous == "older results":
            for seed, losses in OLD_LOSSES.items():
                tsv, sidecar = run_files(directory, seed)
                tsv.write_bytes(article_tsv(losses, None))
                sidecar.write_text(json.dumps(metadata(seed, "old")))
        child = write_runs_in_child(directory, crash_at)
        if child.returncode == 0:
            break
        assert child.returncode == -signal.SIGKILL, child.stderr
        where = child.stderr.strip().splitlines()[-1]
        events.append(where)
        states = file_states(directory)
        broken = {name: s for name, s in states.items() if s.startswith("broken")}
        assert not broken, f"{where}: half-written files under their final names: {broken}"
        for seed in LOSSES:
            tsv, sidecar = run_files(directory, seed)
            if states.get(tsv.name) == "new":  # a new TSV must come with its new sidecar
                assert states.get(sidecar.name) == "new", f"{where}: {tsv.name} without its sidecar"
        strays = sorted(p.name for p in directory.iterdir() if p.name not in finals)
        assert all(name.startswith(".") for name in strays), f"{where}: visible {strays}"
        # The next run repairs everything: complete files and nothing else.
        for seed, losses in LOSSES.items():
            tsv, sidecar = run_files(directory, seed)
            runfiles.write_run(tsv, losses, sidecar, metadata(seed, "new"))
        assert sorted(p.name for p in directory.iterdir()) == sorted(finals), where
        assert set(file_states(directory).values()) == {"new"}, where
    else:
        raise AssertionError("the writer never finished")
    # The crash points covered writes in progress and both sides of every rename.
    assert any("half of a" in event for event in events), events
    assert sum("before rename" in event for event in events) == len(finals), events
    assert sum("after rename" in event for event in events) == len(finals), events


@pytest.fixture
def in_process_training_job():
    """train.py's main in this process, with the signal handler and threads it sets restored."""
    sys.path.insert(0, str(SCRIPTS))
    import train

    handler, threads = signal.getsignal(signal.SIGTERM), torch.get_num_threads()
    yield train.main
    signal.signal(signal.SIGTERM, handler)
    torch.set_num_threads(threads)


def expected_run(seed: int, steps: int) -> bytes:
    return article_tsv(
        article_loop(seed, ARTICLE_OPTIMIZERS["sgd"], ARTICLE_LOSSES["mse"], steps=steps),
        ARTICLE_LRS["sgd"],
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_training_job_stopped_between_sidecar_and_tsv(tmp_path, sig, in_process_training_job):
    """A packed job (seeds 0 and 1) stopped after seed 1's first file is in place
    and its second is written to a temporary file, about to be renamed."""
    steps = 6
    arguments = ["--spec", json.dumps(spec("sgd", "mse", steps=steps))]
    for seed in (0, 1):
        arguments += ["--run", str(seed), *map(str, run_files(tmp_path / "runs", seed))]
    marker, log = tmp_path / "paused", tmp_path / "job.log"
    with open(log, "w") as stderr:
        job = subprocess.Popen(
            [sys.executable, str(INJECTOR), "pause", "2", "seed1.", str(marker), "--", *arguments],
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), (
            "the job never renamed seed 1's second file into place, so it does not write "
            f"atomically (exit {job.poll()}):\n{log.read_text()}"
        )
        job.send_signal(sig)
        try:
            returncode = job.wait(timeout=10)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the job ignored {sig.name} for 10 s") from None
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    runs = tmp_path / "runs"
    tsv0, sidecar0 = run_files(runs, 0)
    tsv1, sidecar1 = run_files(runs, 1)
    assert tsv0.read_bytes() == expected_run(0, steps) and json.loads(sidecar0.read_text())
    assert not tsv1.exists()  # half-done: not under its final name
    assert json.loads(sidecar1.read_text())["seed"] == 1  # the sidecar went first
    leftovers = sorted(p.name for p in runs.iterdir() if p.name.startswith("."))
    text = log.read_text()
    assert "seed 0: final loss" in text and "done:" not in text
    if sig == signal.SIGTERM:
        # Snakemake and Slurm stop jobs with SIGTERM: the job exits at once,
        # with 128 + 15, and removes its temporary file on the way out.
        assert returncode == 128 + signal.SIGTERM
        assert leftovers == []
    else:
        assert returncode == -signal.SIGKILL
        assert len(leftovers) == 1  # seed 1's TSV, written but never renamed: stale
    # The next run of the job repairs it: complete files and no stale temporary.
    assert in_process_training_job(arguments) == 0
    assert sorted(p.name for p in runs.iterdir()) == sorted(
        p.name for p in (tsv0, sidecar0, tsv1, sidecar1)
    )
    assert tsv0.read_bytes() == expected_run(0, steps)
    assert tsv1.read_bytes() == expected_run(1, steps)
    assert json.loads(sidecar1.read_text())["seed"] == 1
