"""The workflow as users run it: dry runs, lint, style, and a tiny end-to-end run."""

import json
import math
import shutil
import subprocess
import sys
import types

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

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


def test_default_grid_dry_run_schedules_one_training_job_per_loss(workdir):
    process = snakemake(workdir, "-n", configfile=REPO / "config.yaml")
    assert planned_jobs(process) == {
        "train_linear_mse_seeds_0-9": 1,
        "train_linear_l1_seeds_0-9": 1,
        "summarize_cell": 8,
        "summarize": 1,
        "plot_loss": 2,
        "plot_overview": 1,
        "all": 1,
        "total": 15,
    }


def test_default_command_trains_two_batched_jobs_bit_exact_to_the_article(tmp_path):
    """README's first command on config.yaml (in a clone-like directory): one
    training job per loss, each training its 40 runs with the batched engine,
    and every run's TSV byte for byte the article's loop."""
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    snakemake(tmp_path, "--cores", "2")
    logs = sorted(p.relative_to(tmp_path) for p in (tmp_path / "results/logs/train").rglob("*"))
    assert [str(p) for p in logs if p.suffix == ".log"] == [
        "results/logs/train/linear/l1/seeds0-9.log",
        "results/logs/train/linear/mse/seeds0-9.log",
    ]
    optimizers = ("sgd", "momentum_sgd", "adam", "rmsprop")
    for loss in ("mse", "l1"):
        cells = [(loss, optimizer) for optimizer in optimizers]
        log = f"results/logs/train/linear/{loss}/seeds0-9.log"
        assert_job_log(tmp_path, log, cells, list(range(10)), 40, requested="auto")
        for optimizer in optimizers:
            for seed in range(10):
                stem = tmp_path / f"results/runs/linear/{loss}/{optimizer}/base/seed{seed}"
                expected = article_loop(
                    seed, ARTICLE_OPTIMIZERS[optimizer], ARTICLE_LOSSES[loss], steps=40
                )
                assert stem.with_suffix(".tsv").read_bytes() == article_tsv(expected)
                meta = json.loads(stem.with_suffix(".json").read_text())
                details = meta["engine_details"]
                assert (meta["engine"], details["runs"], details["variants"]) == ("batched", 10, 1)
                assert details["forward"] == "bmm" and details["kernels_exact"] is True
    assert (tmp_path / "results/summary/leaderboard.tsv").exists()


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


def planned_job_details(process) -> list[dict[str, str]]:
    """Each job a dry run prints: its rule and its indented fields (input, reason, ...)."""
    jobs = []
    for line in (process.stdout + process.stderr).splitlines():
        if line.startswith(("rule ", "localrule ")) and line.endswith(":"):
            jobs.append({"rule": line.split()[1].rstrip(":")})
        elif jobs and line.startswith("    ") and ": " in line:
            key, _, value = line.strip().partition(": ")
            jobs[-1].setdefault(key, value)
    return jobs


def cell_runs(loss, optimizer, seeds):
    return ", ".join(
        f"results/runs/linear/{loss}/{optimizer}/base/seed{seed}.tsv" for seed in seeds
    )


TINY_CELLS = ", ".join(
    f"results/summary/cells/evaluation/linear/{loss}/{optimizer}/base.json"
    for loss in ("mse", "l1")
    for optimizer in ("sgd", "adam")
)


def test_grid_changes_from_the_command_line(workdir):
    process = snakemake(
        workdir,
        "-n",
        "--config",
        "seeds=[3,4,5]",
        "optimizers={adamw: {class: AdamW, kwargs: {lr: 0.01}}}",
        configfile=REPO / "config.yaml",
    )
    # --config merges into the mapping: five optimizers x two losses x three seeds,
    # one job per loss (all seeds: one block spanning 0..5)
    jobs = {rule: n for rule, n in planned_jobs(process).items() if rule.startswith("train")}
    assert jobs == {"train_linear_mse_seeds_0-5": 1, "train_linear_l1_seeds_0-5": 1}
    assert planned_jobs(process)["summarize_cell"] == 10


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
                stem = f"linear/{loss}/{optimizer}/base/seed{seed}"
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
                cells = [(loss, optimizer)]
                assert_job_log(tiny_results, log, cells, [seed], steps=5, engine="loop")
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
    cells = sorted(str(p.relative_to(results)) for p in (results / "summary/cells").rglob("*.json"))
    assert cells == [
        "summary/cells/evaluation/linear/l1/adam/base.json",
        "summary/cells/evaluation/linear/l1/sgd/base.json",
        "summary/cells/evaluation/linear/mse/adam/base.json",
        "summary/cells/evaluation/linear/mse/sgd/base.json",
    ]
    for stem in ("figures/overview", "figures/losses/linear/mse", "figures/losses/linear/l1"):
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


