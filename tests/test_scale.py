"""Seed packing and large grids: behaviour, not timings (tools/benchmark.py measures those)."""

import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import CONFIGS, planned_jobs, run_tsvs, snakemake
from optbench import runfiles
from optbench.planning import jobs
from optbench.reporting import analysis
from test_training import (
    ARTICLE_LOSSES,
    ARTICLE_LRS,
    ARTICLE_OPTIMIZERS,
    article_loop,
    article_tsv,
    assert_job_log,
)

pytestmark = pytest.mark.workflow
TINY = CONFIGS / "tiny.yaml"


SEEDS = (0, 1, 2)  # two blocks of 2 seeds, one of them short
ONLY_TRAINING = ("--omit-from", "summarize_cell")


@pytest.fixture(scope="module")
def expected_tsvs():
    """Every run's bytes from the article's loop, one seed at a time."""
    config = yaml.safe_load(TINY.read_text())
    expected = {}
    for loss in config["losses"]:
        for optimizer in config["optimizers"]:
            for seed in SEEDS:
                losses = article_loop(
                    seed, ARTICLE_OPTIMIZERS[optimizer], ARTICLE_LOSSES[loss], config["steps"]
                )
                expected[f"linear/{loss}/{optimizer}/base/seed{seed}.tsv"] = article_tsv(
                    losses, ARTICLE_LRS[optimizer]
                )
    return expected


def grid(seeds, per_job, scope="cell"):
    return (
        "--config",
        f"seeds=[{','.join(map(str, seeds))}]",
        f"seeds_per_job={per_job}",
        f"job_scope={scope}",
    )


def packed_run(workdir, per_job):
    return snakemake(
        workdir, "--cores", "2", *ONLY_TRAINING, *grid(SEEDS, per_job), configfile=TINY
    )


