"""Issue 10 end to end: problems as an axis, a user problem, sweep variants, L-BFGS."""

import hashlib
import json
import shutil

import pandas as pd
import pytest
import torch
import yaml

from conftest import REPO, planned_jobs, snakemake, snakemake_forked, tree_bytes
from optbench import runfiles
from optbench.engines import training

pytestmark = pytest.mark.workflow

SWEEP_CONFIG = {
    "seeds": [0, 1],
    "tuning_seeds": [100],
    "steps": 6,
    "device": "cpu",
    "seeds_per_job": "all",
    # One job per cell: a new sweep value then re-runs only its own variant
    # (the default, one job per (problem, loss), re-runs the loss's job whole).
    "job_scope": "cell",
    "problems": {
        "linear": {"kwargs": {"dim": 20}, "losses": ["mse"]},
        "rosenbrock": {"kwargs": {"dim": 3}},
    },
    "losses": {"mse": {"class": "MSELoss"}},
    "optimizers": {
        "sgd": {"class": "SGD", "kwargs": {"lr": 0.01}, "sweep": {"lr": [0.001, 0.01]}},
        "lbfgs": {"class": "LBFGS", "kwargs": {"line_search_fn": "strong_wolfe"}},
    },
}


# The analysis jobs no test of the sweep reads: the comparison figures, the
# explorer and the Parquet tables (and the study record after them).
SWEEP_UNREAD = ("--omit-from", "plot_analysis", "explorer", "columnar")


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("sweep")
    config = workdir / "sweep.yaml"
    config.write_text(yaml.safe_dump(SWEEP_CONFIG))
    snakemake(workdir, "--cores", "2", *SWEEP_UNREAD, configfile=config)
    return workdir, config


def test_a_sweep_runs_every_variant_on_both_seed_roles_and_picks_on_tuning_seeds(sweep_run):
    workdir, _ = sweep_run
    runs = sorted(
        str(p.relative_to(workdir / "results/runs"))
        for p in (workdir / "results/runs").rglob("*.tsv")
    )
    variants = {"sgd": ["base", "lr0.001", "lr0.01"], "lbfgs": ["base"]}
    expected = sorted(
        f"{problem}/{loss}/{optimizer}/{variant}/seed{seed}.tsv"
        for problem, loss in (("linear", "mse"), ("rosenbrock", "objective"))
        for optimizer, names in variants.items()
        for variant in names
        for seed in (0, 1, 100)
    )
    assert runs == expected
    selection = pd.read_csv(workdir / "results/summary/selection.tsv", sep="\t")
    for row in selection.itertuples():
        if row.optimizer == "lbfgs":
            # its only variant, the one candidate (scored on the tuning seed all the same)
            assert (row.variant, row.n_candidates, row.n_tuning_seeds) == ("base", 1, 1)
            continue
        # recomputed from the tuning run files: the lower final log10 loss wins
        finals = {
            variant: runfiles.read_run(
                workdir / f"results/runs/{row.problem}/{row.loss}/sgd/{variant}/seed100.tsv"
            )[-1]
            for variant in ("lr0.001", "lr0.01")
        }
        assert row.variant == min(finals, key=finals.get) and row.n_tuning_seeds == 1
    board = pd.read_csv(workdir / "results/summary/leaderboard.tsv", sep="\t")
    assert sorted(zip(board["problem"], board["optimizer"], strict=True)) == [
        ("linear", "lbfgs"),
        ("linear", "sgd"),
        ("rosenbrock", "lbfgs"),
        ("rosenbrock", "sgd"),
    ]
    assert set(board["n"]) == {2}  # evaluation seeds only
    for problem, loss in (("linear", "mse"), ("rosenbrock", "objective")):
        assert (workdir / f"results/figures/losses/{problem}/{loss}.svg").exists()


