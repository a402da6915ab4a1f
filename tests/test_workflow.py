"""The workflow as users run it: dry runs, lint, style, and a tiny end-to-end run."""

import json
import subprocess
import sys
import types

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import CONFIGS, REPO, copy_tree, planned_jobs, snakemake
from test_training import (
    ARTICLE_LOSSES,
    ARTICLE_OPTIMIZERS,
    article_loop,
    article_tsv,
    assert_job_log,
)

pytestmark = pytest.mark.workflow
TINY = CONFIGS / "tiny.yaml"


def test_default_grid_dry_run_schedules_80_training_jobs(workdir):
    process = snakemake(workdir, "-n", configfile=REPO / "config.yaml")
    assert planned_jobs(process) == {
        "train": 80,
        "summarize": 1,
        "plot_loss": 2,
        "plot_overview": 1,
        "all": 1,
        "total": 85,
    }


def dry_run_output(text):
    return types.SimpleNamespace(stdout=text, stderr="")


def test_planned_jobs_fails_loudly_on_output_it_cannot_read():
    rows = ["job    count", "-----  -------", "train        4", "all          1", "total        5"]
    table = "Job stats:\n" + "\n".join(rows) + "\n"
    assert planned_jobs(dry_run_output("Building DAG of jobs...\n" + table)) == {
        "train": 4,
        "all": 1,
        "total": 5,
    }
    assert planned_jobs(dry_run_output("Nothing to be done (all requested files ...).")) == {}
    for changed in (
        table.replace("Job stats:", "Job statistics:"),  # heading renamed
        table.replace("job    count", "rule   jobs"),  # header changed
        table.replace("train        4", "train   4   (0.5 s)"),  # a column added
        table.replace("total        5", "total        6"),  # total not the sum
        table.replace("total        5\n", ""),  # no total row
    ):
        with pytest.raises(AssertionError):
            planned_jobs(dry_run_output(changed))


def test_grid_changes_from_the_command_line(workdir):
    process = snakemake(
        workdir,
        "-n",
        "--config",
        "seeds=[3,4,5]",
        "optimizers={adamw: {class: AdamW, kwargs: {lr: 0.01}}}",
        configfile=REPO / "config.yaml",
    )
    # --config merges into the mapping: five optimizers x two losses x three seeds
    assert planned_jobs(process)["train"] == 30


def test_lint_is_clean():
    process = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint", "-s", str(REPO / "Snakefile")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert process.returncode == 0, process.stdout + process.stderr


