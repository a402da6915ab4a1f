"""Faults injected for real: interruptions, kills, concurrent runs, bad and tampered input.

Each test checks that nothing finished was lost, nothing half-written looks
complete, and nothing from a config was executed.
"""

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time

import bad_input
import pandas as pd
import psutil
import pytest
import torch
import yaml

from conftest import (
    CONFIGS,
    REPO,
    ForkedSnakemake,
    copy_tree,
    planned_jobs,
    run_tsvs,
    snakemake,
    snakemake_forked,
    tree_bytes,
)
from optbench import runfiles
from test_training import (
    ARTICLE_LOSSES,
    ARTICLE_LRS,
    ARTICLE_OPTIMIZERS,
    article_loop,
    article_tsv,
)

pytestmark = pytest.mark.workflow
TINY = CONFIGS / "tiny.yaml"
SLOW = CONFIGS / "slow.yaml"
SLOW_SEEDS = (0, 1, 2, 3)
# Interruption tests are about training jobs; aggregation would only add time.
ONLY_TRAINING = ("--omit-from", "summarize_cell")
# The kill tests train two of the slow config's runs, one job each: the first
# finishes, the second is interrupted mid-run and trained again (each further
# run would only add a training job: about 3 CPU-seconds, mostly torch's import).
TWO_RUNS = ("--config", "seeds=[0,1]")


def temporary_leftovers(workdir):
    return [p for p in (workdir / "results").rglob("*.part")]


@pytest.fixture(scope="session")
def slow_reference():
    """Expected TSV bytes of the slow config, from an independent copy of the article's loop
    (3.7 CPU-seconds: once per process, for tests/test_packed_outputs.py too)."""
    config = yaml.safe_load(SLOW.read_text())
    assert tuple(config["seeds"]) == SLOW_SEEDS and config["optimizers"]["sgd"]["kwargs"] == {
        "lr": 0.01
    }
    expected = {}
    for seed in SLOW_SEEDS:
        losses = article_loop(
            seed, lambda p: torch.optim.SGD(p, lr=0.01), torch.nn.MSELoss(), config["steps"]
        )
        expected[f"linear/mse/sgd/base/seed{seed}.tsv"] = article_tsv(losses, 0.01)
    return expected


def two_runs(reference):
    """The part of slow_reference that TWO_RUNS trains: seeds 0 and 1."""
    return {
        name: data
        for name, data in reference.items()
        if name.endswith(("/seed0.tsv", "/seed1.tsv"))
    }


STARTED: list[ForkedSnakemake] = []


@pytest.fixture(autouse=True)
def nothing_started_outlives_its_test():
    """A test that fails half-way leaves no snakemake or training job running (or unreaped)."""
    yield
    while STARTED:
        process = STARTED.pop()
        with contextlib.suppress(ProcessLookupError):  # its group: orphaned jobs included
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(60)


def start(workdir, *args, configfile=SLOW):
    """snakemake in its own process group (as a terminal's foreground job), output to
    a file, answering Ctrl-C; forked from this warmed-up process (ForkedSnakemake:
    Snakemake's start-up, about 2 CPU-seconds, once per process), its jobs fresh."""
    output = workdir.parent / f"{workdir.name}-snakemake.out"
    process = ForkedSnakemake(workdir, *args, output_path=output, configfile=configfile)
    STARTED.append(process)
    return process


def training_jobs(process, *flags):
    """Live train.py processes below ``process`` whose command line has all ``flags``.

    Processes that end while we look (zombies, gone) are skipped, not errors:
    Snakemake starts and reaps helpers all the time.
    """
    found = []
    for child in psutil.Process(process.pid).children(recursive=True):
        try:
            argv = child.cmdline()
        except psutil.NoSuchProcess:  # ZombieProcess included
            continue
        if any(a.endswith("train.py") for a in argv) and all(f in argv for f in flags):
            found.append((child, argv))
    return found


def wait_for(condition, timeout=120, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def first_job_done(process):
    """Snakemake reported a finished job, so that job's outputs count as complete.

    A TSV on disk is not enough: until Snakemake records the job as finished,
    an interruption marks it incomplete and a resumed run re-runs it.
    """

    def reported():
        with open(process.output_path) as handle:
            return " steps (" in handle.read()

    return reported


def finished(workdir):
    """Finished run TSVs with their bytes and modification times."""
    root = workdir / "results" / "runs"
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in root.rglob("*.tsv")
    }