def test_lbfgs_records_its_loss_evaluations_and_beats_sgd_on_the_objective(sweep_run):
    workdir, _ = sweep_run
    root = workdir / "results/runs/rosenbrock/objective"
    for seed in (0, 1):
        lbfgs, evaluations = runfiles.read_run_columns(root / f"lbfgs/base/seed{seed}.tsv", 6)
        sgd, sgd_evaluations = runfiles.read_run_columns(root / f"sgd/base/seed{seed}.tsv", 6)
        assert set(sgd_evaluations) == {1} and evaluations[0] > 1  # the line search re-evaluates
        meta = json.loads((root / f"lbfgs/base/seed{seed}.json").read_text())
        assert meta["evaluations"] == sum(evaluations)
        assert lbfgs[0] == sgd[0]  # one seed, one start point, whatever the optimizer
        # L-BFGS reaches the minimum 0 in six steps; SGD (lr 0.01) diverges there
        assert lbfgs[-1] < 1e-6 and not sgd[-1] <= lbfgs[-1]


def test_adding_a_sweep_value_schedules_only_the_new_variant(sweep_run, tmp_path):
    workdir, config = sweep_run
    grown = yaml.safe_load(config.read_text())
    grown["optimizers"]["sgd"]["sweep"]["lr"].append(0.1)
    config_path = workdir / "grown.yaml"
    config_path.write_text(yaml.safe_dump(grown))
    # (a dry run forked from this warmed-up process: only the plan is read)
    (process,) = snakemake_forked(
        {"grown": (workdir, ["-n", "--configfile", str(config_path), "--config", "study=config"])},
        tmp_path,
    ).values()
    assert process.returncode == 0, process.stderr[-3000:]
    jobs = planned_jobs(process)
    # one packed job per (problem, loss) for the new variant lr0.1, its two cell
    # summaries per role and problem, and the tables and figures after them
    assert jobs["train_seeds_0-100"] == 2
    assert jobs["summarize_cell"] == 4
    text = process.stdout + process.stderr
    assert "variant=lr0.1" in text and "variant=lr0.01," not in text


def test_a_user_problem_added_to_a_copy_of_the_project_runs_end_to_end(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    for name in ("Snakefile", "config.yaml", "workflow", "profiles", "envs", "problems"):
        shutil.copytree(REPO / name, project / name) if (REPO / name).is_dir() else shutil.copy(
            REPO / name, project / name
        )
    shutil.copy(project / "problems" / "_template.py", project / "problems" / "sine.py")
    config = tmp_path / "sine.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "seeds": [3],
                "steps": 5,
                "device": "cpu",
                "problems": {"sine": {"kwargs": {"hidden": 8}}},
                "optimizers": {"adam": {"class": "Adam", "kwargs": {"lr": 0.01}}},
                "losses": {"mse": {"class": "MSELoss"}},
            }
        )
    )
    workdir = tmp_path / "w"
    # Training only: every check below reads the runs, the plan or the failed
    # job, none the summaries or figures.
    training_only = ("--omit-from", "summarize_evaluation_sine_mse")
    process = snakemake(
        workdir, "--cores", "1", *training_only, configfile=config, snakefile=project / "Snakefile"
    )
    assert process.returncode == 0
    tsv = workdir / "results/runs/sine/mse/adam/base/seed3.tsv"
    meta = json.loads(tsv.with_suffix(".json").read_text())
    source = project / "problems" / "sine.py"
    assert meta["problem"] == {
        "name": "sine",
        "problem": "sine",
        "kind": "regression",
        "kwargs": {"samples": 64, "hidden": 8, "heldout_samples": 256},
        "source_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
    }
    assert meta["heldout"]["heldout_loss"] > 0
    # the same run in this process, from the same file, gives the same bytes
    spec = {key: meta[key] for key in ("problem", "loss", "optimizer", "variant", "steps")}
    spec["problems_dir"] = str(project / "problems")
    result = training.train_one(spec, 3, torch.device("cpu"))
    written = runfiles.format_losses(result.losses, result.evaluations, result.lrs)
    assert tsv.read_bytes() == written.encode()

    # Editing the file re-runs its runs; an edit that breaks it fails the job,
    # which says why in the console and puts back the runs it was replacing.
    before = tree_bytes(workdir / "results")
    source.write_text(
        source.read_text() + "\n\ndef build(seed, steps, **parameters):\n"
        "    raise RuntimeError('a bug in the edited problem')\n"
    )
    planned = planned_jobs(
        snakemake(workdir, "-n", configfile=config, snakefile=project / "Snakefile")
    )
    assert planned["train_sine_mse_seeds_0-3"] == 1
    failed = snakemake(
        workdir,
        "--cores",
        "1",
        *training_only,
        configfile=config,
        snakefile=project / "Snakefile",
        check=False,
    )
    assert failed.returncode != 0
    assert "RuntimeError: a bug in the edited problem" in failed.stderr
    after = tree_bytes(workdir / "results")
    runs = [name for name in before if name.startswith(("runs/", "manifests/"))]
    assert len(runs) == 3  # TSV, sidecar, manifest
    assert {name: after.get(name) for name in runs} == {name: before[name] for name in runs}
    # A first run that fails has nothing to put back, and says nothing about it.
    fresh = snakemake(
        tmp_path / "fresh",
        "--cores",
        "1",
        *training_only,
        configfile=config,
        snakefile=project / "Snakefile",
        check=False,
    )
    assert fresh.returncode != 0 and "a bug in the edited problem" in fresh.stderr
    assert "backup" not in fresh.stderr
    assert not (tmp_path / "fresh" / "results" / "runs").exists() or not any(
        (tmp_path / "fresh" / "results" / "runs").rglob("*.*")
    )