def test_adding_a_seed_schedules_the_new_runs_and_a_readable_dry_run(tiny_results):
    process = snakemake(tiny_results, "-n", "--config", "seeds=[0,1,2]", configfile=TINY)
    assert planned_jobs(process) == {
        "train": 4,
        "summarize_cell": 4,
        "summarize": 1,
        "plot_loss": 2,
        "plot_overview": 1,
        "all": 1,
        "total": 13,
    }
    jobs = planned_job_details(process)
    assert len(jobs) == 13 and all("reason" in job for job in jobs)
    # Each cell reads its own runs only; the combine step reads one file per cell.
    for job in (job for job in jobs if job["rule"] == "summarize_cell"):
        wildcards = dict(item.split("=") for item in job["wildcards"].split(", "))
        assert job["input"] == cell_runs(wildcards["loss"], wildcards["optimizer"], (0, 1, 2))
        assert job["reason"] == (
            "Input files updated by another job: "
            f"{cell_runs(wildcards['loss'], wildcards['optimizer'], (2,))}; "
            "Set of input files has changed since last execution"
        )
    (combine,) = (job for job in jobs if job["rule"] == "summarize")
    assert combine["input"] == TINY_CELLS
    # The grid is no parameter any more: no reason line repeats it.
    assert max(len(job["reason"]) for job in jobs) <= 300, max(jobs, key=lambda j: len(j["reason"]))


def test_changing_an_optimizer_reruns_only_its_runs_and_cells(tiny_results):
    process = snakemake(
        tiny_results,
        "-n",
        "--config",
        "optimizers={adam: {class: Adam, kwargs: {lr: 0.05}}}",
        configfile=TINY,
    )
    assert planned_jobs(process)["train"] == 4  # adam x 2 losses x 2 seeds
    jobs = planned_job_details(process)
    cells = sorted(job["wildcards"] for job in jobs if job["rule"] == "summarize_cell")
    assert cells == [
        f"role=evaluation, problem=linear, loss={loss}, optimizer=adam, variant=base"
        for loss in ("l1", "mse")
    ]
    # (a training job's reason shows its cell's settings before and after)
    aggregation = [job for job in jobs if not job["rule"].startswith("train")]
    assert len(aggregation) == 7 and max(len(job["reason"]) for job in aggregation) <= 300


def test_rerunning_one_run_resummarizes_only_its_cell(tiny_results):
    process = snakemake(
        tiny_results,
        "-n",
        "--forcerun",
        "results/runs/linear/mse/adam/base/seed1.tsv",
        configfile=TINY,
    )
    assert planned_jobs(process) == {
        "train": 1,
        "summarize_cell": 1,
        "summarize": 1,
        "plot_loss": 2,
        "plot_overview": 1,
        "all": 1,
        "total": 7,
    }
    (cell,) = (job for job in planned_job_details(process) if job["rule"] == "summarize_cell")
    assert cell["wildcards"] == (
        "role=evaluation, problem=linear, loss=mse, optimizer=adam, variant=base"
    )
    assert cell["input"] == cell_runs("mse", "adam", (0, 1))


def test_a_lost_cell_summary_is_made_again_with_the_tables(tiny_results, tmp_path):
    """A failed or interrupted cell job leaves no summary; the next run must redo it
    (Snakemake alone would call the tables up to date)."""
    workdir = copy_tree(tiny_results, tmp_path / "w")
    (workdir / "results/summary/cells/evaluation/linear/l1/adam/base.json").unlink()
    process = snakemake(workdir, "-n", configfile=TINY)
    assert planned_jobs(process) == {
        "summarize_cell": 1,
        "summarize": 1,
        "plot_loss": 2,
        "plot_overview": 1,
        "all": 1,
        "total": 6,
    }