def stop(process, sig, timeout=120):
    os.killpg(process.pid, sig)
    try:
        return process.wait(timeout)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def test_second_invocation_is_refused_then_ctrl_c_and_rerun_incomplete(tmp_path, slow_reference):
    workdir = tmp_path / "w"
    process = start(workdir, "--cores", "1", *ONLY_TRAINING, *TWO_RUNS)
    locks = workdir / ".snakemake" / "locks"
    wait_for(lambda: locks.is_dir() and any(locks.iterdir()), what="the lock")
    # A second snakemake on the same directory meets the first one's lock. The
    # first is paused meanwhile (SIGSTOP, its jobs too): on a loaded machine the
    # second's start-up can outlast the first's whole run, leaving nothing to
    # interrupt below.
    os.killpg(process.pid, signal.SIGSTOP)
    try:
        second = snakemake(workdir, "--cores", "1", *TWO_RUNS, configfile=SLOW, check=False)
    finally:
        os.killpg(process.pid, signal.SIGCONT)
    assert second.returncode != 0
    assert "cannot be locked" in second.stdout + second.stderr
    wait_for(first_job_done(process), what="the first finished job")
    done = finished(workdir)
    assert stop(process, signal.SIGINT) != 0  # Ctrl-C stops the run
    assert len(done) == 1  # of 2
    for name, (content, _) in finished(workdir).items():
        assert content == slow_reference[f"linear/mse/sgd/base/{name.split('/')[-1]}"], (
            name
        )  # never partial
    snakemake(
        workdir, "--cores", "4", "--rerun-incomplete", *ONLY_TRAINING, *TWO_RUNS, configfile=SLOW
    )
    assert run_tsvs(workdir) == two_runs(slow_reference)
    after = finished(workdir)
    assert {name: after[name] for name in done} == done  # finished runs were not re-run
    assert temporary_leftovers(workdir) == []


def test_killed_training_job_reruns_alone_and_loses_nothing(tmp_path, slow_reference):
    workdir = tmp_path / "w"
    process = start(workdir, "--cores", "1", *ONLY_TRAINING, *TWO_RUNS)
    wait_for(first_job_done(process), what="the first finished job")
    done = finished(workdir)

    wait_for(lambda: bool(training_jobs(process, "--run")), what="a running training job")
    killed, argv = training_jobs(process, "--run")[0]
    killed_seed = int(argv[argv.index("--run") + 1])
    killed.send_signal(signal.SIGKILL)
    assert process.wait(120) != 0
    with open(process.output_path) as handle:
        output = handle.read()
    assert f"results/logs/train/linear/mse/sgd/base/seed{killed_seed}.log" in output
    assert not (workdir / f"results/runs/linear/mse/sgd/base/seed{killed_seed}.tsv").exists()
    for name, (content, _) in finished(workdir).items():
        assert content == slow_reference[f"linear/mse/sgd/base/{name.split('/')[-1]}"], (
            name
        )  # never partial
    snakemake(workdir, "--cores", "4", *ONLY_TRAINING, *TWO_RUNS, configfile=SLOW)
    assert run_tsvs(workdir) == two_runs(slow_reference)
    after = finished(workdir)
    assert {name: after[name] for name in done} == done
    assert temporary_leftovers(workdir) == []


def test_hard_killed_workflow_resumes_with_unlock_and_rerun_incomplete(tmp_path, slow_reference):
    workdir = tmp_path / "w"
    process = start(workdir, "--cores", "1", *ONLY_TRAINING, *TWO_RUNS)
    wait_for(first_job_done(process), what="the first finished job")
    wait_for(
        lambda: (
            any((workdir / "results/logs/train/linear/mse/sgd/base").glob("seed*.log"))
            and len(list((workdir / "results/logs/train/linear/mse/sgd/base").glob("seed*.log")))
            > len(finished(workdir))
        ),
        what="a job in progress",
    )
    done = finished(workdir)
    stop(process, signal.SIGKILL)  # no clean-up at all, as in a node crash
    for name, (content, _) in finished(workdir).items():
        assert content == slow_reference[f"linear/mse/sgd/base/{name.split('/')[-1]}"], name
    locked = snakemake(workdir, "--cores", "1", *TWO_RUNS, configfile=SLOW, check=False)
    assert locked.returncode != 0 and "--unlock" in locked.stdout + locked.stderr
    snakemake(workdir, "--unlock", configfile=SLOW)
    snakemake(
        workdir, "--cores", "4", "--rerun-incomplete", *ONLY_TRAINING, *TWO_RUNS, configfile=SLOW
    )
    assert run_tsvs(workdir) == two_runs(slow_reference)
    after = finished(workdir)
    assert {name: after[name] for name in done} == done
    assert temporary_leftovers(workdir) == []


