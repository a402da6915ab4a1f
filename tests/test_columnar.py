"""The runs as Parquet tables: the numbers are the run files' own, each row carries its
run's settings, files appear whole, and the documented pandas/polars/DuckDB examples run."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from conftest import REPO
from optbench import runfiles
from optbench.reporting import columnar

PATTERN = "{root}/runs/{problem}/{loss}/{optimizer}/{variant}/seed{seed}"


def plant_run(root, cell, seed, losses, lrs, curve=(), kwargs=None, mode="portable"):
    """A run's files as a training job writes them, with numbers chosen here."""
    base = PATTERN.format(root=root, seed=seed, **cell)
    sidecar = {
        "problem": {"name": cell["problem"], "problem": "linear", "kwargs": {"dim": 3}},
        "loss": {"name": cell["loss"], "class": "MSELoss", "kwargs": {}},
        "optimizer": {"name": cell["optimizer"], "class": "Adam", "kwargs": kwargs or {}},
        "seed": seed,
        "steps": len(losses),
        "engine": "loop",
        "device": "cpu",
        "torch_version": "2.13.0+cpu",
        "numerics": {"mode": mode},
        "heldout_curve": list(curve),
        "settings_sha256": f"digest-{cell['optimizer']}-{seed}",
    }
    runfiles.write_run(
        f"{base}.tsv", losses, f"{base}.json", sidecar, [1] * len(losses), lrs, list(curve)
    )


ADAM = {"problem": "linear", "loss": "mse", "optimizer": "adam", "variant": "base"}
SGD = {"problem": "linear", "loss": "mse", "optimizer": "sgd", "variant": "lr0.1"}
# Losses that a text round trip could get wrong: repr's shortest digits, an inf, a nan.
ADAM_LOSSES = [0.1 + 0.2, 1e-300, 2.5, math.inf, math.nan]
SGD_LOSSES = [3.0, 1.0 / 3.0, 5e-324, 0.0, 7.0]


@pytest.fixture
def planted(tmp_path):
    plant_run(tmp_path, ADAM, 0, ADAM_LOSSES, [0.01] * 5, kwargs={"lr": 0.01, "betas": [0.9, 0.99]})
    curve = [
        {"step": 2, "heldout_loss": 0.5, "heldout_accuracy": 0.25},
        {"step": 5, "heldout_loss": 0.125, "heldout_accuracy": None},
    ]
    plant_run(tmp_path, SGD, 3, SGD_LOSSES, [None] * 5, curve=curve, kwargs={"lr": 0.1})
    return [
        columnar.RunFiles(**ADAM, seed=0, role="evaluation", **files(tmp_path, ADAM, 0)),
        columnar.RunFiles(**SGD, seed=3, role="tuning", **files(tmp_path, SGD, 3)),
    ]


def files(root, cell, seed):
    base = PATTERN.format(root=root, seed=seed, **cell)
    return {"tsv": f"{base}.tsv", "sidecar": f"{base}.json"}


def same_floats(read, planted):
    return len(read) == len(planted) and all(
        (math.isnan(a) and math.isnan(b)) or a == b for a, b in zip(read, planted, strict=True)
    )


def test_curves_hold_the_run_files_floats_in_long_form_with_settings(planted, tmp_path):
    columnar.write_tables(columnar.build_tables(planted), tmp_path / "out")
    curves = pd.read_parquet(tmp_path / "out/curves.parquet")
    assert len(curves) == 10  # 2 runs x 5 steps
    adam = curves[curves["optimizer"] == "adam"].sort_values("step")
    sgd = curves[curves["optimizer"] == "sgd"].sort_values("step")
    assert adam["step"].tolist() == sgd["step"].tolist() == [0, 1, 2, 3, 4]
    assert same_floats(adam["train_loss"].tolist(), ADAM_LOSSES)
    assert same_floats(sgd["train_loss"].tolist(), SGD_LOSSES)
    assert adam["lr"].tolist() == [0.01] * 5
    assert sgd["lr"].isna().all()  # an empty lr field is missing, not 0
    # The settings, repeated on every step's row.
    assert set(adam["role"]) == {"evaluation"} and set(sgd["role"]) == {"tuning"}
    assert set(sgd["variant"]) == {"lr0.1"} and set(sgd["seed"]) == {3}
    assert set(adam["kwargs.lr"]) == {0.01} and set(sgd["kwargs.lr"]) == {0.1}
    assert json.loads(adam["optimizer_kwargs"].iloc[0]) == {"lr": 0.01, "betas": [0.9, 0.99]}
    assert set(adam["settings_sha256"]) == {"digest-adam-0"}
    assert set(curves["numerics_mode"]) == {"portable"}


def test_heldout_points_and_the_per_run_table_join_on_the_run(planted, tmp_path):
    per_run = pd.DataFrame(
        {
            "role": ["tuning", "evaluation"],
            "problem": ["linear", "linear"],
            "loss": ["mse", "mse"],
            "optimizer": ["sgd", "adam"],
            "variant": ["lr0.1", "base"],
            "seed": [3, 0],
            "final_loss": [7.0, math.nan],
        }
    )
    columnar.write_tables(columnar.build_tables(planted, per_run), tmp_path / "out")
    heldout = pd.read_parquet(tmp_path / "out/heldout.parquet")
    assert heldout["step"].tolist() == [2, 5]
    assert heldout["heldout_loss"].tolist() == [0.5, 0.125]
    assert heldout["heldout_accuracy"].iloc[0] == 0.25 and pd.isna(
        heldout["heldout_accuracy"].iloc[1]
    )
    assert set(heldout["optimizer"]) == {"sgd"}
    runs = pd.read_parquet(tmp_path / "out/runs.parquet")
    # runs.tsv's rows in its order, each with its own run's settings.
    assert runs["optimizer"].tolist() == ["sgd", "adam"]
    assert runs["settings_sha256"].tolist() == ["digest-sgd-3", "digest-adam-0"]
    assert runs["final_loss"].iloc[0] == 7.0 and math.isnan(runs["final_loss"].iloc[1])


