"""Every file the pipeline writes gets the mode the user's umask gives (0644 under 022,
0600 under 077, 0664 under 002), and writing it stays atomic."""

import os
import stat
from contextlib import contextmanager

import numpy as np
import pytest

from conftest import TINY_UMASK
from optbench import runfiles
from optbench.reporting import analysis, figures, outputs

UMASKS = (0o022, 0o077, 0o002)


@contextmanager
def umask(value):
    previous = os.umask(value)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def expected(mask: int) -> int:
    return 0o666 & ~mask


def summarized(root):
    """Two cells of three-step runs summarised in-process into ``root``/summary."""
    pattern = str(root / "runs" / "{loss}" / "{optimizer}" / "seed{seed}.tsv")
    paths = []
    for optimizer, scale in (("sgd", 1.0), ("adam", 0.5)):
        for seed in range(3):
            path = pattern.format(loss="mse", optimizer=optimizer, seed=seed)
            losses = scale * (np.arange(3.0, 0, -1) + [0.0, 0.1 * seed, 0.2 * seed**2])
            runfiles.write_text_atomic(path, runfiles.format_losses(losses))
            paths.append(path)
    analysis.summarize_runs(paths, pattern, 3, root / "summary")
    return root / "summary"


def test_run_files_get_the_mode_of_the_umask(tmp_path):
    for mask in UMASKS:
        tsv, sidecar = tmp_path / f"{mask:o}" / "seed0.tsv", tmp_path / f"{mask:o}" / "seed0.json"
        with umask(mask):
            runfiles.write_run(tsv, [1.0, 0.5], sidecar, {"seed": 0})
        assert (oct(mode(tsv)), oct(mode(sidecar))) == (oct(expected(mask)),) * 2, oct(mask)


def test_summaries_get_the_mode_of_the_umask(tmp_path):
    for mask in UMASKS:
        with umask(mask):
            written = summarized(tmp_path / f"{mask:o}")
        tables = sorted(written.glob("*.tsv")) + sorted((written / "cells").rglob("*.json"))
        assert len(tables) == len(outputs.TABLES) + 2  # every table of the analysis, two cells
        assert {p.name: oct(mode(p)) for p in tables} == {
            p.name: oct(expected(mask)) for p in tables
        }, oct(mask)


def test_figures_get_the_mode_of_the_umask(tmp_path):
    table = figures.read_table(summarized(tmp_path) / "steps.tsv")
    for mask in UMASKS:
        paths = [tmp_path / f"{mask:o}" / name for name in ("mse.png", "mse.svg", "all.png")]
        with umask(mask):
            figures.plot_loss(table, "mse", "geomean_ci95", paths[:2])
            figures.plot_overview(table, ["mse"], "median_ci95", paths[2:])
        assert [oct(mode(p)) for p in paths] == [oct(expected(mask))] * 3, oct(mask)


def test_replacing_a_file_gives_the_umask_mode_and_stays_atomic(tmp_path):
    path = tmp_path / "steps.tsv"
    path.write_text("old\n")
    path.chmod(0o600)
    with umask(0o022):
        with pytest.raises(RuntimeError), runfiles.atomic_path(path) as temporary:
            temporary.write_text("half a fi")
            assert temporary.parent == path.parent and temporary.name.startswith(".steps.tsv.")
            raise RuntimeError("killed")
        assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == [path.name]
        runfiles.write_text_atomic(path, "new\n")
    assert path.read_text() == "new\n" and oct(mode(path)) == oct(0o644)


def test_data_reaches_the_disk_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(descriptor):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{descriptor}")))
        real_fsync(descriptor)

    def replace(source, target):
        events.append(("replace", str(source)))
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    runfiles.write_text_atomic(tmp_path / "a.tsv", "x\n")
    assert [kind for kind, _ in events] == ["fsync", "replace"]
    assert events[0][1] == events[1][1]  # the temporary file itself, then its rename


@pytest.mark.workflow
def test_workflow_outputs_get_the_mode_of_the_umask(tiny_results):
    results = tiny_results / "results"
    files = [p for p in results.rglob("*") if p.is_file()]
    kinds = {p.relative_to(results).parts[0] + p.suffix for p in files}
    # run TSVs and sidecars, cell summaries and tables, figures, logs, benchmarks
    assert {"runs.tsv", "runs.json", "summary.json", "summary.tsv", "figures.png"} <= kinds
    # (tiny.yaml draws PNGs only; the SVG's mode: test_figures_get_the_mode_of_the_umask)
    assert {"logs.log", "benchmarks.tsv"} <= kinds
    wrong = {
        str(p.relative_to(results)): oct(mode(p)) for p in files if mode(p) != expected(TINY_UMASK)
    }
    assert wrong == {}, f"expected {oct(expected(TINY_UMASK))} under umask {TINY_UMASK:03o}"