def test_a_users_optimizer_file_in_a_copy_of_the_project_runs_end_to_end(tmp_path):
    """optimizers/_template.py copied and named in a config: checked before any job,
    batched after the probe, the same bytes as the loop in this process, and re-run
    when the file changes."""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("Snakefile", "config.yaml", "workflow", "profiles", "envs", "problems"):
        shutil.copytree(REPO / name, project / name) if (REPO / name).is_dir() else shutil.copy(
            REPO / name, project / name
        )
    (project / "optimizers").mkdir()
    shutil.copy(REPO / "optimizers" / "_template.py", project / "optimizers" / "signum.py")
    config = tmp_path / "signum.yaml"
    entry = {"class": "signum.Signum", "kwargs": {"lr": 0.01}}
    config.write_text(
        yaml.safe_dump(
            {
                "seeds": [0, 1],
                "steps": 5,
                "device": "cpu",
                "problems": {"linear": {"kwargs": {"dim": 20}}},
                "optimizers": {"signum": entry},
                "losses": {"mse": {"class": "MSELoss"}},
            }
        )
    )
    snakefile = project / "Snakefile"
    workdir = tmp_path / "w"
    training_only = ("--omit-from", "summarize_evaluation_linear_mse")
    snakemake(workdir, "--cores", "1", *training_only, configfile=config, snakefile=snakefile)
    log = (workdir / "results/logs/train/linear/mse/seeds0-1.log").read_text()
    # Signum acts element by element: it passes the probe and trains batched.
    assert "engine batched: 2 run(s) of linear/mse/signum together" in log
    assert "batched: signum.Signum passed the run-independence probe" in log
    tsv = workdir / "results/runs/linear/mse/signum/base/seed1.tsv"
    meta = json.loads(tsv.with_suffix(".json").read_text())
    spec = {key: meta[key] for key in ("problem", "loss", "optimizer", "variant", "steps")}
    spec["optimizers_dir"] = str(project / "optimizers")
    result = training.train_one(spec, 1, torch.device("cpu"))
    written = runfiles.format_losses(result.losses, result.evaluations, result.lrs)
    assert tsv.read_bytes() == written.encode()
    source = project / "optimizers" / "signum.py"
    source.write_text(source.read_text().replace('alpha=-group["lr"]', 'alpha=-2 * group["lr"]'))
    planned = planned_jobs(snakemake(workdir, "-n", configfile=config, snakefile=snakefile))
    assert planned["train_linear_mse_seeds_0-1"] == 1
