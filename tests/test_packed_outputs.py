"""A packed training job's only Snakemake output is its manifest (train.smk): its
runs are written beside it, so a job killed half-way keeps the runs it finished
and its next start reuses them."""

import re
import signal

import pytest
import yaml
from test_faults import (  # noqa: F401  (fixtures: pytest finds them in this module)
    SLOW,
    finished,
    nothing_started_outlives_its_test,
    slow_reference,
    start,
    temporary_leftovers,
    training_jobs,
    wait_for,
)

from conftest import run_tsvs, snakemake_warm

pytestmark = pytest.mark.workflow
MANIFEST = "results/manifests/train/linear/mse/seeds0-3.tsv"


def test_a_packed_job_killed_half_way_keeps_its_finished_runs(tmp_path, slow_reference):  # noqa: F811
    # The slow config's 4 runs in one job, trained one after another (the loop
    # writes each run as it ends).
    config = yaml.safe_load(SLOW.read_text())
    config.update(job_scope="loss", seeds_per_job="all", engine="loop")
    packed = tmp_path / "packed.yaml"
    packed.write_text(yaml.safe_dump(config))
    workdir = tmp_path / "w"
    process = start(workdir, "--cores", "1", MANIFEST, configfile=packed)
    wait_for(lambda: bool(finished(workdir)), what="a finished run")
    (job, _), *_ = training_jobs(process, "--job")
    job.send_signal(signal.SIGKILL)
    assert process.wait(120) != 0
    done = finished(workdir)
    assert 1 <= len(done) < 4, sorted(done)  # killed half-way
    for name, (content, _) in done.items():
        assert content == slow_reference[name]  # whole, and right
    assert not (workdir / MANIFEST).exists()
    assert temporary_leftovers(workdir) == []
    # The next start trains only the runs the killed one had not finished.
    snakemake_warm(workdir, "--cores", "1", MANIFEST, configfile=packed)
    assert run_tsvs(workdir) == slow_reference
    after = finished(workdir)
    assert {name: after[name] for name in done} == done  # not written again
    log = (workdir / "results/logs/train/linear/mse/seeds0-3.log").read_text()
    (trained, reused) = re.search(r"done: 4 run\(s\) \((\d+) trained, (\d+) reused\)", log).groups()
    assert (int(trained), int(reused)) == (4 - len(done), len(done))


def test_the_longest_training_jobs_have_the_highest_priority(tmp_path):
    """Snakemake starts the ready jobs of the highest priority first: a job's is its
    estimated time, so 4 runs of 3,000 steps come before 4 runs of 30."""
    config = tmp_path / "two.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "seeds": [0, 1],
                "problems": {"linear": {"steps": 30}, "quadratic": {"steps": 3000}},
                "optimizers": {"sgd": {"class": "SGD", "kwargs": {"lr": 0.01}}},
                "losses": {"mse": {"class": "MSELoss"}, "l1": {"class": "L1Loss"}},
                "device": "cpu",
            }
        )
    )
    process = snakemake_warm(tmp_path, "-n", configfile=config)
    priority, rule = {}, None
    for line in (process.stdout + process.stderr).splitlines():
        if line.startswith("rule "):
            rule = line.split()[1].rstrip(":")
        elif line.strip().startswith("priority: ") and rule.startswith("train_"):
            priority[rule] = int(line.split(": ")[1])
    assert sorted(priority) == [
        "train_linear_l1_seeds_0-1",
        "train_linear_mse_seeds_0-1",
        "train_quadratic_l1_seeds_0-1",
        "train_quadratic_mse_seeds_0-1",
    ]
    # A job's start-up (2.5 s) is the floor; the long ones add their steps.
    assert min(priority.values()) >= 2500
    assert min(priority[f"train_quadratic_{loss}_seeds_0-1"] for loss in ("mse", "l1")) > max(
        priority[f"train_linear_{loss}_seeds_0-1"] for loss in ("mse", "l1")
    )