ACCEPT = REPO / "workflow" / "scripts" / "accept_finished.py"
PACKED = ("--config", "job_scope=loss", "seeds_per_job=all")
# The packed layout's summary job, after which nothing is about training.
PACKED_TRAINING_ONLY = ("--omit-from", "summarize_evaluation_linear_mse")


def accept_finished(workdir):
    command = [sys.executable, str(ACCEPT), "--directory", str(workdir)]
    # The default study's folder, as the other runs of these tests (conftest.snakemake).
    command += ["--configfile", str(SLOW), *PACKED, "study=config"]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_jobs_that_outlive_a_killed_snakemake_are_accepted_by_their_manifests(
    tmp_path, slow_reference
):
    """Snakemake alone is stopped (SIGKILL: no clean-up); the packed training job it
    started runs on to its end. Its files are marked incomplete; the manifest proves
    them complete, and accept_finished.py clears exactly those marks."""
    workdir = tmp_path / "w"
    process = start(workdir, "--cores", "1", *PACKED_TRAINING_ONLY, *PACKED)
    wait_for(lambda: bool(training_jobs(process, "--manifest")), what="the training job")
    orphans = [job for job, _ in training_jobs(process, "--manifest")]
    process.send_signal(signal.SIGKILL)  # Snakemake only, not its process group
    process.wait(60)
    _, alive = psutil.wait_procs(orphans, timeout=120)
    assert not alive
    manifest = workdir / "results/manifests/train/linear/mse/seeds0-3.tsv"
    assert manifest.exists()  # the orphaned job finished
    snakemake(workdir, "--unlock", configfile=SLOW)
    stopped = snakemake(workdir, "--cores", "1", *PACKED, configfile=SLOW, check=False)
    assert stopped.returncode != 0 and "IncompleteFilesException" in stopped.stderr
    # The job's one output is its manifest, whatever its number of runs: without
    # it nothing is held incomplete (the job would simply run again, reusing its
    # runs through the run index), so there is nothing to accept.
    manifest.rename(tmp_path / "manifest.tsv")
    refused = accept_finished(workdir)
    assert refused.returncode == 0 and "nothing to accept" in refused.stdout, refused.stderr
    (tmp_path / "manifest.tsv").rename(manifest)
    accepted = accept_finished(workdir)
    assert accepted.returncode == 0, accepted.stderr
    assert "accepted 1 of 1 incomplete file(s)" in accepted.stdout
    # Accepted, not re-trained: the next run plans the summaries only.
    jobs = planned_jobs(snakemake(workdir, "-n", *PACKED, configfile=SLOW))
    assert not any(name.startswith("train") for name in jobs) and jobs["summarize"] == 1
    assert run_tsvs(workdir) == slow_reference
    again = accept_finished(workdir)
    assert again.returncode == 0 and "nothing to accept" in again.stdout


def test_forced_rerun_on_one_core_gives_identical_runs(tiny_results, tmp_path):
    """Determinism across modes: four cores, fresh vs one core, re-run in place.
    One run of each optimizer, of different seeds: each more would only add a
    training job (about 3 CPU-seconds)."""
    workdir = copy_tree(tiny_results, tmp_path / "w")
    before = finished(workdir)
    forced = ["linear/mse/sgd/base/seed0.tsv", "linear/mse/adam/base/seed1.tsv"]
    targets = [f"results/runs/{name}" for name in forced]
    snakemake(workdir, "--cores", "1", "--forcerun", *targets, *ONLY_TRAINING, configfile=TINY)
    after = finished(workdir)
    assert len(after) == 8 and after.keys() == before.keys()
    for name, (content, modified) in after.items():
        assert content == before[name][0], name
        assert (modified != before[name][1]) == (name in forced), name  # re-ran: only those


