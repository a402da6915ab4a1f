"""The plan a dry run prints (optbench.planning.status): each planned run's state
against the manifests its jobs wrote, the reasons in words, and the totals.

Expected states, counts and sentences are worked out by hand from the files each
test writes."""

import os
from collections import Counter

from optbench import runfiles
from optbench.planning import cost, status
from optbench.planning.settings import Cell

TSV = "runs/{problem}/{loss}/{optimizer}/{variant}/seed{seed}.tsv"
SIDECAR = "runs/{problem}/{loss}/{optimizer}/{variant}/seed{seed}.json"
SGD = Cell("linear", "mse", "sgd", "base")
ADAM = Cell("linear", "mse", "adam", "base")


def trained(root, manifest, cells_digests, seeds):
    """Runs written as a job writes them, then its manifest (relative paths, as a job's)."""
    listed = []
    for cell, digest in cells_digests:
        for seed in seeds:
            tsv = TSV.format(seed=seed, **vars(cell))
            sidecar = SIDECAR.format(seed=seed, **vars(cell))
            runfiles.write_run(root / tsv, [1.0 + seed, 0.5], root / sidecar, {"seed": seed})
            listed.append((tsv, sidecar, "settings", digest))
    runfiles.write_manifest(manifest, listed)


def checked(planned, digests):
    known = status.known_runs(status.study_manifests("."))
    return status.check(planned, digests, (TSV, SIDECAR), known)


def test_each_run_is_kept_new_missing_changed_or_edited_and_said_in_words(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    manifest = "manifests/train/linear/mse/seeds0-1.tsv"
    trained(tmp_path, manifest, [(SGD, "d-sgd")], seeds=(0, 1))
    (tmp_path / SIDECAR.format(seed=1, **vars(SGD))).unlink()
    # The grid grew by an optimizer and a seed: seeds 0-2, in a job of a new name.
    job = status.PlannedJob(
        "linear/mse seeds 0-2", "manifests/train/linear/mse/seeds0-2.tsv", (SGD, ADAM), (0, 1, 2)
    )
    (found,) = checked([job], {SGD: "d-sgd", ADAM: "d-adam"})
    # sgd seed 0 kept; seed 1 lost its sidecar; seed 2 new; adam's three new.
    assert found.counts == Counter({status.KEPT: 1, status.MISSING: 1, status.NEW: 4})
    assert found.to_train == 5 and found.runs_again
    assert found.reasons == ["optimizer adam added", "1 seed added", "1 run with a file missing"]
    assert not found.set_aside  # its own manifest does not exist yet: it runs anyway
    assert status.job_line(found) == (
        "  linear/mse seeds 0-2: 6 runs, 5 to train, 1 reused "
        "(optimizer adam added; 1 seed added; 1 run with a file missing)"
    )


def test_a_changed_cell_and_a_run_edited_by_hand_are_told_apart(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    low, high = Cell("linear", "mse", "sgd", "lr=0.1"), Cell("linear", "mse", "sgd", "lr=0.2")
    manifest = "manifests/train/linear/mse/seeds0-1.tsv"
    trained(tmp_path, manifest, [(low, "d-low"), (high, "d-high")], seeds=(0, 1))
    job = status.PlannedJob("linear/mse seeds 0-1", manifest, (low, high), (0, 1))
    # Nothing changed: nothing to run.
    (found,) = checked([job], {low: "d-low", high: "d-high"})
    assert found.counts == Counter({status.KEPT: 4}) and not found.runs_again
    # One swept value's settings changed (not the other): its variant, by name.
    (found,) = checked([job], {low: "d-low", high: "d-high2"})
    assert found.reasons == ["variant lr=0.2 of sgd changed"] and found.to_train == 2
    # Both: the optimizer.
    (found,) = checked([job], {low: "d-low2", high: "d-high2"})
    assert found.reasons == ["optimizer sgd changed"]
    # The same bytes written again (a copy, a touch) are kept: their SHA-256 holds.
    edited = tmp_path / TSV.format(seed=0, **vars(low))
    original = edited.read_bytes()
    later = os.stat(manifest).st_mtime_ns + 10**9
    edited.write_bytes(original)
    os.utime(edited, ns=(later, later))
    (found,) = checked([job], {low: "d-low", high: "d-high"})
    assert found.counts == Counter({status.KEPT: 4})
    # Same size, other bytes, written after the manifest: changed by hand, and
    # its job's manifest is to be set aside so that the job runs again.
    edited.write_bytes(original.replace(b"0.5", b"0.6"))
    os.utime(edited, ns=(later, later))
    (found,) = checked([job], {low: "d-low", high: "d-high"})
    assert found.counts == Counter({status.KEPT: 3, status.EDITED: 1})
    assert found.reasons == ["1 run changed by hand"] and found.set_aside and found.runs_again


def test_a_fresh_study_looks_at_no_run_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    job = status.PlannedJob(
        "linear/mse seeds 0-9", "manifests/m.tsv", (SGD, ADAM), tuple(range(10))
    )

    def refuse(*_):
        raise AssertionError("a run file was looked at")

    monkeypatch.setattr(status, "run_state", refuse)
    (found,) = status.check([job], {SGD: "a", ADAM: "b"}, (TSV, SIDECAR), {})
    assert found.counts == Counter({status.NEW: 20})
    assert found.reasons == ["not trained yet"]


def test_lines_stay_short_and_few_and_the_totals_add_up(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cells = tuple(
        Cell("linear", "mse", f"optimizer_with_a_long_name_{i}", "base") for i in range(40)
    )
    digests = {cell: str(i) for i, cell in enumerate(cells)}
    # One job per seed range of 3 seeds: 120 jobs of 40 cells x 3 seeds = 120 runs of 7 steps.
    planned = [
        status.PlannedJob(
            f"linear/mse seeds {s}-{s + 2}", f"manifests/train/m{s}.tsv", cells, (s, s + 1, s + 2)
        )
        for s in range(0, 360, 3)
    ]
    found = status.check(planned, digests, (TSV, SIDECAR), {})
    plan = cost.Plan(14400, 100800, 120, 120, 7, 10**9, seconds=100.0)
    lines = status.describe(found, {"linear": 7}, plan, None)
    assert len(lines) == 1 + status.SHOWN_JOBS + 1 + 2  # heading, jobs, the rest, totals
    assert all(len(line) <= status.MAX_LINE for line in lines)
    assert lines[1 + status.SHOWN_JOBS] == (
        "  ... and 70 more jobs, 8,400 runs to train (not trained yet (70))"
    )
    assert lines[-2] == (
        "totals: 14,400 runs (100,800 run-steps) in 120 training jobs; 120 jobs to run, "
        "14,400 runs (100,800 run-steps) to train, 0 reused"
    )
    # A job with every optimizer changed says so within the limit.
    trained(tmp_path, "manifests/train/m0.tsv", [(cell, "old") for cell in cells], seeds=(0, 1, 2))
    (one,) = checked(planned[:1], digests)
    assert len(one.reasons) == 40
    line = status.job_line(one)
    assert len(line) == status.MAX_LINE and line.endswith("…)")
    assert line.startswith("  linear/mse seeds 0-2: 120 runs, 120 to train, 0 reused (optimizer ")
