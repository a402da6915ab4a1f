"""The workflow as users run it: dry runs, lint, style, and a tiny end-to-end run."""

import hashlib
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import types

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from conftest import (
    CONFIGS,
    REPO,
    copy_tree,
    planned_jobs,
    snakemake,
    snakemake_forked,
    wait_for_one_of,
)
from optbench.reporting import outputs
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
_spec = importlib.util.spec_from_file_location("results_text", REPO / "tools/results_text.py")
results_text = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(results_text)
# Every table and comparison figure the analysis declares (optbench.reporting.outputs).
TABLES = [table.file for table in outputs.TABLES]
FIGURES = [f"{figure.stem}.png" for figure in outputs.FIGURES]


def test_default_grid_dry_run_schedules_one_training_job_per_loss(workdir):
    process = snakemake(workdir, "-n", configfile=REPO / "config.yaml")
    assert planned_jobs(process) == {
        "train_linear_mse_seeds_0-9": 1,
        "train_linear_l1_seeds_0-9": 1,
        "summarize_evaluation_linear_mse": 1,
        "summarize_evaluation_linear_l1": 1,
        "summarize": 1,
        "plot_curves": 1,
        "plot_analysis": 1,
        "columnar": 1,
        "explorer": 1,
        "record_study": 1,
        "all": 1,
        "total": 11,
    }