def test_tampered_run_file_is_retrained_and_a_malformed_one_stops_aggregation_with_file_and_line(
    tiny_results, tmp_path
):
    workdir = copy_tree(tiny_results, tmp_path / "w")
    tampered = workdir / "results/runs/linear/l1/adam/base/seed1.tsv"
    original = tampered.read_bytes()

    def tamper():
        lines = original.decode().splitlines()
        lines[3] = "2\t0.5x\t1\t0.1"
        tampered.write_text("\n".join(lines) + "\n")

    # Its job's manifest holds the TSV's SHA-256: the change is found and the run
    # trained again (issue 31 point 9), before any summary reads it. Training
    # only: nothing here reads the summaries and figures it would make again.
    tamper()
    process = snakemake(workdir, "--cores", "1", *ONLY_TRAINING, configfile=TINY)
    # The plan says which job and why, in words (optbench.planning.status).
    assert "  linear/l1/adam/base seeds 1: 1 run, 1 to train, 0 reused (1 run changed by hand)" in (
        process.stderr
    )
    assert tampered.read_bytes() == original
    # A malformed TSV that its manifest vouches for (as if its writer were
    # wrong) stops its cell's summary, naming file and line.
    tamper()
    manifest = workdir / "results/manifests/train/linear/l1/adam/base/seed1.tsv"
    runfiles.write_manifest(manifest, [(tampered, tampered.with_suffix(".json"))])
    # The manifest's own paths are relative to the working directory, as a job writes them.
    manifest.write_text(manifest.read_text().replace(f"{workdir}/", ""))
    process = snakemake(workdir, "--cores", "1", configfile=TINY, check=False)
    assert process.returncode != 0
    log = (workdir / "results/logs/summarize/evaluation/linear/l1/adam/base.log").read_text()
    assert "results/runs/linear/l1/adam/base/seed1.tsv:4: loss '0.5x' is not a number" in log
    assert (
        "results/logs/summarize/evaluation/linear/l1/adam/base.log"
        in process.stdout + process.stderr
    )
    # nothing that looks complete: the cell's summary is gone, and the tables are made again
    assert not (workdir / "results/summary/cells/evaluation/linear/l1/adam/base.json").exists()
    dry = snakemake(workdir, "-n", configfile=TINY)
    planned = planned_jobs(dry)
    assert planned.get("summarize_cell") == 1 and planned["summarize"] == 1, dry.stdout + dry.stderr


def test_stray_files_under_runs_are_ignored(tiny_results, tmp_path):
    workdir = copy_tree(tiny_results, tmp_path / "w")
    (workdir / "results/runs/linear/mse/sgd/base/seed99.tsv").write_text("garbage\n")
    (workdir / "results/runs/other").mkdir()
    (workdir / "results/runs/other/seed0.tsv").write_text("step\tloss\n0\t1e9\n")
    # The summaries read the runs (the figures and tables after them read the
    # summaries, the Parquet tables the runs by name): --until summarize.
    snakemake(
        workdir,
        "--cores",
        "1",
        "--forcerun",
        "summarize_cell",
        "summarize",
        "--until",
        "summarize",
        configfile=TINY,
    )
    steps = pd.read_csv(workdir / "results/summary/steps.tsv", sep="\t")
    assert set(steps["n"]) == {2} and set(steps["loss"]) == {"mse", "l1"}
    assert (tiny_results / "results/summary/steps.tsv").read_bytes() == (
        workdir / "results/summary/steps.tsv"
    ).read_bytes()