def test_a_text_setting_only_some_runs_have_is_missing_in_the_others(planted, tmp_path):
    # An objective has no loss class: after the join with runs.tsv the column
    # holds text and a missing value (test_grid_workflow's rosenbrock).
    bowl = {"problem": "rosenbrock", "loss": "objective", "optimizer": "sgd", "variant": "base"}
    plant_run(tmp_path, bowl, 1, [2.0, 1.0], [1.0, 1.0])
    sidecar = Path(files(tmp_path, bowl, 1)["sidecar"])
    record = json.loads(sidecar.read_text())
    record["loss"] = None
    sidecar.write_text(json.dumps(record))
    runs = [
        *planted,
        columnar.RunFiles(**bowl, seed=1, role="evaluation", **files(tmp_path, bowl, 1)),
    ]
    per_run = pd.DataFrame(
        {
            "role": ["evaluation", "tuning", "evaluation"],
            "problem": ["linear", "linear", "rosenbrock"],
            "loss": ["mse", "mse", "objective"],
            "optimizer": ["adam", "sgd", "sgd"],
            "variant": ["base", "lr0.1", "base"],
            "seed": [0, 3, 1],
            "final_loss": [math.nan, 7.0, 1.0],
        }
    )
    columnar.write_tables(columnar.build_tables(runs, per_run), tmp_path / "out")
    table = pd.read_parquet(tmp_path / "out/runs.parquet")
    assert table["loss_class"].tolist()[:2] == ["MSELoss", "MSELoss"]
    assert pd.isna(table["loss_class"].iloc[2])


def test_a_failed_write_leaves_the_previous_table_whole(planted, tmp_path, monkeypatch):
    out = tmp_path / "out"
    columnar.write_tables(columnar.build_tables(planted), out)
    before = (out / "curves.parquet").read_bytes()

    def dies_midway(table, where, **options):
        with open(where, "wb") as handle:
            handle.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(columnar.pq, "write_table", dies_midway)
    with pytest.raises(OSError, match="disk full"):
        columnar.write_tables(columnar.build_tables(planted), out)
    assert (out / "curves.parquet").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == sorted(columnar.COLUMNAR_FILES)


def test_a_malformed_run_file_is_refused_with_its_line(planted):
    with open(planted[0].tsv, "a", encoding="utf-8") as handle:
        handle.write("5\tnot-a-number\t1\t\n")
    with pytest.raises(runfiles.RunFileError, match=r"seed0\.tsv:7: loss 'not-a-number'"):
        columnar.build_tables(planted)


# ------------------------------------------------------------ the pipeline


@pytest.mark.workflow
def test_the_pipeline_writes_the_tables_from_its_runs(tiny_results):
    """The tiny study (2 optimizers x 2 losses x 2 seeds x 5 steps): every run's
    TSV, float for float, and runs.tsv's rows."""
    folder = tiny_results / "results/columnar"
    curves = pq.read_table(folder / "curves.parquet").to_pandas()
    assert len(curves) == 8 * 5
    for tsv in sorted((tiny_results / "results/runs").rglob("seed*.tsv")):
        *_, loss, optimizer, variant, name = tsv.parts
        seed = int(re.fullmatch(r"seed(\d+)\.tsv", name)[1])
        rows = curves[
            (curves["loss"] == loss) & (curves["optimizer"] == optimizer) & (curves["seed"] == seed)
        ].sort_values("step")
        text = [line.split("\t") for line in tsv.read_text().splitlines()[1:]]
        assert rows["train_loss"].tolist() == [float(fields[1]) for fields in text]
        assert rows["lr"].tolist() == [float(fields[3]) for fields in text]
    runs = pd.read_parquet(folder / "runs.parquet")
    table = pd.read_csv(tiny_results / "results/summary/runs.tsv", sep="\t")
    assert runs[["optimizer", "loss", "seed"]].values.tolist() == (
        table[["optimizer", "loss", "seed"]].values.tolist()
    )
    assert runs["final_loss"].tolist() == table["final_loss"].tolist()
    assert runs["settings_sha256"].str.fullmatch(r"[0-9a-f]{64}").all()


def documented_examples() -> list[str]:
    text = (REPO / "docs/outputs.md").read_text()
    section = text[text.index("## Columnar tables") :]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


@pytest.mark.workflow
@pytest.mark.parametrize("library", ["pandas", "polars", "duckdb"])
def test_the_documented_examples_run_on_a_study(tiny_results, library):
    examples = {
        name: code
        for code in documented_examples()
        for name in ("pandas", "polars", "duckdb")
        if f"import {name}" in code
    }
    assert len(examples) == 3, "docs/outputs.md shows one example per library"
    pytest.importorskip(library, reason=f"{library} is in requirements-test.txt")
    process = subprocess.run(
        [sys.executable, "-c", examples[library]],
        cwd=tiny_results,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 0, process.stderr
    # Each prints medians per optimizer: both optimizers are named.
    assert "adam" in process.stdout and "sgd" in process.stdout