def test_default_command_trains_two_batched_jobs_bit_exact_to_the_article(
    default_results, tmp_path
):
    """README's first command on config.yaml (in a clone-like directory): one
    training job per loss, each training its 40 runs with the batched engine,
    and every run's TSV byte for byte the article's loop. (The run is the
    session's shared one, conftest.default_results: made on the simulated AVX2
    host, whose bits tests/test_numerics.py compares with an AVX-512 host's.)"""
    run = default_results
    logs = sorted(p.relative_to(run) for p in (run / "results/logs/train").rglob("*"))
    assert [str(p) for p in logs if p.suffix == ".log"] == [
        "results/logs/train/linear/l1/seeds0-9.log",
        "results/logs/train/linear/mse/seeds0-9.log",
    ]
    optimizers = ("sgd", "momentum_sgd", "adam", "rmsprop")
    for loss in ("mse", "l1"):
        cells = [(loss, optimizer) for optimizer in optimizers]
        log = f"results/logs/train/linear/{loss}/seeds0-9.log"
        manifest = f"results/manifests/train/linear/{loss}/seeds0-9.tsv"
        assert_job_log(run, log, cells, list(range(10)), 40, requested="auto", manifest=manifest)
        for optimizer in optimizers:
            for seed in range(10):
                stem = run / f"results/runs/linear/{loss}/{optimizer}/base/seed{seed}"
                expected = article_loop(
                    seed, ARTICLE_OPTIMIZERS[optimizer], ARTICLE_LOSSES[loss], steps=40
                )
                assert stem.with_suffix(".tsv").read_bytes() == article_tsv(
                    expected, ARTICLE_LRS[optimizer]
                )
                meta = json.loads(stem.with_suffix(".json").read_text())
                details = meta["engine_details"]
                assert (meta["engine"], details["runs"], details["variants"]) == ("batched", 10, 1)
                assert details["forward"] == "bmm" and details["kernels_exact"] is True
    assert (run / "results/summary/leaderboard.tsv").exists()
    # The documentation's numbers about the default run are this run's numbers.
    summary_dir = run / "results/summary"
    document = (REPO / "docs/outputs.md").read_text()
    assert results_text.replace_section(document, results_text.render(summary_dir)) == document, (
        "docs/outputs.md 'What ten seeds say' is stale: run the default config, then "
        "python3 tools/results_text.py"
    )
    assert results_text.main(["--check", "--summary", str(summary_dir)]) == 0
    board = pd.read_csv(summary_dir / "leaderboard.tsv", sep="\t")
    changed = tmp_path / "changed"
    changed.mkdir()
    for name in ("pairwise.tsv", "runs.tsv", "claims.tsv"):
        shutil.copy(summary_dir / name, changed / name)
    board.assign(median=board["median"] * 1.5).to_csv(changed / "leaderboard.tsv", sep="\t")
    assert results_text.main(["--check", "--summary", str(changed)]) == 1
    # Each job's manifest lists its 40 runs with the SHA-256 of each TSV.
    for loss in ("mse", "l1"):
        manifest = run / f"results/manifests/train/linear/{loss}/seeds0-9.tsv"
        lines = manifest.read_text().splitlines()
        header = "tsv\tsidecar\ttsv_sha256\ttsv_bytes\ttsv_mtime_ns\tsettings_sha256\tcell_sha256"
        assert lines[0] == header and len(lines) == 41
        listed = {}
        for line in lines[1:]:
            tsv, sidecar, digest, size, _, settings, cell = line.split("\t")
            assert len(cell) == 16 and int(cell, 16) >= 0
            assert sidecar == tsv.removesuffix(".tsv") + ".json"
            assert int(size) == (run / tsv).stat().st_size
            assert settings == json.loads((run / sidecar).read_text())["settings_sha256"]
            listed[tsv] = digest
        runs = sorted((run / f"results/runs/linear/{loss}").rglob("*.tsv"))
        assert sorted(listed) == [str(p.relative_to(run)) for p in runs]
        for path in runs:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            assert listed[str(path.relative_to(run))] == digest
    # A lost run re-runs its job (not the other loss's), then that loss's summaries.
    workdir = copy_tree(run, tmp_path / "w")
    (workdir / "results/runs/linear/l1/adam/base/seed3.json").unlink()
    process = snakemake(workdir, "-n")
    planned = planned_jobs(process)
    # (the plan says which job and why: the job's only output is its manifest)
    assert (
        "  linear/l1 seeds 0-9: 40 runs, 1 to train, 39 reused (1 run with a file missing)\n"
        "totals: 80 runs (3,200 run-steps) in 2 training jobs; 1 job to run, 1 run (40 run-steps)"
        " to train, 79 reused\n"
    ) in process.stderr
    assert planned == {
        "train_linear_l1_seeds_0-9": 1,
        "summarize_evaluation_linear_l1": 1,
        "summarize": 1,
        "plot_curves": 1,
        "plot_analysis": 1,
        "columnar": 1,
        "explorer": 1,
        "record_study": 1,
        "all": 1,
        "total": 9,
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


def test_forked_runs_reap_only_their_own_children():
    """A child some other test left behind (ending first) is not reaped by the
    forked runs' wait: its Popen still gets its own exit status."""
    stray = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    mine = os.fork()
    if mine == 0:
        time.sleep(0.5)
        os._exit(5)
    pid, status = wait_for_one_of({mine})
    assert (pid, os.waitstatus_to_exitcode(status)) == (mine, 5)
    assert stray.wait(10) == 3


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
    """A cell job's input: its run TSVs, then their sidecars (held-out values)."""
    return ", ".join(
        f"results/runs/linear/{loss}/{optimizer}/base/seed{seed}.{ext}"
        for ext in ("tsv", "json")
        for seed in seeds
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
    # Its ten cells (five optimizers x two losses) are summarised by one job per loss.
    summaries = {
        job["rule"]: job["output"].split(", ")
        for job in planned_job_details(process)
        if job["rule"].startswith("summarize_")
    }
    assert sorted(summaries) == [
        "summarize_evaluation_linear_l1",
        "summarize_evaluation_linear_mse",
    ]
    for loss in ("mse", "l1"):
        optimizers = ("sgd", "momentum_sgd", "adam", "rmsprop", "adamw")
        assert summaries[f"summarize_evaluation_linear_{loss}"] == [
            f"results/summary/cells/evaluation/linear/{loss}/{optimizer}/base.json"
            for optimizer in optimizers
        ]


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
                assert (results / f"runs/{stem}.tsv").read_bytes() == article_tsv(
                    expected, ARTICLE_LRS[optimizer]
                )
                finals.setdefault(loss, {}).setdefault(optimizer, []).append(expected[-1])
                meta = json.loads((results / f"runs/{stem}.json").read_text())
                assert (meta["seed"], meta["steps"], meta["device"]) == (seed, 5, "cpu")
                assert meta["loss"]["name"] == loss and meta["optimizer"]["name"] == optimizer
                assert meta["torch_version"] == torch.__version__
                log = f"results/logs/train/{stem}.log"
                cells = [(loss, optimizer)]
                manifest = f"results/manifests/train/{stem}.tsv"  # every job writes one
                assert_job_log(
                    tiny_results, log, cells, [seed], steps=5, engine="loop", manifest=manifest
                )
                benchmark = pd.read_csv(results / f"benchmarks/train/{stem}.tsv", sep="\t")
                assert len(benchmark) == 1 and benchmark["s"].iloc[0] > 0
    steps = pd.read_csv(results / "summary/steps.tsv", sep="\t")
    assert len(steps) == 2 * 2 * 5 and set(steps["n"]) == {2}
    board = pd.read_csv(results / "summary/leaderboard.tsv", sep="\t")
    assert len(board) == 4
    for loss, by_optimizer in finals.items():
        rows = board[board["loss"] == loss].set_index("optimizer")
        # Two seeds: the smallest two-sided exact Wilcoxon p-value is 0.5, so no
        # test separates the optimizers and they share rank 1 (a ranking by the
        # mean would have ranked them 1, 2).
        assert set(rows["rank"]) == {1} and rows["beaten_by"].isna().all()
        for optimizer, values in by_optimizer.items():
            assert rows.loc[optimizer, "median_log10"] == pytest.approx(
                np.median(np.log10(values)), rel=1e-12
            )
            assert rows.loc[optimizer, "mean"] == pytest.approx(np.mean(values), rel=1e-12)
    for name in TABLES:
        assert (results / "summary" / name).stat().st_size > 0, name
    cells = sorted(str(p.relative_to(results)) for p in (results / "summary/cells").rglob("*.json"))
    assert cells == [
        "summary/cells/evaluation/linear/l1/adam/base.json",
        "summary/cells/evaluation/linear/l1/sgd/base.json",
        "summary/cells/evaluation/linear/mse/adam/base.json",
        "summary/cells/evaluation/linear/mse/sgd/base.json",
    ]
    for stem in ("figures/overview", "figures/losses/linear/mse", "figures/losses/linear/l1"):
        assert (results / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        # tiny.yaml's figure_formats: [png] (the vector figures: the report test's default run)
        assert not any((results / f"{stem}.{ext}").exists() for ext in ("svg", "pdf")), stem
    for name in FIGURES:
        assert (results / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    leftovers = [p for p in results.rglob("*") if p.name.startswith(".") or p.suffix == ".part"]
    assert leftovers == []


LANDING = REPO / "workflow/report/workflow.rst"


def test_report_holds_every_table_and_figure_with_its_caption(default_results, tmp_path):
    # The default run (config.yaml): its figures in every format, the report's PNGs alone.
    workdir = copy_tree(default_results, tmp_path / "w")
    snakemake(workdir, "--report", "results/report.html")
    html = (workdir / "results/report.html").read_text()
    declared = [*TABLES, *FIGURES, "overview.png", "mse.png", "explorer.html"]
    for name in declared:
        assert name in html, name
    # The report's budget (docs/report.md, "Size"): figures as PNG only, the
    # vector twins on disk; every entry well under Chromium's 2 MB data: URL.
    entries = re.findall(r'"data_uri": "data:[^"]*?filename=([^;"]+);base64,([^"]*)"', html)
    # each table's TSV (not steps.tsv) and page, the comparison figures, the
    # two loss figures, the overview, the answer and the explorer
    assert len(entries) == (len(TABLES) * 2 - 1) + len(FIGURES) + 2 + 3
    for name, data in entries:
        assert not name.endswith((".svg", ".pdf")), name
        assert len(data) * 3 / 4 <= 500_000, name
    for stem in ("overview", "losses/linear/l1", *(name[:-4] for name in FIGURES)):
        svg = (workdir / f"results/figures/{stem}.svg").read_bytes()
        assert b"<svg" in svg[:2000] and svg.rstrip().endswith(b"</svg>"), stem
        pdf = (workdir / f"results/figures/{stem}.pdf").read_bytes()
        assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF"), stem
    captions = sorted(set((REPO / "workflow/report").glob("*.rst")) - {LANDING})
    # + loss figure, overview, answer, explorer
    assert len(captions) == len(TABLES) + len(FIGURES) + 4
    for caption in captions:
        # each caption's bold title, as written (rendered by docutils as <strong>)
        title = caption.read_text().split("**")[1]
        assert f"<strong>{title}</strong>" in html or title in html, caption.name
    for category in ("1 Runs and steps", "2 Tuning", "3 Per problem", "4 Across problems"):
        assert category in html, category
    # The landing page describes the experiment from its config.
    assert "Optimizer comparison" in html
    assert "4 optimizers" in html and "(sgd, momentum_sgd, adam, rmsprop)" in html
    assert "10 evaluation seeds" in html
    assert "40 steps per run" in html and "numerics" in html


def test_rerun_is_a_no_op(tiny_results):
    process = snakemake(tiny_results, "-n", configfile=TINY)
    assert "Nothing to be done" in process.stdout + process.stderr


def test_adding_a_seed_schedules_the_new_runs_and_a_readable_dry_run(tiny_results):
    process = snakemake(tiny_results, "-n", "--config", "seeds=[0,1,2]", configfile=TINY)
    assert planned_jobs(process) == {
        "train": 4,
        "summarize_cell": 4,
        "summarize": 1,
        "plot_curves": 1,
        "plot_analysis": 1,
        "columnar": 1,
        "explorer": 1,
        "record_study": 1,
        "all": 1,
        "total": 15,
    }
    jobs = planned_job_details(process)
    assert len(jobs) == 15 and all("reason" in job for job in jobs)
    # Each cell reads its own runs only; the combine step reads one file per cell.
    for job in (job for job in jobs if job["rule"] == "summarize_cell"):
        wildcards = dict(item.split("=") for item in job["wildcards"].split(", "))
        assert job["input"] == cell_runs(wildcards["loss"], wildcards["optimizer"], (0, 1, 2))
        updated, _, rest = (
            job["reason"].removeprefix("Input files updated by another job: ").partition("; ")
        )
        new_seed = cell_runs(wildcards["loss"], wildcards["optimizer"], (2,))
        assert sorted(updated.split(", ")) == sorted(new_seed.split(", "))
        assert rest == "Set of input files has changed since last execution"
    (combine,) = (job for job in jobs if job["rule"] == "summarize")
    assert combine["input"] == TINY_CELLS
    # The grid is no parameter any more: no reason line repeats it. (Rule all's
    # reason lists the figures it asks for, plot_analysis's and explorer's the tables
    # they read and record_study's the figures it follows: they grow with the report.)
    jobs = [
        job
        for job in jobs
        if job["rule"] not in ("all", "plot_analysis", "explorer", "record_study")
    ]
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
    assert len(aggregation) == 9  # the summaries, figures, tables, explorer, record, all
    assert (
        max(
            len(job["reason"])
            for job in aggregation
            if job["rule"] not in ("all", "plot_analysis", "explorer", "record_study")
        )
        <= 300
    )


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
        "plot_curves": 1,
        "plot_analysis": 1,
        "columnar": 1,
        "explorer": 1,
        "record_study": 1,
        "all": 1,
        "total": 9,
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
        "plot_curves": 1,
        "plot_analysis": 1,
        "columnar": 1,
        "explorer": 1,
        "record_study": 1,
        "all": 1,
        "total": 8,
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
        command += ["--config", "study=config"]  # tiny_results's study (conftest)
        # params only: the copy's paths alone change every command line
        command += ["--rerun-triggers", "params"]
        process = subprocess.run(command, capture_output=True, text=True)
        assert process.returncode == 0, process.stdout + process.stderr
        return process

    unchanged = dry_run()
    assert "Nothing to be done" in unchanged.stdout + unchanged.stderr
    library = repo / "workflow/scripts/optbench"
    original = (library / "reporting/cells.py").read_text()
    (library / "reporting/cells.py").write_text(original + "\n# changed\n")
    jobs = planned_jobs(dry_run())
    assert jobs["summarize_cell"] == 4 and jobs["summarize"] == 1 and "train" not in jobs
    (library / "reporting/cells.py").write_text(original)
    (library / "reporting/summary.py").write_text(
        (library / "reporting/summary.py").read_text() + "\n# changed\n"
    )
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
        logs = np.log10(column)
        log_low, log_high = stats.t.interval(
            0.95, len(logs) - 1, loc=logs.mean(), scale=stats.sem(logs)
        )
        expected = {
            "n": 2,
            "n_finite": 2,
            "n_diverged": 0,
            "n_floored": 0,
            "mean": column.mean(),
            "var": column.var(ddof=1),
            "std": column.std(ddof=1),
            "sem": sem,
            "ci95_low": low,
            "ci95_high": high,
            "log10_mean": logs.mean(),
            "log10_sd": logs.std(ddof=1),
            "geo_mean": stats.gmean(column),
            "geo_low": 10**log_low,
            "geo_high": 10**log_high,
            "median": 10 ** np.median(logs),  # in log space: the geometric mean of the two
            "min": column.min(),
            "max": column.max(),
        }
        found = row._asdict()
        for name, value in expected.items():
            assert found[name] == pytest.approx(value, rel=1e-12, abs=1e-15), (row, name)
        # two runs: no order-statistic interval reaches 95 %, so none is given
        assert math.isnan(row.median_low) and math.isnan(row.median_high)
        assert 0 < row.geo_low <= row.geo_mean <= row.geo_high

    # The per-run table: one row per run file, its metrics from the file alone.
    table = pd.read_csv(results / "summary/runs.tsv", sep="\t")
    assert len(table) == 8 and set(table["role"]) == {"evaluation"}
    for row in table.itertuples(index=False):
        losses = runs[(row.loss, row.optimizer)][row.seed]
        level = 1e-3 * losses[0]
        reached = np.flatnonzero(losses <= level)
        expected = {
            "initial_loss": losses[0],
            "final_loss": losses[-1],
            "best_loss": losses.min(),
            "auc_log10": np.log10(losses).mean(),
            "threshold": level,
            "evaluations": 5,
            "oscillation": np.clip(np.diff(losses[2:]), 0, None).sum() / losses[0],
        }
        found = row._asdict()
        for name, value in expected.items():
            assert found[name] == pytest.approx(value, rel=1e-12), (row, name)
        assert math.isnan(row.steps_to_threshold) == (reached.size == 0)
        assert math.isnan(row.first_nonfinite_step) and math.isnan(row.heldout_loss)

    # Paired comparisons on final log10 loss, against scipy's exact Wilcoxon.
    pairwise = pd.read_csv(results / "summary/pairwise.tsv", sep="\t")
    assert len(pairwise) == 2
    for row in pairwise.itertuples(index=False):
        a = np.log10(matrices[(row.loss, row.a)][:, -1])
        b = np.log10(matrices[(row.loss, row.b)][:, -1])
        reference = stats.wilcoxon(a - b, method="exact")
        assert (row.test, row.n_pairs) == ("wilcoxon exact", 2)
        assert row.p_value == pytest.approx(reference.pvalue, rel=1e-12)
        assert row.p_holm == pytest.approx(reference.pvalue, rel=1e-12)  # one pair per block
        assert row.median_diff == pytest.approx(np.median(a - b), rel=1e-12)


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


def test_report_from_an_environment_of_requirements_txt_alone(tiny_results, tmp_path):
    """README: after command 1 the report builds; its dependencies (Snakemake's
    reports extra) come from requirements.txt, not from the test tools."""
    venv = tmp_path / "venv"
    # The venv gets requirements.txt and nothing else, installed by this
    # environment's pip (--python): the venv's own pip would add nothing the
    # report uses and cost its install. --no-compile: the packages' .pyc files
    # are written when first imported instead of all of torch's up front.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    install = [sys.executable, "-m", "pip", "--python", str(venv / "bin/python"), "install"]
    install += ["-q", "--no-compile", "-r", str(REPO / "requirements.txt")]
    subprocess.run(install, check=True, timeout=1200, capture_output=True)
    workdir = copy_tree(tiny_results, tmp_path / "w")
    command = [str(venv / "bin/python"), "-m", "snakemake", "-s", str(REPO / "Snakefile")]
    command += ["--directory", str(workdir), "--configfile", str(TINY)]
    command += ["--config", "study=config"]  # tiny_results's study (conftest)
    process = subprocess.run(
        [*command, "--report", "results/report.html"], capture_output=True, text=True
    )
    assert process.returncode == 0, process.stderr[-3000:]
    html = (workdir / "results/report.html").read_text()
    assert "steps_to_threshold.png" in html and "leaderboard.tsv" in html


FILE_LISTS = ("Missing output files: ", "Input files updated by another job: ")
# The rules after the tables (and what follows them): their recorded params
# never show in a dry run's reasons once their inputs change.
AFTER_THE_TABLES = ("plot_curves", "plot_analysis", "columnar", "explorer")


@pytest.mark.parametrize("scope", ["loss", "problem"])
def test_packed_dry_runs_stay_readable(tmp_path, scope):
    """After a packed run, adding a seed, a swept value or an optimizer gives reason
    lines without the jobs' JSON: a packed job's argument is recorded by its digest.
    (Snakemake's own lists of missing or updated files grow with the change.)"""
    config = tmp_path / "packed.yaml"
    config.write_text(
        TINY.read_text()
        .replace("job_scope: cell", f"job_scope: {scope}")
        .replace("seeds_per_job: 1", "seeds_per_job: all")
    )
    workdir = tmp_path / "w"
    # The run stops before the figures, the explorer and the Parquet tables:
    # after a change their reasons are Snakemake's lists of updated files
    # alone, whether they ran or not, while the jobs up to `summarize` (the
    # ones whose recorded params a change can show) have run.
    snakemake(workdir, "--cores", "2", "--omit-from", *AFTER_THE_TABLES, configfile=config)
    adam = "adam: {class: Adam, kwargs: {lr: 0.1, betas: [0.9, 0.99], eps: 1.0e-9}}"
    sgd = "sgd: {class: SGD, kwargs: {lr: 0.1}"
    cases = [
        ("seeds=[0,1,2]",),  # a seed
        (  # a swept value (and the tuning seed a sweep needs)
            "tuning_seeds=[7]",
            f"optimizers={{{sgd}, sweep: {{lr: [0.1, 0.2]}}}}, {adam}}}",
        ),
        (f"optimizers={{{sgd}}}, {adam}, rms: {{class: RMSprop}}}}",),
    ]
    # Our plan (optbench.planning.status), per training job: its runs, how many
    # train and how many are reused, and why in words. Worked out by hand: per
    # (problem, loss) 2 optimizers x 2 seeds were trained; a seed adds 2 runs,
    # the sweep replaces sgd's one variant by 2 (lr=0.1, lr=0.2) over seeds
    # 0, 1 and 7 (6 new runs; adam gains seed 7), an optimizer adds 2 runs.
    losses = ("mse", "l1") if scope == "loss" else ("mse/l1",)
    said = [
        ("1 seed added", 6, 2),
        ("2 variants of sgd added; 1 seed added", 12, 8),
        ("optimizer rms added", 6, 2),
    ]
    # The three dry runs, forked from this warmed-up process (one at a time:
    # they read the same folder).
    dry_runs = snakemake_forked(
        {
            index: (workdir, ["-n", "--configfile", str(config), "--config", *case, "study=config"])
            for index, case in enumerate(cases)
        },
        tmp_path,
        parallel=1,
    )
    for index, (reasons, runs, train) in enumerate(said):
        process = dry_runs[index]
        assert process.returncode == 0, process.stderr[-3000:]
        jobs = planned_job_details(process)
        assert jobs, process.stderr[-2000:]
        for job in jobs:
            # Snakemake's own lists of files aside, the reasons are short.
            parts = job["reason"].split("; ")
            said = [p for p in parts if not p.startswith(FILE_LISTS)]
            assert len("; ".join(said)) <= 300, job
            assert '"cells"' not in job["reason"], job
        per_job = len(losses)
        lines = [line for line in process.stderr.splitlines() if line.startswith("  linear")]
        expected = []
        for loss in losses:
            key = "linear" if scope == "problem" else f"linear/{loss}"
            n, t = runs * (2 if scope == "problem" else 1), train * (2 if scope == "problem" else 1)
            seeds = "0-7" if "sgd" in reasons else ("0-2" if "seed" in reasons else "0-1")
            expected.append(
                f"  {key} seeds {seeds}: {n} runs, {t} to train, {n - t} reused ({reasons})"
            )
        assert lines == expected, process.stderr[-3000:]
        trains = sum(n for rule, n in planned_jobs(process).items() if rule.startswith("train"))
        assert trains == per_job  # one line per job that Snakemake runs
        total = runs * 2
        assert (
            f"{2 if scope == 'loss' else 1} job{'s' if scope == 'loss' else ''} to run, "
            f"{train * 2} runs ({train * 2 * 5} run-steps) to train, {total - train * 2} reused"
        ) in process.stderr
