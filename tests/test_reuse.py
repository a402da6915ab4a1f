"""A packed training job that gains runs trains only those: unchanged runs are reused."""

import hashlib
import json
import re

import pytest
import torch
import yaml

from conftest import snakemake_warm
from optbench import reuse, runfiles
from test_training import ARTICLE_LOSSES, article_loop, article_tsv

CONTEXT = {"numerics": "portable", "engine": "auto", "threads": 1, "device": "cpu"}
SPEC = {"problem": {"name": "linear"}, "optimizer": {"name": "sgd", "kwargs": {"lr": 0.1}}}


def written_run(tmp_path, digest, name="seed0"):
    tsv, sidecar = tmp_path / f"{name}.tsv", tmp_path / f"{name}.json"
    runfiles.write_run(tsv, [1.0, 0.5], sidecar, {"settings_sha256": digest}, lrs=[0.1, 0.1])
    manifest = tmp_path / "manifest.tsv"
    runfiles.write_manifest(manifest, [(tsv, sidecar)])
    return str(tsv), str(sidecar), manifest


def test_a_run_is_reused_only_with_its_files_and_settings_unchanged(tmp_path):
    digest = reuse.settings_digest(SPEC, 0, CONTEXT)
    tsv, sidecar, manifest = written_run(tmp_path, digest)
    previous = reuse.previous_runs(manifest)
    assert reuse.unchanged(tsv, sidecar, digest, previous)
    # Another seed, kwarg, numerics mode or code: other settings, not reused.
    for other in (
        reuse.settings_digest(SPEC, 1, CONTEXT),
        reuse.settings_digest(
            {**SPEC, "optimizer": {"name": "sgd", "kwargs": {"lr": 1}}}, 0, CONTEXT
        ),
        reuse.settings_digest(SPEC, 0, {**CONTEXT, "numerics": "native"}),
        reuse.settings_digest(SPEC, 0, {**CONTEXT, "code": "changed"}),
    ):
        assert other != digest and not reuse.unchanged(tsv, sidecar, other, previous)
    # Where the job runs from is not a setting.
    moved = {**SPEC, "problems_dir": "/elsewhere/problems", "optimizers_dir": "/x"}
    assert reuse.settings_digest(moved, 0, CONTEXT) == digest
    # Not listed, listed with another sidecar, or edited since: trained again.
    assert not reuse.unchanged(tsv, sidecar, digest, {})
    assert not reuse.unchanged(tsv, sidecar + ".old", digest, previous)
    with open(tsv, "a") as handle:
        handle.write("\n")
    assert not reuse.unchanged(tsv, sidecar, digest, previous)


def test_no_or_a_broken_manifest_reuses_nothing(tmp_path):
    assert reuse.previous_runs(None) == {}
    assert reuse.previous_runs(tmp_path / "missing.tsv") == {}
    broken = tmp_path / "broken.tsv"
    broken.write_text("not a manifest\n")
    assert reuse.previous_runs(broken) == {}


def test_a_run_whose_sidecar_is_gone_is_trained_again(tmp_path):
    digest = reuse.settings_digest(SPEC, 0, CONTEXT)
    tsv, sidecar, manifest = written_run(tmp_path, digest)
    (tmp_path / "seed0.json").unlink()
    assert not reuse.unchanged(tsv, sidecar, digest, reuse.previous_runs(manifest))


CONFIG = {
    "seeds": [0, 1],
    "tuning_seeds": [100],
    "steps": 6,
    "device": "cpu",
    "seeds_per_job": "all",  # one job per (problem, loss) holding every seed: the packing
    "problems": {"linear": {"kwargs": {"dim": 20}, "losses": ["mse"]}},
    "losses": {"mse": {"class": "MSELoss"}},
    "optimizers": {"sgd": {"class": "SGD", "kwargs": {"lr": 0.01}, "sweep": {"lr": [0.01]}}},
}
MANIFEST = "results/manifests/train/linear/mse/seeds0-100.tsv"
# The default target (every run is an input of `all`), trained and not summarised.
TRAIN_ONLY = ("--until", "train_linear_mse_seeds_0-100")
LOG = "results/logs/train/linear/mse/seeds0-100.log"
DONE = re.compile(r"done: (\d+) run\(s\) \((\d+) trained, (\d+) reused\)")