def test_diverging_optimizer_end_to_end(tmp_path):
    config = CONFIGS / "diverging.yaml"
    process = snakemake(tmp_path, "--cores", "2", configfile=config)
    results = tmp_path / "results"
    first_steps = []
    for seed in (0, 1):
        # The article's loop at lr=10 gives the run and its first inf/NaN step.
        losses = article_loop(seed, lambda p: torch.optim.SGD(p, lr=10.0), torch.nn.MSELoss(), 30)
        first_bad = next(step for step, value in enumerate(losses) if not math.isfinite(value))
        tsv = results / f"runs/linear/mse/sgd_lr10/base/seed{seed}.tsv"
        assert tsv.read_bytes() == article_tsv(losses, 10.0)  # inf/nan kept as written
        meta = json.loads((results / f"runs/linear/mse/sgd_lr10/base/seed{seed}.json").read_text())
        assert meta["first_nonfinite_step"] == first_bad
        first_steps.append(first_bad)
    steps = pd.read_csv(results / "summary/steps.tsv", sep="\t")
    wild = steps[steps["optimizer"] == "sgd_lr10"]
    assert wild["n_diverged"].iloc[-1] == 2 and math.isnan(wild["mean"].iloc[-1])
    assert (steps[steps["optimizer"] == "sgd"]["n_diverged"] == 0).all()
    board = pd.read_csv(results / "summary/leaderboard.tsv", sep="\t")
    # Two seeds cannot separate two optimizers by a test (the smallest two-sided
    # sign-test p is 0.5), but diverging on every seed against none does: last.
    assert list(board["optimizer"]) == ["sgd", "sgd_lr10"] and list(board["rank"]) == [1, 2]
    assert board["beaten_by"].iloc[1] == "sgd" and list(board["point_rank"]) == [1, 2]
    assert board["median_log10"].iloc[1] == math.inf and board["n_diverged"].iloc[1] == 2
    # The console (the summarize job's stderr, which Snakemake passes on) names it.
    line = (
        f"diverged: linear/mse/sgd_lr10/base: 2 of 2 runs (2 evaluation), first non-finite "
        f"loss at step {min(first_steps)}"
    )
    assert line in process.stderr + process.stdout
    # and that two seeds could not have separated them by a test (2 / 2**2 = 0.5)
    power = pd.read_csv(results / "summary/power.tsv", sep="\t").set_index("family")
    assert power.loc["pairwise", "min_p_adjusted"] == 0.5
    assert not power.loc["pairwise", "can_be_significant"]
    svg = (results / "figures/losses/linear/mse.svg").read_text()
    assert "sgd_lr10 (2/2 diverged, excluded)" in svg
    assert (results / "figures/overview.png").stat().st_size > 0


def test_hostile_argument_value_is_data_not_code(tmp_path):
    """Text where torch takes a number is refused before any job, both keys at
    once; text in an argument whose type torch's source leaves open (SGD's
    foreach, default None) reaches torch as a plain string, through the job's
    shell command, and runs nothing."""
    refused = tmp_path / "refused.yaml"
    refused.write_text(
        "optimizers: {sgd: {class: SGD, kwargs: "
        "{lr: '$(touch pwned)', momentum: '`touch pwned2`'}}}\n"
        "seeds: [0]\n"
    )
    workdir = tmp_path / "w"
    process = snakemake(
        workdir, "--cores", "1", "--configfile", str(TINY), str(refused), check=False
    )
    output = process.stdout + process.stderr
    assert process.returncode != 0
    assert "Invalid configuration (2 problems)" in output
    for key in ("lr", "momentum"):
        assert f"config key optimizers.sgd.kwargs.{key}: torch.optim.SGD takes a number" in output
    assert not (workdir / "results").exists()

    passed = tmp_path / "passed.yaml"
    passed.write_text(
        "optimizers: {sgd: {class: SGD, kwargs: {lr: 0.1, foreach: '$(touch pwned)'}}}\n"
        "seeds: [0]\n"
        "only: {optimizers: [sgd], losses: [mse]}\n"
    )
    snakemake(
        workdir,
        "--cores",
        "1",
        *ONLY_TRAINING,
        "--configfile",
        str(TINY),
        str(passed),
        "--config",
        "study=config",
    )
    sidecar = json.loads((workdir / "results/runs/linear/mse/sgd/base/seed0.json").read_text())
    assert sidecar["optimizer"]["kwargs"] == {"lr": 0.1, "foreach": "$(touch pwned)"}
    created = [p.name for p in tmp_path.rglob("pwned*")] + [p.name for p in REPO.rglob("pwned*")]
    assert created == []


@pytest.fixture(scope="module")
def bad_input_outcomes(tmp_path_factory, tiny_results):
    """Every row of docs/bad-input.md through snakemake, on a directory with
    finished results; the rows run side by side (each fails while parsing,
    before Snakemake would take the directory's lock)."""
    workdir = copy_tree(tiny_results, tmp_path_factory.mktemp("bad-input"))
    changes = tmp_path_factory.mktemp("bad-input-changes")
    before = tree_bytes(workdir / "results")

    runs = {}
    for index, case in enumerate(bad_input.cases()):
        change = changes / f"change{index}.yaml"
        change.write_text(case.change + "\n", encoding="utf-8")
        configs = (
            "--configfile",
            str(REPO / "config.yaml"),
            str(change),
            "--config",
            "study=config",
        )
        runs[case.name] = (workdir, ("--cores", "1", *configs))
    processes = snakemake_forked(runs, changes, parallel=os.cpu_count() or 2)
    return workdir, before, processes