def test_snakefmt_and_ruff_are_clean():
    snake_files = [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
    fmt = subprocess.run(
        [sys.executable, "-m", "snakefmt", "--check", *map(str, snake_files)],
        capture_output=True,
        text=True,
    )
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr
    ruff = subprocess.run(
        [sys.executable, "-m", "ruff", "check", str(REPO)], capture_output=True, text=True
    )
    assert ruff.returncode == 0, ruff.stdout + ruff.stderr


def test_tiny_run_writes_every_output(tiny_results):
    results = tiny_results / "results"
    finals = {}
    for loss in ("mse", "l1"):
        for optimizer in ("sgd", "adam"):
            for seed in (0, 1):
                stem = f"{loss}/{optimizer}/seed{seed}"
                expected = article_loop(
                    seed, ARTICLE_OPTIMIZERS[optimizer], ARTICLE_LOSSES[loss], steps=5
                )
                assert (results / f"runs/{stem}.tsv").read_bytes() == article_tsv(expected)
                finals.setdefault(loss, {}).setdefault(optimizer, []).append(expected[-1])
                meta = json.loads((results / f"runs/{stem}.json").read_text())
                assert (meta["seed"], meta["steps"], meta["device"]) == (seed, 5, "cpu")
                assert meta["loss"]["name"] == loss and meta["optimizer"]["name"] == optimizer
                assert meta["torch_version"] == torch.__version__
                log = f"results/logs/train/{stem}.log"
                assert_job_log(tiny_results, log, loss, optimizer, [seed], steps=5)
                benchmark = pd.read_csv(results / f"benchmarks/train/{stem}.tsv", sep="\t")
                assert len(benchmark) == 1 and benchmark["s"].iloc[0] > 0
    steps = pd.read_csv(results / "summary/steps.tsv", sep="\t")
    assert len(steps) == 2 * 2 * 5 and set(steps["n"]) == {2}
    board = pd.read_csv(results / "summary/leaderboard.tsv", sep="\t")
    assert len(board) == 4
    for loss, by_optimizer in finals.items():
        # Rank 1 is the lowest mean final loss, from the article's loop.
        order = sorted(by_optimizer, key=lambda optimizer: np.mean(by_optimizer[optimizer]))
        rows = board[board["loss"] == loss].set_index("optimizer")
        assert {o: rows.loc[o, "rank"] for o in order} == {o: r for r, o in enumerate(order, 1)}
        for optimizer, values in by_optimizer.items():
            assert rows.loc[optimizer, "mean"] == pytest.approx(np.mean(values), rel=1e-12)
    for stem in ("figures/overview", "figures/losses/mse", "figures/losses/l1"):
        assert (results / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert b"<svg" in (results / f"{stem}.svg").read_bytes()[:2000]
    leftovers = [p for p in results.rglob("*") if p.name.startswith(".") or p.suffix == ".part"]
    assert leftovers == []


def test_report_bundles_figures_and_tables_with_captions(tiny_results, tmp_path):
    workdir = copy_tree(tiny_results, tmp_path / "w")
    snakemake(workdir, "--report", "results/report.html", configfile=TINY)
    html = (workdir / "results/report.html").read_text()
    for name in ("steps.tsv", "leaderboard.tsv", "overview.svg", "mse.png", "l1.svg"):
        assert name in html, name
    caption = (REPO / "workflow/report/leaderboard.rst").read_text().split("(")[0].strip()
    assert caption in html  # the caption's first words, as written


def test_rerun_is_a_no_op(tiny_results):
    process = snakemake(tiny_results, "-n", configfile=TINY)
    assert "Nothing to be done" in process.stdout + process.stderr


def test_adding_a_seed_schedules_only_the_new_runs(tiny_results):
    process = snakemake(tiny_results, "-n", "--config", "seeds=[0,1,2]", configfile=TINY)
    assert planned_jobs(process) == {
        "train": 4,
        "summarize": 1,
        "plot_loss": 2,
        "plot_overview": 1,
        "all": 1,
        "total": 9,
    }


def test_changing_an_optimizer_reruns_only_its_runs(tiny_results):
    process = snakemake(
        tiny_results,
        "-n",
        "--config",
        "optimizers={adam: {class: Adam, kwargs: {lr: 0.05}}}",
        configfile=TINY,
    )
    assert planned_jobs(process)["train"] == 4  # adam x 2 losses x 2 seeds


@pytest.mark.parametrize(
    ("config_args", "message"),
    [
        (["steps=0"], "config key steps: 0 is less than the minimum of 1"),
        (["optimizers={x: {class: Adamm}}"], "optimizers.x.class: 'Adamm' is not an optimizer"),
        (["device=tpu"], "config key device: 'tpu' does not match"),
    ],
)
def test_bad_config_fails_before_any_job_and_leaves_no_results(workdir, config_args, message):
    process = snakemake(
        workdir, "--cores", "1", "--config", *config_args, configfile=TINY, check=False
    )
    assert process.returncode != 0
    assert message in process.stdout + process.stderr
    assert not (workdir / "results").exists()


def test_malformed_yaml_fails_clearly(workdir):
    bad = workdir / "bad.yaml"
    bad.write_text("steps: 40\nseeds: [0, 1\n")
    process = snakemake(workdir, "-n", configfile=bad, check=False)
    assert process.returncode != 0
    assert "not valid JSON or YAML" in process.stdout + process.stderr
    assert not (workdir / "results").exists()
