"""run_files per_job: one run file per training job (optbench.jobfiles), read by the analysis.

The per-job layout must give the analysis the same numbers as the per-run
layout (whose TSV is the file contract), find and retrain a run whose row was
changed by hand alone, refuse bad input before any job, and summarise cells
one at a time (memory that does not grow with the number of cells).
"""

import json
import sys
import tracemalloc

import numpy as np
import pytest
import torch

from conftest import SCHEMA, TRAIN_SCRIPT, training_job
from optbench import jobfiles, runfiles
from optbench.planning import jobs, settings, status
from optbench.reporting import cells, job_cells
from test_training import ARTICLE_LOSSES, article_loop

PATTERNS = (
    "{problem}/{loss}/{optimizer}/{variant}/seed{seed}.tsv",
    "{problem}/{loss}/{optimizer}/{variant}/seed{seed}.json",
)
OPTIMIZERS = {
    "sgd": {"class": "SGD", "kwargs": {"lr": 0.1}},
    "adam": {"class": "Adam", "kwargs": {"lr": 0.1, "betas": [0.9, 0.99], "eps": 1.0e-9}},
}
STEPS = 12
# Measured per job (engines/timing.py), so they differ between any two jobs.
TIMING_COLUMNS = {"seconds_per_step", "time_to_threshold", "time_to_heldout_target"}


def small_grid(**extra):
    config = {
        "seeds": [0, 1, 2, 3],
        "steps": STEPS,
        "device": "cpu",
        "optimizers": OPTIMIZERS,
        "losses": {"mse": {"class": "MSELoss", "kwargs": {}}},
        **extra,
    }
    return settings.validate(config, SCHEMA)


def train(folder, grid, run_files):
    """One training job of every cell of ``grid`` under ``folder``; its manifest."""
    (job,) = jobs.plan(grid.cells(), grid.seed_ranges(), "problem")
    patterns = [str(folder / p) for p in PATTERNS]
    argument = jobs.argument(grid, job.cells, job.seeds, *patterns)
    manifest = folder / "manifest.tsv"
    command = [sys.executable, str(TRAIN_SCRIPT), "--job", argument, "--manifest", str(manifest)]
    command += ["--run-files", run_files]
    process = training_job(command)
    assert process.returncode == 0, process.stderr
    return manifest, process.stderr


@pytest.fixture(scope="module")
def both_layouts(tmp_path_factory):
    grid = small_grid()
    folders = {}
    for layout in ("per_run", "per_job"):
        folders[layout] = tmp_path_factory.mktemp(layout)
        train(folders[layout], grid, layout)
    return grid, folders


def test_the_job_file_holds_the_article_curves_and_the_same_summaries_as_per_run(both_layouts):
    grid, folders = both_layouts
    job_file = jobfiles.path_for(folders["per_job"] / "manifest.tsv")
    assert sorted(p.name for p in folders["per_job"].iterdir()) == [
        "manifest.runs.npz",
        "manifest.tsv",
    ], "a per-job job writes its run file and manifest, no per-run files"
    runs = jobfiles.read(job_file)
    assert len(runs) == 8
    factories = {
        "sgd": lambda p: torch.optim.SGD(p, lr=0.1),
        "adam": lambda p: torch.optim.Adam(p, lr=0.1, betas=(0.9, 0.99), eps=1e-9),
    }
    locations = job_cells.run_locations([folders["per_job"] / "manifest.tsv"])
    for cell in grid.cells():
        fields = vars(cell)
        names = [str(folders["per_job"] / PATTERNS[0]).format(seed=s, **fields) for s in range(4)]
        from_job = job_cells.read_cell(names, locations, fields, STEPS)
        tsvs = [str(folders["per_run"] / PATTERNS[0]).format(seed=s, **fields) for s in range(4)]
        pattern = str(folders["per_run"] / PATTERNS[0])
        from_tsvs = cells.read_cell(tsvs, pattern, fields, STEPS)
        # The numbers: the blog post's loop, written out independently (test_training).
        for seed, losses in zip(from_job.seeds, from_job.losses, strict=True):
            expected = article_loop(seed, factories[cell.optimizer], ARTICLE_LOSSES["mse"], STEPS)
            assert losses.tolist() == [float(value) for value in expected]
        assert np.array_equal(from_job.losses, from_tsvs.losses)
        job_summary = cells.cell_summary(from_job)
        run_summary = cells.cell_summary(from_tsvs)
        assert job_summary["steps"] == run_summary["steps"]
        assert job_summary["lines"] == run_summary["lines"]
        for column, values in run_summary["runs"].items():
            if column not in TIMING_COLUMNS:
                assert job_summary["runs"][column] == values, column
        # Each run's sidecar as the per-run layout writes it, timing and paths aside.
        for seed, tsv in zip(range(4), tsvs, strict=True):
            sidecar = json.loads(runfiles.Path(cells.sidecar_path(tsv)).read_text())
            row = runs.name_list.index(names[seed])
            rebuilt = runs.sidecar(row)
            varying = {"step_timing", "train_seconds", "job_seconds_before_this_run"}
            varying |= {"engine_details"}  # batch seconds, verification seconds
            assert {k: v for k, v in rebuilt.items() if k not in varying} == {
                k: v for k, v in sidecar.items() if k not in varying
            }


