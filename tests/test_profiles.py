"""What each profile asks for, read from the resources a dry run prints.

No Slurm needed: a dry run with profiles/slurm plans the submission without
submitting. The GPU request of a training job is 1 for device cuda, 0 for
device cpu, and for device auto 1 with a cluster profile, and locally 1 only
where the GPU probe sees a GPU (so a CPU-only machine is never slowed).
"""

import os
import re
import subprocess

import pytest
import yaml
from snakemake.cli import get_argument_parser
from snakemake.profiles import ProfileConfigFileParser

from conftest import CONFIGS, REPO, snakemake_command
from optbench.planning.gpus import local_gpu_visible

pytestmark = pytest.mark.workflow
TINY = CONFIGS / "tiny.yaml"
TRAINING_JOBS = 8  # tiny: 2 losses x 2 optimizers x 2 seeds
PROFILES = REPO / "profiles"
RULE = re.compile(r"^\s*(?:local)?rule (\w+):$")
RESOURCES = re.compile(r"^\s*resources: (.*)$")
# Printed by Snakemake for every job and not sent to Slurm: the job's $TMPDIR,
# and the human-readable and MiB forms of mem_mb.
SNAKEMAKE_OWN = {"tmpdir", "mem", "mem_mib"}


def planned_resources(output: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, resources) of every job in a dry run's output, in printed order."""
    jobs, rule = [], None
    for line in output.splitlines():
        if match := RULE.match(line):
            rule = match.group(1)
        elif (match := RESOURCES.match(line)) and rule is not None:
            pairs = (item.split("=", 1) for item in match.group(1).split(", "))
            jobs.append((rule, dict(pairs)))
            rule = None
    return jobs


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """`snakemake -n -F` of the tiny grid with profiles/<profile> and a device;
    its planned jobs and their training jobs' resources. Each case runs once."""
    done = {}

    def planned(profile, device, **environ):
        key = (profile, device, tuple(sorted(environ.items())))
        if key not in done:
            command = snakemake_command(
                tmp_path_factory.mktemp("dry"),
                "-n",
                "-F",
                "--workflow-profile",
                str(PROFILES / profile),
                "--config",
                f"device={device}",
                configfile=TINY,
            )
            env = {**os.environ, **environ}
            process = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
            output = process.stdout + process.stderr
            assert process.returncode == 0, output[-4000:]
            jobs = planned_resources(output)
            training = [resources for rule, resources in jobs if rule == "train"]
            # every job printed its resources: a changed format cannot pass as "no GPU"
            assert len(training) == TRAINING_JOBS, output[-4000:]
            # 4 cell summaries, summarize, 2 plot jobs, columnar, explorer, the record, all
            assert len(jobs) == TRAINING_JOBS + 11, output[-4000:]
            done[key] = jobs, training
        return done[key]

    return planned


def gpus(training) -> set[str]:
    return {resources.get("gpu") for resources in training}


@pytest.mark.parametrize(
    ("profile", "device", "expected"),
    [
        ("slurm", "cpu", "0"),
        ("slurm", "cuda", "1"),
        ("slurm", "auto", "1"),
        ("slurm-grouped", "auto", "1"),
    ],
)
def test_cluster_dry_run_shows_the_gpu_request_of_each_training_job(
    dry_run, profile, device, expected
):
    _, training = dry_run(profile, device)
    assert gpus(training) == {expected}


@pytest.mark.parametrize(("device", "expected"), [("cpu", "0"), ("auto", "0")])
def test_local_gpu_request_on_a_machine_without_visible_gpu(dry_run, device, expected):
    # CUDA_VISIBLE_DEVICES="" hides every GPU, so this is a CPU-only machine
    # whatever the hardware: device auto must not take the GPU slot.
    _, training = dry_run("default", device, CUDA_VISIBLE_DEVICES="")
    assert gpus(training) == {expected}


def test_local_auto_request_follows_the_gpu_probe(dry_run):
    # the probe itself is tested in test_gpus.py; here: the request follows it
    _, training = dry_run("default", "auto")
    assert gpus(training) == {"1" if local_gpu_visible() else "0"}