def test_summaries_follow_the_library_code_that_makes_them(tiny_results, tmp_path):
    """Snakemake alone tracks a job's command or script file, not the modules it imports."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("Snakefile", "config.yaml", "workflow", "profiles", "envs"):
        subprocess.run(["cp", "-a", str(REPO / name), str(repo)], check=True)
    workdir = copy_tree(tiny_results, tmp_path / "w")

    def dry_run():
        command = [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile")]
        command += ["--directory", str(workdir), "--configfile", str(TINY), "-n"]
        # params only: the copy's paths alone change every command line
        command += ["--rerun-triggers", "params"]
        process = subprocess.run(command, capture_output=True, text=True)
        assert process.returncode == 0, process.stdout + process.stderr
        return process

    unchanged = dry_run()
    assert "Nothing to be done" in unchanged.stdout + unchanged.stderr
    library = repo / "workflow/scripts/optbench"
    original = (library / "cells.py").read_text()
    (library / "cells.py").write_text(original + "\n# changed\n")
    jobs = planned_jobs(dry_run())
    assert jobs["summarize_cell"] == 4 and jobs["summarize"] == 1 and "train" not in jobs
    (library / "cells.py").write_text(original)
    (library / "summary.py").write_text((library / "summary.py").read_text() + "\n# changed\n")
    jobs = planned_jobs(dry_run())
    assert jobs["summarize"] == 1 and "summarize_cell" not in jobs and "train" not in jobs


def test_every_summary_row_matches_an_independent_computation_over_the_run_files(
    tiny_results,
):
    """Issue 13: each row is checked against numpy/scipy over the runs of its own cell,
    found by path; the cells differ at the final step, so a row credited to another
    cell cannot pass."""
    results = tiny_results / "results"
    runs = {}
    for path in sorted((results / "runs").glob("linear/*/*/base/seed*.tsv")):
        cell = (path.parent.parent.parent.name, path.parent.parent.name)
        seed = int(path.stem.removeprefix("seed"))
        runs.setdefault(cell, {})[seed] = np.loadtxt(path, delimiter="\t", skiprows=1)[:, 1]
    assert sorted(runs) == sorted((lo, o) for lo in ("mse", "l1") for o in ("sgd", "adam"))
    matrices = {
        cell: np.array([by_seed[s] for s in sorted(by_seed)]) for cell, by_seed in runs.items()
    }
    assert all(m.shape == (2, 5) and np.isfinite(m).all() for m in matrices.values())
    final_means = sorted(m[:, -1].mean() for m in matrices.values())
    assert min(np.diff(final_means)) > 0.01 * final_means[-1]  # the cells differ clearly

    steps = pd.read_csv(results / "summary/steps.tsv", sep="\t")
    assert list(zip(steps["loss"], steps["optimizer"], steps["step"], strict=True)) == [
        (lo, o, step) for lo in ("mse", "l1") for o in ("sgd", "adam") for step in range(5)
    ]
    for row in steps.itertuples(index=False):
        column = matrices[(row.loss, row.optimizer)][:, row.step]
        sem = stats.sem(column)
        low, high = stats.t.interval(0.95, len(column) - 1, loc=column.mean(), scale=sem)
        expected = {
            "n": 2,
            "n_finite": 2,
            "n_diverged": 0,
            "mean": column.mean(),
            "var": column.var(ddof=1),
            "std": column.std(ddof=1),
            "sem": sem,
            "ci95_low": low,
            "ci95_high": high,
            "median": np.median(column),
            "min": column.min(),
            "max": column.max(),
        }
        found = row._asdict()
        for name, value in expected.items():
            assert found[name] == pytest.approx(value, rel=1e-12, abs=1e-15), (row, name)

    board = pd.read_csv(results / "summary/leaderboard.tsv", sep="\t")
    for loss in ("l1", "mse"):
        ends = {o: matrices[(loss, o)][:, -1] for o in ("sgd", "adam")}
        order = sorted(ends, key=lambda o: ends[o].mean())
        rows = board[board["loss"] == loss]
        assert list(rows["optimizer"]) == order and list(rows["rank"]) == [1, 2]
        for row in rows.itertuples(index=False):
            final = ends[row.optimizer]
            assert row.n == 2 and row.mean == pytest.approx(final.mean(), rel=1e-12)
            assert row.std == pytest.approx(final.std(ddof=1), rel=1e-12)
        expected_p = stats.ttest_rel(ends[order[0]], ends[order[1]]).pvalue
        assert math.isnan(rows["p_vs_best"].iloc[0])
        assert rows["p_vs_best"].iloc[1] == pytest.approx(expected_p, rel=1e-9)
    assert list(board["loss"]) == ["l1", "l1", "mse", "mse"]


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