def rewrite_row(job_file, row, loss):
    """The run file with one loss of one row changed, as an edit by hand would."""
    with np.load(job_file) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays["losses"] = arrays["losses"].copy()
    arrays["losses"][row, 3] = loss
    with open(job_file, "wb") as handle:
        np.savez(handle, **arrays)


def test_a_row_changed_by_hand_is_found_and_retrained_alone(tmp_path):
    grid = small_grid()
    manifest, _ = train(tmp_path, grid, "per_job")
    job_file = jobfiles.path_for(manifest)
    before = jobfiles.read(job_file)
    entries = runfiles.read_manifest_entries(manifest)
    assert all(entry.per_job and entry.sidecar == job_file for entry in entries)
    known = status.known_runs([str(manifest)])
    rows = status.JobRows()
    assert {status.run_state(*known[e.tsv], e.cell_sha256, "", rows) for e in entries} == {
        status.KEPT
    }
    rewrite_row(job_file, 5, 123.0)
    rows = status.JobRows()
    states = {e.tsv: status.run_state(*known[e.tsv], e.cell_sha256, "", rows) for e in entries}
    edited = [name for name, state in states.items() if state == status.EDITED]
    assert edited == [before.name_list[5]], states
    _, log = train(tmp_path, grid, "per_job")
    assert "reused: 7 run(s)" in log and "trained: 1 run(s)" in log, log
    after = jobfiles.read(job_file)
    assert after.name_list == before.name_list
    assert np.array_equal(after.losses, before.losses), "the retrained run has its own numbers"
    # The file deleted: every run of the job is missing, so all train again.
    runfiles.Path(job_file).unlink()
    rows = status.JobRows()
    assert {status.run_state(*known[e.tsv], e.cell_sha256, "", rows) for e in entries} == {
        status.MISSING
    }


def test_bad_run_files_settings_are_refused_before_any_job():
    with pytest.raises(settings.ConfigError, match="run_files"):
        small_grid(run_files="per_cell")
    with pytest.raises(settings.ConfigError) as error:
        small_grid(run_files="per_job", job_scope="cell", seeds_per_job=1)
    assert "run_files: per_run, or pack runs" in str(error.value)
    assert small_grid(run_files="per_job").run_files == "per_job"