@pytest.mark.parametrize("profile", ["slurm", "slurm-grouped"])
def test_cluster_profile_sends_only_the_resources_it_documents(dry_run, profile):
    jobs, _ = dry_run(profile, "auto")
    text = (PROFILES / profile / "config.yaml").read_text()
    chosen = yaml.safe_load(text)["default-resources"]
    assert chosen == {"runtime": 15, "mem_mb": 2000, "disk": "None"}
    for rule, resources in jobs:
        extra = {"gpu"} if rule == "train" else set()
        # no disk_mb=50000 (Snakemake's cluster default): dropped on purpose
        assert set(resources) == SNAKEMAKE_OWN | {"runtime", "mem_mb"} | extra, (rule, resources)
        assert resources["runtime"] == "15" and resources["mem_mb"] == "2000"
    comments = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    for name in ("runtime", "mem_mb", "disk", "disk_mb=50000", "local-cores", "gpu"):
        assert name in comments, f"{profile}: {name} is not explained"


@pytest.mark.parametrize("profile", ["default", "slurm", "slurm-grouped"])
def test_every_profile_key_is_a_snakemake_option(profile):
    # Snakemake drops a mapping it does not know (such as `resource-scopes`)
    # without a word: parse the profile as Snakemake does and compare.
    path = PROFILES / profile / "config.yaml"
    with path.open() as stream:
        parsed = ProfileConfigFileParser().parse(stream)
    written = yaml.safe_load(path.read_text())
    assert list(parsed) == list(written)
    options = {
        option for action in get_argument_parser()._actions for option in action.option_strings
    }
    assert {f"--{key}" for key in written} <= options


def test_profiles_are_commented_and_grouped_profile_only_adds_grouping():
    base = yaml.safe_load((PROFILES / "slurm" / "config.yaml").read_text())
    grouped = yaml.safe_load((PROFILES / "slurm-grouped" / "config.yaml").read_text())
    assert base["executor"] == "slurm" and base["set-resource-scopes"] == {"gpu": "local"}
    assert base["local-cores"] >= 1
    # The base profile submits a rule's jobs as arrays; a group job is never
    # one (the plugin submits it on its own), so the grouped profile leaves them out.
    assert base["slurm-array-jobs"] == "all" and base["slurm-array-limit"] >= 2
    arrays = ("slurm-array-jobs", "slurm-array-limit")
    assert not set(arrays) & set(grouped)
    assert {key: value for key, value in grouped.items() if not key.startswith("group")} == {
        key: value for key, value in base.items() if key not in arrays
    }
    assert grouped["groups"] == {"train": "training"}
    for profile in ("default", "slurm", "slurm-grouped"):
        lines = (PROFILES / profile / "config.yaml").read_text().splitlines()
        keys = [i for i, line in enumerate(lines) if re.match(r"^[a-z][\w-]*:", line)]
        for i in keys:  # every top-level entry has a comment right above it
            assert lines[i - 1].startswith("#"), f"{profile}: {lines[i]} is not commented"
        assert "--gres" not in "\n".join(line for line in lines if not line.startswith("#"))


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_local_cuda_without_visible_gpu_is_refused_before_any_job(tmp_path, device):
    """A run that could only fail (and re-make nothing) is refused at plan time,
    with the key and the fix; earlier results are left as they are."""
    old_run = tmp_path / "results/runs/linear/mse/sgd/base/seed0.tsv"
    old_run.parent.mkdir(parents=True)
    old_run.write_text("step\tloss\tevaluations\n0\t1.0\t1\n")
    command = snakemake_command(
        tmp_path, "--cores", "1", "--config", f"device={device}", configfile=TINY
    )
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    process = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert process.returncode != 0
    output = process.stdout + process.stderr
    assert f"config key device: {device} asks for a CUDA GPU, but none is visible" in output
    assert "Fix: use device auto" in output
    assert old_run.read_text() == "step\tloss\tevaluations\n0\t1.0\t1\n"
    assert not (tmp_path / "results/logs").exists()  # no job started