@pytest.mark.parametrize("case", bad_input.cases(), ids=[c.name for c in bad_input.cases()])
def test_bad_input_fails_before_any_job_and_changes_nothing(bad_input_outcomes, case):
    workdir, before, processes = bad_input_outcomes
    process = processes[case.name]
    output = process.stdout + process.stderr
    assert process.returncode != 0
    assert all(message in output for message in case.messages), output[-3000:]
    # The message alone: no rule file and line, no traceback.
    assert "common.smk" not in output and "Traceback" not in output, output[-3000:]
    assert "rule train" not in output and "localrule" not in output
    assert tree_bytes(workdir / "results") == before
    assert not list(workdir.rglob("pwned*"))


def runtime_targets(case) -> tuple[str, str]:
    """The (loss, optimizer) cell that runs a row's new entry beside a sound partner."""
    change = yaml.safe_load(case.change)
    ((kind, entries),) = change.items()
    ((name, _),) = entries.items()
    return ("mse", name) if kind == "optimizers" else (name, "sgd")


@pytest.fixture(scope="module")
def runtime_outcomes(tmp_path_factory):
    """Every row of docs/bad-input.md's second table in one tiny grid: each row
    adds an entry, and each new entry trains in one job (seeds 0 and 1, so that
    the batched engine takes the job where it can) beside the sound cell
    mse/sgd. --keep-incomplete keeps whatever a failed job wrote."""
    workdir = tmp_path_factory.mktemp("runtime-errors")
    changes = {}
    for case in bad_input.runtime_cases():
        for kind, entries in yaml.safe_load(case.change).items():
            changes.setdefault(kind, {}).update(entries)
    change = workdir.parent / f"{workdir.name}-change.yaml"
    change.write_text(yaml.safe_dump(changes), encoding="utf-8")
    cells = [runtime_targets(case) for case in bad_input.runtime_cases()] + [("mse", "sgd")]
    # Each training job's output is its manifest (job_scope cell, seeds 0 and 1 one job).
    targets = [
        f"results/manifests/train/linear/{loss}/{optimizer}/base/seeds0-1.tsv"
        for loss, optimizer in cells
    ]
    process = snakemake(
        workdir,
        "--cores",
        "2",
        "--keep-going",
        "--keep-incomplete",
        "--config",
        "seeds=[0,1]",
        "seeds_per_job=all",
        "study=config",
        "--configfile",
        str(TINY),
        str(change),
        "--",
        *targets,
        check=False,
    )
    return workdir, process


@pytest.mark.parametrize(
    "case", bad_input.runtime_cases(), ids=[c.name for c in bad_input.runtime_cases()]
)
def test_value_torch_refuses_fails_its_job_naming_the_entry(runtime_outcomes, case):
    workdir, process = runtime_outcomes
    loss, optimizer = runtime_targets(case)
    log = workdir / f"results/logs/train/linear/{loss}/{optimizer}/base/seeds0-1.log"
    text = log.read_text()
    assert all(message in text for message in case.messages), text
    assert "Traceback" not in text  # the documented message, not a crash
    assert process.returncode != 0
    console = process.stdout + process.stderr
    assert str(log.relative_to(workdir)) in console
    # why it failed, in the console too (the log's last lines)
    assert f"training job failed; the end of {log.relative_to(workdir)}:" in console
    assert all(message in console for message in case.messages), console[-3000:]
    run = workdir / f"results/runs/linear/{loss}/{optimizer}/base"
    assert not run.exists() or list(run.iterdir()) == []  # nothing written, not even a temp
    # The sound cell beside it trained to the article's numbers.
    steps = yaml.safe_load(TINY.read_text())["steps"]
    for seed in (0, 1):
        sound = workdir / f"results/runs/linear/mse/sgd/base/seed{seed}.tsv"
        assert sound.read_bytes() == article_tsv(
            article_loop(seed, ARTICLE_OPTIMIZERS["sgd"], ARTICLE_LOSSES["mse"], steps),
            ARTICLE_LRS["sgd"],
        )