def synthetic_jobs(folder, n_cells, seeds=300, steps=40):
    """Job files with lognormal curves, two per cell (each half its seeds, as
    job_scope cell packs them); their manifests."""
    rng = np.random.default_rng(0)
    manifests = []
    for cell in range(n_cells):
        fields = {"problem": "p", "loss": "mse", "optimizer": f"o{cell}", "variant": "base"}
        for half, job_seeds in enumerate((range(seeds // 2), range(seeds // 2, seeds))):
            records = []
            for seed in job_seeds:
                name = f"p/mse/o{cell}/base/seed{seed}.tsv"
                losses = np.sort(rng.lognormal(size=steps))[::-1].tolist()
                metadata = {"loss": {"class": "MSELoss", "kwargs": {}}, "seed": seed}
                curve = (losses, [1] * steps, [0.1] * steps)
                records.append(jobfiles.Record(name, fields, seed, *curve, metadata))
            manifest = folder / f"o{cell}-{half}.tsv"
            job_file = jobfiles.path_for(manifest)
            rows = jobfiles.write(job_file, records, ["s"] * len(records))
            runfiles.write_job_manifest(
                manifest, job_file, [(r.name, rows[r.name], "s", "c") for r in records]
            )
            manifests.append(str(manifest))
    return manifests


def summarise_peak(manifests, n_cells, seeds=300, steps=40) -> int:
    """Peak bytes traced while summarising every cell, one at a time."""
    locations = job_cells.run_locations(manifests)
    cache = job_cells.RunFileCache()
    tracemalloc.start()
    for cell in range(n_cells):
        fields = {"problem": "p", "loss": "mse", "optimizer": f"o{cell}", "variant": "base"}
        names = [f"p/mse/o{cell}/base/seed{seed}.tsv" for seed in range(seeds)]
        summary = cells.cell_summary(job_cells.read_cell(names, locations, fields, steps, cache))
        assert summary["steps"]["n"] == [seeds] * steps
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_summarising_job_files_holds_one_cell_and_one_file_at_a_time(tmp_path):
    """Memory follows the largest cell and job file, not the number of cells: eight
    cells (four times the runs and job files of two) peak at about the same bytes."""
    (tmp_path / "few").mkdir()
    (tmp_path / "many").mkdir()
    few = summarise_peak(synthetic_jobs(tmp_path / "few", 2), 2)
    many = summarise_peak(synthetic_jobs(tmp_path / "many", 8), 8)
    assert many < 1.3 * few, (few, many)


def test_a_job_file_keeps_each_runs_sidecar_and_refuses_a_broken_file(tmp_path):
    """Entries shared by a cell's runs are stored once, the rest per run; a run's
    sidecar reads back as written, 1 and 1.0 and True kept apart. A file cut
    short is refused with its name and the fix."""
    fields = {"problem": "p", "loss": "mse", "optimizer": "o", "variant": "base"}
    sidecars = [
        {"loss": {"class": "MSELoss"}, "seed": 0, "flag": 1, "heldout": None},
        {"loss": {"class": "MSELoss"}, "seed": 1, "flag": True, "heldout": None},
        {"loss": {"class": "MSELoss"}, "seed": 2, "flag": 1.0, "heldout": None},
    ]
    records = [
        jobfiles.Record(f"s{i}.tsv", fields, i, [1.0, 0.5], [1, 2], [None, 0.1], sidecar)
        for i, sidecar in enumerate(sidecars)
    ]
    path = tmp_path / "job.runs.npz"
    digests = jobfiles.write(path, records, ["a", "b", "c"])
    runs = jobfiles.read(path)
    assert runs.cell_list[0]["common"] == {"heldout": None, "loss": {"class": "MSELoss"}}
    for row, sidecar in enumerate(sidecars):
        rebuilt = runs.sidecar(row)
        assert rebuilt == sidecar and type(rebuilt["flag"]) is type(sidecar["flag"])
    losses, evaluations, lrs = runs.curve(1)
    assert losses.tolist() == [1.0, 0.5] and evaluations.tolist() == [1, 2]
    assert np.isnan(lrs[0]) and lrs[1] == 0.1
    assert jobfiles.row_digests(runs) == [digests[f"s{i}.tsv"] for i in range(3)]
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(jobfiles.JobFileError, match="job.runs.npz.*Delete it and its manifest"):
        jobfiles.read(path)
