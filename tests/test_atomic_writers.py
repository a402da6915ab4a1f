"""Every function that writes a result writes it atomically: the bytes go to a
temporary file beside the target, reach the disk (fsync), and only then replace
the target (rename). A writer that wrote in place, or renamed before syncing,
fails here; a new function that writes files without being listed fails the
inventory test, so no writer can skip the check."""

import ast
import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import REPO
from optbench import bundles, jobfiles, reuse, runfiles
from optbench.planning import studies
from optbench.reporting import (
    analysis,
    cells,
    columnar,
    figures,
    job_columnar,
    summary,
    tablepages,
)

SCRIPTS = REPO / "workflow" / "scripts"

# Calls that put bytes into a file, by the called attribute's name.
RAW_WRITES = {"to_csv", "savefig", "write_text", "write_bytes", "to_json", "imsave", "write_table"}
# The functions that make those calls, each on the temporary of runfiles.atomic_path;
# every other writer goes through one of them (and is listed in WRITERS below).
RAW_WRITERS = {
    "optbench/runfiles.py:write_text_atomic",
    "optbench/reporting/summary.py:write_tsv",
    "optbench/reporting/figures.py:save",
    "optbench/reporting/columnar.py:write_tables",
    "optbench/reporting/job_columnar.py:write_tables",
    "optbench/jobfiles.py:write",
    "optbench/bundles.py:export",
    "optbench/engines/checkpoints.py:save",
}
# Files opened for writing that are not results: the rules' logs (stderr),
# opened by joblog.logged_job for summarize.py and plot.py, and by record_study.py.
LOG_OPENS = {"optbench/joblog.py:logged_job", "record_study.py:<module>"}


def raw_writes(path: Path) -> set[str]:
    """'file:function' of every raw write call and open(..., 'w'/'a'/'x') in a script."""
    found = set()
    relative = path.relative_to(SCRIPTS).as_posix()

    def mode_of(call):
        if len(call.args) > 1 and isinstance(call.args[1], ast.Constant):
            return call.args[1].value
        for keyword in call.keywords:
            if keyword.arg == "mode" and isinstance(keyword.value, ast.Constant):
                return keyword.value.value
        return "r"

    def visit(node, scope):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                visit(child, child.name)
                continue
            if isinstance(child, ast.Call):
                func = child.func
                name = getattr(func, "attr", getattr(func, "id", None))
                if name in RAW_WRITES or (
                    name == "open" and any(c in str(mode_of(child)) for c in "wax+")
                ):
                    found.add(f"{relative}:{scope}")
            visit(child, scope)

    visit(ast.parse(path.read_text(encoding="utf-8")), "<module>")
    return found


def test_every_raw_write_is_in_a_checked_writer():
    found = set().union(*(raw_writes(path) for path in SCRIPTS.rglob("*.py")))
    unlisted = found - RAW_WRITERS - LOG_OPENS
    assert not unlisted, (
        f"{sorted(unlisted)} write files outside the atomic writers: write through "
        "runfiles.atomic_path / write_text_atomic, and add the writer to WRITERS here"
    )
    assert found >= RAW_WRITERS | LOG_OPENS  # the inventory is not stale


class Trace:
    """fsync and rename calls, by path, in the order they happen."""

    def __init__(self, monkeypatch):
        self.synced: set[str] = set()
        self.replaced: dict[str, str] = {}  # target -> source
        self.problems: list[str] = []
        real_fsync, real_replace, real_rename = os.fsync, os.replace, os.rename

        def fsync(descriptor):
            self.synced.add(os.path.realpath(f"/proc/self/fd/{descriptor}"))
            return real_fsync(descriptor)

        def moved(real):
            def move(source, target, *args, **kwargs):
                source_path = os.path.realpath(source)
                if source_path not in self.synced:
                    self.problems.append(f"{target} renamed from an unsynced {source}")
                result = real(source, target, *args, **kwargs)
                self.replaced[os.path.realpath(target)] = source_path
                return result

            return move

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", moved(real_replace))
        monkeypatch.setattr(os, "rename", moved(real_rename))

    def check(self, folder: Path) -> list[Path]:
        """Every file under ``folder``: each must have come in by a synced rename."""
        files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
        assert files, "the writer wrote nothing"
        for path in files:
            assert not path.name.endswith(".part"), f"temporary file left: {path}"
            assert os.path.realpath(path) in self.replaced, f"{path} was written in place"
        assert not self.problems, self.problems
        return files


def _table():
    return pd.DataFrame({"problem": ["linear"], "loss": ["mse"], "value": [np.nan]})