@pytest.fixture(scope="module")
def packed_by_two(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("packed-2")
    packed_run(workdir, 2)
    return workdir


def test_seeds_packed_by_two_are_byte_identical_to_single_runs(packed_by_two, expected_tsvs):
    assert run_tsvs(packed_by_two) == expected_tsvs
    logs = sorted(
        p.name for p in (packed_by_two / "results/logs/train/linear/mse/sgd/base").iterdir()
    )
    # each job's log, and the progress file it keeps beside it (optbench.progress)
    assert logs == [
        "seeds0-1.log", "seeds0-1.log.progress.json", "seeds2-3.log", "seeds2-3.log.progress.json"
    ]  # fmt: skip


def test_packed_job_logs_say_what_ran(packed_by_two):
    config = yaml.safe_load(TINY.read_text())
    for loss in config["losses"]:
        for optimizer in config["optimizers"]:
            for label, seeds in (("0-1", [0, 1]), ("2-3", [2])):
                log = f"results/logs/train/linear/{loss}/{optimizer}/base/seeds{label}.log"
                # A block of one run goes through the loop (nothing to batch).
                engine = "batched" if len(seeds) > 1 else "loop"
                cells = [(loss, optimizer)]
                manifest = log.replace("/logs/", "/manifests/").removesuffix(".log") + ".tsv"
                assert_job_log(
                    packed_by_two,
                    log,
                    cells,
                    seeds,
                    config["steps"],
                    engine=engine,
                    manifest=manifest,
                )


def test_all_seeds_in_one_job_are_byte_identical_to_single_runs(tmp_path, expected_tsvs):
    packed_run(tmp_path, "all")
    assert run_tsvs(tmp_path) == expected_tsvs
    logs = sorted(p.name for p in (tmp_path / "results/logs/train/linear/mse/sgd/base").iterdir())
    assert logs == ["seeds0-2.log", "seeds0-2.log.progress.json"]


def test_adding_a_seed_reruns_only_its_block(packed_by_two):
    def planned(seeds):
        process = snakemake(packed_by_two, "-n", *ONLY_TRAINING, *grid(seeds, 2), configfile=TINY)
        return {rule: n for rule, n in planned_jobs(process).items() if rule.startswith("train")}

    assert planned(SEEDS) == {}
    # the block 2..3 gains seed 3 in each of the 4 cells; block 0..1 is untouched
    assert planned((0, 1, 2, 3)) == {"train_seeds_2-3": 4}
    assert planned((0, 1, 2, 4)) == {"train_seeds_4-5": 4}


def test_rule_graph_has_one_training_rule_per_block(tmp_path):
    process = snakemake(
        tmp_path,
        "--rulegraph",
        "--config",
        "seeds=[0,1,2,3,4,5,6,7,8,9]",
        "seeds_per_job=5",
        "job_scope=cell",
        configfile=TINY,
    )
    labels = [line for line in process.stdout.splitlines() if "label =" in line]
    training = [line for line in labels if "train" in line]
    # + summarize_cell, summarize, 2 plots, columnar, explorer, record_study, all
    assert len(training) == 2 and len(labels) == 10


def big_grid(path, optimizers=50, seeds=100):
    config = {
        "seeds": list(range(seeds)),
        "steps": 40,
        "device": "cpu",
        "optimizers": {
            f"sgd_lr{i}": {"class": "SGD", "kwargs": {"lr": 0.001 * (i + 1)}}
            for i in range(optimizers)
        },
        "losses": {"mse": {"class": "MSELoss"}, "l1": {"class": "L1Loss"}},
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    ("per_job", "scope", "train_jobs"),
    [
        ("1", "cell", {"train": 10_000}),
        ("all", "cell", {"train_seeds_0-99": 100}),
        ("all", "problem", {"train_linear_seeds_0-99": 1}),
    ],
)
def test_ten_thousand_run_grid_dry_runs(tmp_path, per_job, scope, train_jobs):
    config = big_grid(tmp_path / "big.yaml")
    args = ("--config", f"seeds_per_job={per_job}", f"job_scope={scope}")
    printed = ("-p",) if scope == "problem" else ()
    process = snakemake(tmp_path, "-n", *printed, *args, configfile=config)
    jobs = planned_jobs(process)
    assert {k: v for k, v in jobs.items() if k.startswith("train")} == train_jobs
    # Cell summaries: one job per cell with job_scope cell, else one per
    # training job's group of cells (here the one problem) and seed role.
    summaries = {k: v for k, v in jobs.items() if k.startswith("summarize_")}
    assert summaries == (
        {"summarize_cell": 100} if scope == "cell" else {"summarize_evaluation_linear": 1}
    )
    assert jobs["summarize"] == 1
    assert jobs["plot_curves"] == 1 and jobs["plot_analysis"] == 1  # one job each, any grid
    if scope == "problem":
        # One job of 10,000 runs: its command stays far below Linux's 128 KiB per
        # argument (bash -c gets the whole command), and the runs it expands to
        # are all distinct; its one output is its manifest.
        assert_command_expands_to_outputs(process.stdout + process.stderr, runs=10_000)
        # Its summary job reads all 10,000 runs; its command names patterns too.
        (command,) = [line for line in process.stdout.splitlines() if "summarize_cell.py" in line]
        assert "--group" in command and len(command.encode()) < 16_384, len(command)


def assert_command_expands_to_outputs(text, runs):
    lines = text.splitlines()
    (command,) = [line for line in lines if "train.py" in line]
    assert len(command.encode()) < 16_384, len(command)
    arguments = shlex.split(command)
    expanded = jobs.expand(arguments[arguments.index("--job") + 1])
    (rule,) = [i for i, line in enumerate(lines) if line.startswith("rule train")]
    outputs = next(line.strip() for line in lines[rule:] if line.strip().startswith("output: "))
    # A packed job's one output is its manifest, an update() output (train.smk),
    # whatever its number of runs: the runs are written beside it, not declared.
    (declared,) = outputs.removeprefix("output: ").split(", ")
    assert declared.endswith(" (update)")
    manifest = declared.removesuffix(" (update)")
    assert manifest.startswith("results/manifests/train/") and f"--manifest {manifest}" in command
    tsvs = [run.tsv for run in expanded]
    assert len(tsvs) == runs and len(set(tsvs)) == runs


def test_summary_of_ten_thousand_runs(tmp_path):
    rng = np.random.default_rng(7)
    values = rng.lognormal(size=(2, 50, 100, 40))
    values[1, 3, 5, 20:] = np.inf  # one diverged run
    pattern = str(tmp_path / "runs" / "{loss}" / "{optimizer}" / "seed{seed}.tsv")
    paths = []
    for li, loss in enumerate(("mse", "l1")):
        for oi in range(50):
            folder = Path(pattern.format(loss=loss, optimizer=f"o{oi}", seed=0)).parent
            folder.mkdir(parents=True)
            for seed in range(100):
                path = pattern.format(loss=loss, optimizer=f"o{oi}", seed=seed)
                # A job's format, written plainly: a job's atomic write (a scan
                # of the folder for stale temporaries, an fsync) is not what this
                # test is about (5.5 CPU-seconds for the 10,000 files, 0.9 plainly).
                Path(path).write_text(runfiles.format_losses(values[li, oi, seed]))
                paths.append(path)
    analysis.summarize_runs(paths, pattern, 40, tmp_path / "summary")
    table = pd.read_csv(tmp_path / "summary" / "steps.tsv", sep="\t")
    assert len(table) == 2 * 50 * 40
    for li, loss, oi, step in [(0, "mse", 0, 0), (1, "l1", 49, 39), (0, "mse", 17, 11)]:
        row = table[(table["loss"] == loss) & (table["optimizer"] == f"o{oi}")]
        row = row[row["step"] == step].iloc[0]
        column = values[li, oi, :, step]
        assert row["mean"] == pytest.approx(column.mean(), rel=1e-12)
        assert row["var"] == pytest.approx(column.var(ddof=1), rel=1e-12)
    wild = table[(table["loss"] == "l1") & (table["optimizer"] == "o3")].set_index("step")
    assert wild.loc[19, "n_diverged"] == 0 and wild.loc[20, "n_diverged"] == 1
    assert wild.loc[39, "mean"] == pytest.approx(np.delete(values[1, 3, :, 39], 5).mean())
    board = pd.read_csv(tmp_path / "summary" / "leaderboard.tsv", sep="\t")
    assert len(board) == 100
    medians = board.set_index(["loss", "optimizer"])["median_log10"]
    for li, loss, oi in [(0, "mse", 0), (1, "l1", 49), (1, "l1", 3)]:
        finals = np.log10(values[li, oi, :, -1])
        finals[np.isinf(finals)] = np.inf  # the diverged run counts as +inf
        assert medians[(loss, f"o{oi}")] == pytest.approx(np.median(finals), rel=1e-12)
    # 50 optimizers per loss: every pair tested, Holm across the 1,225 pairs
    assert len(pd.read_csv(tmp_path / "summary" / "pairwise.tsv", sep="\t")) == 2 * 1225


def hundred_thousand_run_grid(path):
    """Issue 33's grid: linear, 4 optimizers x 25 learning rates x 2 losses x 500
    seeds, 125 seeds a job, the default job_scope (loss): 8 jobs of 12,500 runs."""
    classes = {"sgd": "SGD", "adam": "Adam", "rmsprop": "RMSprop", "adagrad": "Adagrad"}
    config = {
        "seeds": list(range(500)),
        "seeds_per_job": 125,
        "steps": 40,
        "device": "cpu",
        "optimizers": {
            f"{name}_{i}": {"class": cls, "kwargs": {"lr": round(0.001 * (i + 1), 3)}}
            for name, cls in classes.items()
            for i in range(25)
        },
        "losses": {"mse": {"class": "MSELoss"}, "l1": {"class": "L1Loss"}},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_hundred_thousand_run_grid_dry_run_prints_under_100_kb(tmp_path):
    config = hundred_thousand_run_grid(tmp_path / "big.yaml")
    # Snakemake's own job blocks: each training job declares its manifest only.
    plain = snakemake(tmp_path, "-n", configfile=config)
    assert len((plain.stdout + plain.stderr).encode()) < 100_000
    assert planned_jobs(plain)["total"] == 17  # 8 training, 2 summaries, 7 more
    # The readable form: our plan, Snakemake's counts. One line per job, each
    # under 300 characters, and the totals (40 steps a run).
    quiet = snakemake(tmp_path, "-n", "--quiet", "rules", configfile=config)
    printed = quiet.stdout + quiet.stderr
    assert len(printed.encode()) < 10_000
    lines = [line for line in printed.splitlines() if line.startswith("  linear/")]
    assert lines == [
        f"  linear/{loss} seeds {first}-{first + 124}: 12,500 runs, 12,500 to train, 0 reused "
        "(not trained yet)"
        for loss in ("l1", "mse")  # the config's order: yaml.safe_dump sorts the keys
        for first in (0, 125, 250, 375)
    ]
    assert (
        "totals: 100,000 runs (4,000,000 run-steps) in 8 training jobs; 8 jobs to run, "
        "100,000 runs (4,000,000 run-steps) to train, 0 reused"
    ) in printed.splitlines()
    assert "rule train" not in printed  # no job blocks
