"""Typed run settings (planning/run_settings.py) keep every sidecar and settings digest
byte for byte what the untyped dict gave, so that finished runs stay reusable."""

import copy
import hashlib
import json
import sys

import pytest
import yaml

from conftest import REPO, SCHEMA, TRAIN_SCRIPT, training_job
from optbench import reuse
from optbench.planning import commands, jobs, settings
from optbench.planning.run_settings import RunSettings

DEFAULT = yaml.safe_load((REPO / "config.yaml").read_text())
CONTEXT = {
    "numerics": "portable",
    "engine": "auto",
    "threads": 1,
    "device": "cpu",
    "torch": "2.13.0",
    "code": "0123456789ab",
}
# SHA-256 of the default config's 80 settings digests (one a line, in the jobs'
# order) under CONTEXT, computed by the code before typed settings (commit
# 8a8d983, where a run's settings were a dict). Pure JSON and hashing: the same
# on any CPU and torch version.
DEFAULT_DIGESTS_BEFORE = "f8f7e60333024b7fcddf4598ff10b5137a1654dcba61b047cbd0856e6fe1817c"

# The default config's linear/mse/adam cell, written out by hand from config.yaml
# and the problem's declaration (its kind), as the settings JSON holds it.
ADAM = {
    "problem": {"kind": "regression", "kwargs": {"dim": 20}, "name": "linear", "problem": "linear"},
    "steps": 40,
    "loss": {"class": "MSELoss", "kwargs": {}, "name": "mse"},
    "optimizer": {
        "class": "Adam",
        "kwargs": {"betas": [0.9, 0.99], "eps": 1e-09, "lr": 0.1},
        "name": "adam",
    },
    "variant": "base",
    "device": "auto",
}


def experiment(**changes):
    config = copy.deepcopy(DEFAULT)
    config.update(changes)
    return settings.validate(config, SCHEMA)


def expanded_runs(planned) -> list[jobs.Run]:
    """Every run of ``planned``'s training jobs, through the job argument and back,
    told where the user's files are, as a training job sees them."""
    runs = []
    for job in planned.training_jobs():
        text = jobs.argument(planned, job.cells, job.seeds, "{optimizer}/{seed}.tsv", "{seed}.json")
        runs += [
            jobs.Run(run.spec.located("/p", "/o"), run.seed, run.tsv, run.sidecar)
            for run in jobs.expand(text)
        ]
    return runs


def hand_digest(spec: dict, seed: int, context: dict) -> str:
    """reuse.py's documented digest, computed here with json and hashlib."""
    text = json.dumps({"spec": spec, "seed": seed, **context}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def test_the_default_configs_digests_are_those_of_the_untyped_settings():
    runs = expanded_runs(experiment())
    assert len(runs) == 80 and all(isinstance(run.spec, RunSettings) for run in runs)
    digests = [reuse.settings_digest(run.spec, run.seed, CONTEXT) for run in runs]
    assert len(set(digests)) == 80
    combined = hashlib.sha256("\n".join(digests).encode()).hexdigest()
    assert combined == DEFAULT_DIGESTS_BEFORE


@pytest.mark.parametrize("eval_every", [0, 5])
def test_a_runs_settings_hash_and_record_as_written_by_hand(eval_every):
    """eval_every is in the settings only where set, the folders never in the digest,
    and the sidecar records the configured device as device_requested."""
    runs = expanded_runs(experiment(eval_every=eval_every))
    run = next(r for r in runs if r.spec.optimizer["name"] == "adam" and r.seed == 3)
    spec = ADAM | ({"eval_every": eval_every} if eval_every else {})
    assert reuse.settings_digest(run.spec, 3, CONTEXT) == hand_digest(spec, 3, CONTEXT)
    assert json.dumps(run.spec.as_dict(), sort_keys=True) == json.dumps(
        {**spec, "problems_dir": "/p", "optimizers_dir": "/o"}, sort_keys=True
    )
    recorded = {key: value for key, value in spec.items() if key != "device"}
    assert run.spec.sidecar_fields() == {
        **recorded,
        "problems_dir": "/p",
        "optimizers_dir": "/o",
        "device_requested": "auto",
    }


def test_a_spec_argument_reads_back_into_the_same_settings():
    assert RunSettings.from_mapping(json.loads(json.dumps(ADAM))) == ADAM
    with pytest.raises(ValueError, match="no key devic"):
        RunSettings.from_mapping({**ADAM, "devic": "cpu"})


def test_a_job_writes_the_digest_and_settings_computed_by_hand(tmp_path):
    """Through train.py: the sidecar's settings_sha256 is the hand-computed digest
    of the settings, seed and the job's context (read back from the sidecar)."""
    spec = {**ADAM, "steps": 3, "device": "cpu"}
    tsv, sidecar = tmp_path / "seed2.tsv", tmp_path / "seed2.json"
    command = [sys.executable, str(TRAIN_SCRIPT), "--spec", json.dumps(spec)]
    command += ["--run", "2", str(tsv), str(sidecar), "--problems-dir", str(tmp_path)]
    training_job(command, check=True)
    written = json.loads(sidecar.read_text())
    context = {
        "numerics": "portable",
        "engine": "auto",
        "threads": 1,
        "device": written["device"],
        "torch": written["torch_version"],
        "code": commands.training_code_digest(TRAIN_SCRIPT.parent),
    }
    assert written["settings_sha256"] == hand_digest(spec, 2, context)
    fields = {key: value for key, value in spec.items() if key != "device"}
    assert {key: written[key] for key in fields} == fields
    assert written["device_requested"] == "cpu"
    assert (written["problems_dir"], written["optimizers_dir"]) == (str(tmp_path), "")
    assert "eval_every" not in written