def _figure(path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    figures.save(fig, [path / "figure.png", path / "figure.svg"])


def _cell_summary(path):
    run = path / "runs" / "linear" / "mse" / "sgd" / "base" / "seed0.tsv"
    runfiles.write_run(run, [1.0, 0.5, 0.25], run.with_suffix(".json"), {"seed": 0})
    identity = {"problem": "linear", "loss": "mse", "optimizer": "sgd", "variant": "base"}
    pattern = str(path / "runs/{problem}/{loss}/{optimizer}/{variant}/seed{seed}.tsv")
    cell = cells.read_cell([run], pattern, identity, 3)
    out = path / "summary"
    out.mkdir()
    return cell, out


def _write_cell_summary(path):
    cell, out = _cell_summary(path)
    cells.write_cell_summary(cell, out / "cell.json")
    return out


def _write_manifest(path):
    run = path / "run.tsv"
    runfiles.write_run(run, [1.0], path / "run.json", {})
    out = path / "manifest"
    runfiles.write_manifest(out / "m.tsv", [(run, path / "run.json")])
    return out


def _write_tsv(path):
    summary.write_tsv(_table(), path / "src" / "t.tsv")
    return path / "src" / "t.tsv"


def _put_in_place(path):
    """A run copied from another study's files (reuse.put_in_place), and indexed."""
    source = path / "source"
    runfiles.write_run(source / "s.tsv", [1.0], source / "s.json", {"settings_sha256": "ab"})
    out = path / "copy"
    place = {"tsv": str(source / "s.tsv"), "sidecar": str(source / "s.json")}
    reuse.put_in_place(place, str(out / "s.tsv"), str(out / "s.json"))
    reuse.remember(out / "index", "ab" * 32, str(out / "s.tsv"), str(out / "s.json"))
    return out


def _columnar(path):
    run = path / "runs" / "seed0.tsv"
    runfiles.write_run(run, [1.0, 0.5], run.with_suffix(".json"), {"seed": 0})
    sidecar = str(run.with_suffix(".json"))
    files = columnar.RunFiles("p", "l", "o", "base", 0, "evaluation", str(run), sidecar)
    columnar.write_tables(columnar.build_tables([files]), path / "columnar")
    return path / "columnar"


def _job_file(path):
    """A per-job run file and its manifest (run_files per_job)."""
    fields = {"problem": "p", "loss": "l", "optimizer": "o", "variant": "base"}
    record = jobfiles.Record("p/l/o/base/seed0.tsv", fields, 0, [1.0, 0.5], [1, 1], [0.1, 0.1], {})
    out = path / "jobs"
    rows = jobfiles.write(out / "m.runs.npz", [record], ["ab"])
    runfiles.write_job_manifest(
        out / "m.tsv", out / "m.runs.npz", [(record.name, rows[record.name], "ab", "c")]
    )
    return out


def _job_columnar(path):
    out = _job_file(path)
    table = pd.DataFrame(
        {"problem": ["p"], "loss": ["l"], "optimizer": ["o"], "variant": ["base"], "seed": [0]}
    )
    job_columnar.write_tables([out / "m.tsv"], {"evaluation": [0]}, table, path / "columnar")
    return path / "columnar"


def _bundle(path):
    run = path / "study" / "runs" / "p" / "l" / "o" / "base" / "seed0.tsv"
    runfiles.write_run(run, [1.0, 0.5], run.with_suffix(".json"), {"settings_sha256": "ab"})
    bundles.export(path / "study", path / "bundle" / "b.tar.gz", "host", "code")
    return path / "bundle"


def _merge(path):
    bundle = _bundle(path)
    bundles.merge([bundle / "b.tar.gz"], path / "merged", index=path / "merged" / "index")
    return path / "merged"


def _checkpoint(path):
    from optbench.engines import checkpoints

    job = checkpoints.JobCheckpoint(path / "job.checkpoint", "key", checkpoints.Interval(steps=1))
    job.save()


WRITERS = {
    "checkpoints.JobCheckpoint.save": _checkpoint,
    "columnar.write_tables": _columnar,
    "job_columnar.write_tables": _job_columnar,
    "jobfiles.write": _job_file,
    "bundles.export": _bundle,
    "bundles.merge": _merge,
    "reuse.put_in_place": _put_in_place,
    "studies.write_record": lambda p: studies.write_record(p / "study.json", "s", [], "0" * 64),
    "runfiles.write_text_atomic": lambda p: runfiles.write_text_atomic(p / "a.txt", "x\n"),
    "runfiles.write_run": lambda p: runfiles.write_run(
        p / "s.tsv", [1.0, float("nan")], p / "s.json", {"seed": 1}
    ),
    "runfiles.write_manifest": _write_manifest,
    "summary.write_tsv": lambda p: summary.write_tsv(_table(), p / "t.tsv"),
    "analysis.write_tables": lambda p: analysis.write_tables({"runs": _table()}, p),
    "cells.write_cell_summary": _write_cell_summary,
    "figures.save": _figure,
    "tablepages.write_pages": lambda p: tablepages.write_pages(
        {"t": _write_tsv(p)}, {"t": p / "pages" / "t.html"}
    ),
}


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_writer_is_fsync_then_rename(name, tmp_path, monkeypatch):
    trace = Trace(monkeypatch)
    out = WRITERS[name](tmp_path) or tmp_path
    trace.check(Path(out))


def test_the_trace_catches_a_writer_that_writes_in_place(tmp_path, monkeypatch):
    trace = Trace(monkeypatch)
    (tmp_path / "t.tsv").write_text("in place\n")
    with pytest.raises(AssertionError, match="written in place"):
        trace.check(tmp_path)


def test_the_trace_catches_a_rename_before_fsync(tmp_path, monkeypatch):
    trace = Trace(monkeypatch)
    (tmp_path / ".t.part").write_text("unsynced\n")
    os.replace(tmp_path / ".t.part", tmp_path / "t.tsv")
    with pytest.raises(AssertionError, match="unsynced"):
        trace.check(tmp_path)


# ------------------------------------------------------------- the manifest


def test_manifest_lists_each_run_with_the_hash_of_its_tsv(tmp_path):
    runs = []
    for seed, losses in enumerate(([1.0, 0.5], [2.0, float("inf")])):
        tsv, sidecar = tmp_path / f"seed{seed}.tsv", tmp_path / f"seed{seed}.json"
        runfiles.write_run(tsv, losses, sidecar, {"seed": seed})
        runs.append((tsv, sidecar))
    runfiles.write_manifest(tmp_path / "manifest.tsv", runs)
    lines = (tmp_path / "manifest.tsv").read_text().splitlines()
    assert lines[0] == (
        "tsv\tsidecar\ttsv_sha256\ttsv_bytes\ttsv_mtime_ns\tsettings_sha256\tcell_sha256"
    )
    expected = [
        f"{tsv}\t{sidecar}\t{hashlib.sha256(Path(tsv).read_bytes()).hexdigest()}"
        f"\t{len(Path(tsv).read_bytes())}\t{os.stat(tsv).st_mtime_ns}\t\t"
        for tsv, sidecar in runs
    ]
    assert lines[1:] == expected
    # the TSV's hash, not the sidecar's
    assert hashlib.sha256(runs[0][1].read_bytes()).hexdigest() not in lines[1]


def _manifested_runs(root, count=2):
    """``count`` runs under ``root`` and their manifest, as a packed job leaves them."""
    runs = []
    for seed in range(count):
        tsv, sidecar = f"runs/seed{seed}.tsv", f"runs/seed{seed}.json"
        runfiles.write_run(root / tsv, [1.0 + seed, 0.5], root / sidecar, {"seed": seed})
        runs.append((tsv, sidecar))
    # The format manifests had before sizes, times and settings digests: still read.
    lines = [runfiles.OLD_MANIFEST_HEADER] + [
        f"{tsv}\t{sidecar}\t{hashlib.sha256((root / tsv).read_bytes()).hexdigest()}"
        for tsv, sidecar in runs
    ]
    (root / "manifest.tsv").write_text("\n".join(lines) + "\n")
    return runs


def test_manifests_prove_intact_runs_complete_and_nothing_else(tmp_path):
    (tmp_path / "runs").mkdir()
    _manifested_runs(tmp_path)
    files = ["runs/seed0.tsv", "runs/seed0.json", "runs/seed1.tsv", "runs/seed1.json"]
    everything = [*files, "manifest.tsv", "runs/stray.tsv"]
    proven, unproven = runfiles.proven_by_manifests(everything, ["manifest.tsv"], root=tmp_path)
    assert proven == [*files, "manifest.tsv"] and unproven == ["runs/stray.tsv"]
    # A TSV changed since (not what the job wrote), and a run without its sidecar:
    # those runs and their manifest are not proven; the intact run still is.
    (tmp_path / "runs/seed1.tsv").write_text("step\tloss\tevaluations\n0\t9\t1\n")
    proven, unproven = runfiles.proven_by_manifests(everything, ["manifest.tsv"], root=tmp_path)
    assert proven == files[:2]
    _manifested_runs(tmp_path)
    (tmp_path / "runs/seed0.json").unlink()
    proven, _ = runfiles.proven_by_manifests(files, ["manifest.tsv"], root=tmp_path)
    assert proven == files[2:]
    # No manifest, or one that is not a manifest, proves nothing.
    assert runfiles.proven_by_manifests(files, [], root=tmp_path) == ([], files)
    (tmp_path / "manifest.tsv").write_text("tsv\tsidecar\nruns/seed1.tsv\truns/seed1.json\n")
    assert runfiles.proven_by_manifests(files, ["manifest.tsv"], root=tmp_path) == ([], files)
    with pytest.raises(runfiles.RunFileError, match="manifest.tsv:1: expected the header"):
        runfiles.read_manifest(tmp_path / "manifest.tsv")
