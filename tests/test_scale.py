"""Seed packing and large grids: behaviour, not timings (tools/benchmark.py measures those)."""

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import CONFIGS, planned_jobs, snakemake, tree_bytes
from optbench import runfiles, summary

pytestmark = pytest.mark.workflow
TINY = CONFIGS / "tiny.yaml"


def run_tsvs(workdir):
    return {k: v for k, v in tree_bytes(workdir / "results" / "runs").items() if k.endswith(".tsv")}


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("unpacked")
    snakemake(workdir, "--cores", "2", "--config", "seeds=[0,1,2]", configfile=TINY)
    return workdir


@pytest.mark.parametrize("per_job", ["2", "all"])
def test_packed_runs_are_byte_identical_to_unpacked(unpacked, tmp_path, per_job):
    snakemake(
        tmp_path,
        "--cores",
        "2",
        "--config",
        "seeds=[0,1,2]",
        f"seeds_per_job={per_job}",
        configfile=TINY,
    )
    packed = run_tsvs(tmp_path)
    assert len(packed) == 2 * 2 * 3
    assert packed == run_tsvs(unpacked)
    logs = sorted(p.name for p in (tmp_path / "results/logs/train/mse/sgd").iterdir())
    assert logs == (["seeds0-1.log", "seeds2-3.log"] if per_job == "2" else ["seeds0-2.log"])


def test_adding_a_seed_reruns_only_its_block(tmp_path):
    snakemake(
        tmp_path, "--cores", "2", "--config", "seeds=[0,1,2]", "seeds_per_job=2", configfile=TINY
    )
    process = snakemake(
        tmp_path, "-n", "--config", "seeds=[0,1,2,3]", "seeds_per_job=2", configfile=TINY
    )
    jobs = planned_jobs(process)
    assert jobs.get("train_seeds_2-3") == 4  # the block 2..3 gains seed 3, in each of 4 cells
    assert "train_seeds_0-1" not in jobs
    process = snakemake(
        tmp_path, "-n", "--config", "seeds=[0,1,2,4]", "seeds_per_job=2", configfile=TINY
    )
    jobs = planned_jobs(process)
    assert jobs.get("train_seeds_4-5") == 4 and "train_seeds_2-3" not in jobs


def test_rule_graph_has_one_training_rule_per_block(tmp_path):
    process = snakemake(
        tmp_path,
        "--rulegraph",
        "--config",
        "seeds=[0,1,2,3,4,5,6,7,8,9]",
        "seeds_per_job=5",
        configfile=TINY,
    )
    labels = [line for line in process.stdout.splitlines() if "label =" in line]
    training = [line for line in labels if "train" in line]
    assert len(training) == 2 and len(labels) == 6


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
    ("per_job", "train_jobs"), [("1", {"train": 10_000}), ("all", {"train_seeds_0-99": 100})]
)
def test_ten_thousand_run_grid_dry_runs(tmp_path, per_job, train_jobs):
    config = big_grid(tmp_path / "big.yaml")
    process = snakemake(tmp_path, "-n", "--config", f"seeds_per_job={per_job}", configfile=config)
    jobs = planned_jobs(process)
    assert {k: v for k, v in jobs.items() if k.startswith("train")} == train_jobs
    assert jobs["summarize"] == 1 and jobs["plot_loss"] == 2


def test_summary_of_ten_thousand_runs(tmp_path):
    rng = np.random.default_rng(7)
    values = rng.lognormal(size=(2, 50, 100, 40))
    values[1, 3, 5, 20:] = np.inf  # one diverged run
    runs = []
    for li, loss in enumerate(("mse", "l1")):
        for oi in range(50):
            for seed in range(100):
                path = tmp_path / "runs" / loss / f"o{oi}" / f"seed{seed}.tsv"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(runfiles.format_losses(values[li, oi, seed]))
                runs.append(summary.RunRef(loss, f"o{oi}", seed, str(path)))
    summary.summarize(runs, 40, tmp_path / "steps.tsv", tmp_path / "board.tsv")
    table = pd.read_csv(tmp_path / "steps.tsv", sep="\t")
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
    board = pd.read_csv(tmp_path / "board.tsv", sep="\t")
    assert len(board) == 100 and sorted(board[board["loss"] == "mse"]["rank"]) == list(range(1, 51))