def runs_of(workdir) -> dict:
    return {
        path.relative_to(workdir): path.read_bytes()
        for path in sorted((workdir / "results/runs").rglob("seed*.tsv"))
    }


@pytest.mark.workflow
def test_growing_a_packed_job_trains_only_the_new_runs(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    snakemake_warm(tmp_path, "--cores", "1", *TRAIN_ONLY, configfile=config)
    assert DONE.search((tmp_path / LOG).read_text()).groups() == ("6", "6", "0")
    before = runs_of(tmp_path)
    sidecar = tmp_path / "results/runs/linear/mse/sgd/base/seed0.json"
    assert len(json.loads(sidecar.read_text())["settings_sha256"]) == 64

    # One more learning rate and one more seed: the job runs again as a whole...
    grown = {**CONFIG, "seeds": [0, 1, 2]}
    grown["optimizers"] = {"sgd": {**CONFIG["optimizers"]["sgd"], "sweep": {"lr": [0.01, 0.1]}}}
    config.write_text(yaml.safe_dump(grown))
    snakemake_warm(tmp_path, "--cores", "1", *TRAIN_ONLY, configfile=config)
    # ... and trains only the 6 new runs (lr0.1 x 3 seeds, seed 2 x 2 old variants).
    log = (tmp_path / LOG).read_text()
    assert DONE.search(log).groups() == ("12", "6", "6"), log
    assert "reused: 6 run(s)" in log
    after = runs_of(tmp_path)
    assert {path: after[path] for path in before} == before  # same bytes
    assert len(after) == 12
    # Every run, reused or new, is the article's loop at its learning rate.
    for path, data in after.items():
        variant, seed = path.parts[-2], int(path.stem.removeprefix("seed"))
        lr = 0.1 if variant == "lr0.1" else 0.01
        losses = article_loop(
            seed, lambda p, lr=lr: torch.optim.SGD(p, lr=lr), ARTICLE_LOSSES["mse"], 6
        )
        assert data == article_tsv(losses, lr), path
    manifest = runfiles.read_manifest(tmp_path / MANIFEST)
    assert len(manifest) == 12
    for tsv, _, digest in manifest:
        assert hashlib.sha256((tmp_path / tsv).read_bytes()).hexdigest() == digest

    # A setting every run shares changes (the numerics mode): nothing is reused.
    snakemake_warm(
        tmp_path, "--cores", "1", *TRAIN_ONLY, "--config", "numerics=native", configfile=config
    )
    assert DONE.search((tmp_path / LOG).read_text()).groups() == ("12", "12", "0")


# Issue 31 point 7: the default packing (seeds_per_job all, job_scope loss)
# names a job by its seed range, so growing the seeds makes a new job whose
# manifest lists nothing; the run index (settings digest -> files) reuses runs.
GROWING = {
    "steps": 6,
    "device": "cpu",
    "problems": {"linear": {"kwargs": {"dim": 20}, "losses": ["mse"]}},
    "losses": {"mse": {"class": "MSELoss"}},
    "optimizers": {"sgd": {"class": "SGD", "kwargs": {"lr": 0.01}}},
}


def tsv_states(workdir, root="results") -> dict:
    """Run TSV -> (its bytes, its sidecar's bytes, its inode). A run trained again
    has another sidecar (its timings); Snakemake touches every output of a job
    it runs, so modification times cannot tell."""
    found = {}
    for path in sorted((workdir / root / "runs").rglob("seed*.tsv")):
        found[path.relative_to(workdir / root)] = (
            path.read_bytes(),
            path.with_suffix(".json").read_bytes(),
            path.stat().st_ino,
        )
    return found


def article_sgd_tsv(seed: int) -> bytes:
    losses = article_loop(seed, lambda p: torch.optim.SGD(p, lr=0.01), ARTICLE_LOSSES["mse"], 6)
    return article_tsv(losses, 0.01)


def train_seeds(workdir, config, seeds, scope, **options):
    grid = {**GROWING, "seeds": list(seeds), "job_scope": scope}
    config.write_text(yaml.safe_dump(grid))
    label = f"{seeds[0]}-{seeds[-1]}"
    rule = f"train_linear_mse_seeds_{label}" if scope == "loss" else f"train_seeds_{label}"
    return snakemake_warm(workdir, "--cores", "1", "--until", rule, configfile=config, **options)


@pytest.mark.workflow
@pytest.mark.parametrize("scope", ["loss", "cell"])
def test_growing_the_seeds_trains_only_the_new_runs(tmp_path, scope):
    """Seeds 0-5 -> 0-11 -> 0-12 trains 6, then 1 (issue 31: 36 of 36, then 39 of 39)."""
    config = tmp_path / "config.yaml"
    train_seeds(tmp_path, config, range(6), scope)
    first = tsv_states(tmp_path)
    assert len(first) == 6
    train_seeds(tmp_path, config, range(12), scope)
    second = tsv_states(tmp_path)
    assert {path: second[path] for path in first} == first  # not rewritten
    train_seeds(tmp_path, config, range(13), scope)
    third = tsv_states(tmp_path)
    assert {path: third[path] for path in second} == second
    assert len(third) == 13
    for path, (data, _, _) in third.items():
        assert data == article_sgd_tsv(int(path.stem.removeprefix("seed"))), path
    folder = "linear/mse" if scope == "loss" else "linear/mse/sgd/base"
    log = (tmp_path / f"results/logs/train/{folder}/seeds0-12.log").read_text()
    assert DONE.search(log).groups() == ("13", "1", "12"), log


@pytest.mark.workflow
def test_a_run_edited_by_hand_is_retrained_and_another_study_copies_identical_runs(tmp_path):
    config = tmp_path / "config.yaml"
    train_seeds(tmp_path, config, range(4), "loss")
    before = tsv_states(tmp_path)

    # A run edited by hand (same size, one digit changed): the next
    # invocation's dry run schedules its job ("Nothing to be done" before),
    # which retrains that run and reuses the others in place.
    edited = tmp_path / "results/runs/linear/mse/sgd/base/seed2.tsv"
    original = edited.read_bytes()
    text = original.decode()
    digit = text.index("\n1\t") - 1  # the last digit of step 0's row
    changed_text = text[:digit] + str((int(text[digit]) + 1) % 10) + text[digit + 1 :]
    edited.write_bytes(changed_text.encode())
    dry = snakemake_warm(tmp_path, "-n", "--until", "train_linear_mse_seeds_0-3", configfile=config)
    assert "rule train_linear_mse_seeds_0-3:" in dry.stdout, dry.stdout + dry.stderr
    # The plan names the job and why (the run file itself is no output of it).
    assert re.search(
        r"\n  linear/mse seeds 0-3: (\d+) runs, 1 to train, \d+ reused \(1 run changed by hand\)\n",
        dry.stderr,
    ), dry.stderr
    train_seeds(tmp_path, config, range(4), "loss")
    assert edited.read_bytes() == original == article_sgd_tsv(2)
    after = tsv_states(tmp_path)
    assert [path for path in before if after[path] != before[path]] == [
        edited.relative_to(tmp_path / "results")
    ]
    log = (tmp_path / "results/logs/train/linear/mse/seeds0-3.log").read_text()
    assert DONE.search(log).groups() == ("4", "1", "3"), log
    again = snakemake_warm(
        tmp_path, "-n", "--until", "train_linear_mse_seeds_0-3", configfile=config
    )
    assert "rule train_" not in again.stdout and "changed by hand" not in again.stderr
    before = after

    # Study "copy" (its file's stem), the same settings and one more seed:
    # four runs are copied, one trained; the copies follow the umask.
    other = tmp_path / "copy.yaml"
    train_seeds(tmp_path, other, range(5), "loss", study=None, umask=0o027)
    copied = tsv_states(tmp_path, "results/copy")
    assert len(copied) == 5
    for path, (data, sidecar, inode) in before.items():
        assert copied[path][:2] == (data, sidecar) and copied[path][2] != inode
        assert (tmp_path / "results/copy" / path).stat().st_mode & 0o777 == 0o640
    log = (tmp_path / "results/copy/logs/train/linear/mse/seeds0-4.log").read_text()
    assert DONE.search(log).groups() == ("5", "1", "4"), log
    assert tsv_states(tmp_path) == before  # the default study's runs untouched
