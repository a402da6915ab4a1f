"""Conda environments: their contents, their agreement with requirements.txt, and
which env each rule gets from Snakemake itself. Needs no conda and no GPU."""

import ast
import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from conftest import CONFIGS, REPO, SNAKEFILE, planned_jobs, snakemake

ENVS = REPO / "envs"
ENV_NAMES = ("train-cuda", "train-cpu", "analysis")
TRAIN_CUDA, TRAIN_CPU, ANALYSIS = (ENVS / f"{name}.yaml" for name in ENV_NAMES)
# pip name -> conda-forge name, where they differ (matplotlib-base: no GUI toolkit)
CONDA_NAME = {"torch": "pytorch", "matplotlib": "matplotlib-base"}
# Imported only by the Snakemake process itself (config checks), never in a job.
# Installed beside Snakemake, not in the job environments (pygments: its report).
HOST_ONLY = {"snakemake", "pyyaml", "pygments"}
# import name -> pip name
IMPORT_TO_PIP = {"yaml": "pyyaml", "pytorch_optimizer": "pytorch-optimizer"}
SPEC = re.compile(
    r"^(?P<name>[a-z0-9][a-z0-9._-]*)"
    r"(?:(?P<op>==|=)(?P<version>[^=\s]+))?(?:=(?P<build>\S+))?$"
)


def pip_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.split("[")[0].lower()] = version  # without extras
    return pins


def pip_deps(path) -> dict[str, str]:
    """name -> version of an env file's pip section (exact pins only)."""
    deps = {}
    for entry in env_file(path)["dependencies"]:
        if isinstance(entry, dict):
            for spec in entry["pip"]:
                name, version = spec.split("==")  # anything but an exact pin fails here
                deps[name.lower()] = version
    return deps


def env_file(path) -> dict:
    return yaml.safe_load(path.read_text())


def conda_deps(path) -> dict[str, dict]:
    """name -> {op, version, build} of every dependency of an env file."""
    deps = {}
    for entry in env_file(path)["dependencies"]:
        if isinstance(entry, dict):  # the PyPI packages conda-forge lacks (pip_deps)
            assert set(entry) == {"pip"}, f"{path.name}: unexpected {entry!r}"
            continue
        assert isinstance(entry, str), f"{path.name}: only conda packages, got {entry!r}"
        match = SPEC.match(entry.replace(" ", ""))
        assert match, f"{path.name}: unreadable spec {entry!r}"
        deps[match["name"]] = match.groupdict()
    return deps


@pytest.mark.parametrize("name", ENV_NAMES)
def test_env_uses_conda_forge_only_and_exact_versions(name):
    env = env_file(ENVS / f"{name}.yaml")
    assert set(env) == {"channels", "dependencies"}
    assert env["channels"] == ["conda-forge", "nodefaults"]
    deps = conda_deps(ENVS / f"{name}.yaml")
    assert "pytorch-cuda" not in deps and "cudatoolkit" not in deps
    for dep in deps.values():
        assert dep["version"], f"{name}: {dep['name']} has no version"
        if dep["name"] == "python":
            assert re.fullmatch(r"3\.\d+", dep["version"])  # a minor series; the pin file fixes it
        else:
            # exact: `==X`, or `=X=BUILD` (conda's name=version=build form)
            assert dep["op"] == "==" or dep["build"], f"{name}: {dep['name']} is not exact"
            assert "*" not in dep["version"] and "," not in dep["version"]


def test_cuda_env_pins_the_cuda_build_and_cuda_version():
    deps = conda_deps(TRAIN_CUDA)
    build = re.fullmatch(r"cuda(\d\d)(\d)\*", deps["pytorch"]["build"])
    assert build, deps["pytorch"]
    assert deps["cuda-version"]["op"] == "=="
    assert deps["cuda-version"]["version"] == f"{build[1]}.{build[2]}"  # cuda129 <-> 12.9
    script = (REPO / "workflow" / "scripts" / "pin_envs.sh").read_text()
    assert f"CUDA_VERSION={deps['cuda-version']['version']}" in script


def test_cpu_env_pins_the_cpu_build_and_no_cuda():
    deps = conda_deps(TRAIN_CPU)
    assert deps["pytorch"]["build"] == "cpu*"
    assert not [name for name in deps if "cuda" in name]


def test_env_versions_agree_with_requirements_txt():
    pins = pip_pins()
    conda_pins = {CONDA_NAME.get(name, name): version for name, version in pins.items()}
    envs = {name: conda_deps(ENVS / f"{name}.yaml") for name in ENV_NAMES}
    for env_name, deps in envs.items():
        for name, dep in deps.items():
            if name in conda_pins:
                assert dep["version"] == conda_pins[name], (
                    f"envs/{env_name}.yaml pins {name} {dep['version']}, requirements.txt "
                    f"{conda_pins[name]}"
                )
    # PyPI-only packages (pip section) are pinned as in requirements.txt, with pip itself
    for env_name in ENV_NAMES:
        for name, version in pip_deps(ENVS / f"{env_name}.yaml").items():
            assert pins.get(name) == version, f"envs/{env_name}.yaml pip {name}=={version}"
            assert "pip" in envs[env_name], f"envs/{env_name}.yaml has a pip section, no pip"
    # every runtime requirement of a job is in some env, torch in both training envs
    in_envs = set().union(*envs.values(), *(pip_deps(ENVS / f"{n}.yaml") for n in ENV_NAMES))
    missing = {CONDA_NAME.get(n, n) for n in pins if n not in HOST_ONLY} - in_envs
    assert not missing, f"requirements.txt packages in no env file: {missing}"
    assert "pytorch" in envs["train-cuda"] and "pytorch" in envs["train-cpu"]
    # one python for all envs
    assert len({deps["python"]["version"] for deps in envs.values()}) == 1


_PACKAGE = REPO / "workflow" / "scripts" / "optbench"
# What a training job imports: the engines and problems folders, the run-file
# contract, and the planning modules that describe a job.
TRAINING_MODULES = [
    str(path.relative_to(_PACKAGE.parent))
    for path in sorted(
        [*(_PACKAGE / "engines").glob("*.py"), *(_PACKAGE / "problems").rglob("*.py")]
    )
] + [f"optbench/{name}.py" for name in ("runfiles", "grid", "planning/jobs", "planning/cost")]
# What a summary or plot job imports: the reporting folder and the contracts.
REPORTING_MODULES = [
    str(path.relative_to(_PACKAGE.parent)) for path in sorted((_PACKAGE / "reporting").glob("*.py"))
] + ["optbench/runfiles.py", "optbench/grid.py"]


def third_party_imports(*paths) -> set[str]:
    names = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"optbench", "__future__"}


@pytest.mark.parametrize(
    ("env", "scripts"),
    [
        (TRAIN_CUDA, ["train.py", *TRAINING_MODULES]),
        (TRAIN_CPU, ["train.py", *TRAINING_MODULES]),
        (
            ANALYSIS,
            [
                "summarize.py",
                "summarize_cell.py",
                "plot.py",
                "write_columnar.py",
                "explore.py",
                *REPORTING_MODULES,
            ],
        ),
    ],
)
def test_env_provides_what_its_jobs_import(env, scripts):
    scripts_dir = REPO / "workflow" / "scripts"
    imports = third_party_imports(*(scripts_dir / s for s in scripts))
    needed = {CONDA_NAME.get(IMPORT_TO_PIP.get(n, n), IMPORT_TO_PIP.get(n, n)) for n in imports}
    assert needed, scripts
    assert needed <= set(conda_deps(env)), needed - set(conda_deps(env))


@pytest.mark.parametrize("name", ENV_NAMES)
def test_pin_file_if_present_is_an_explicit_conda_forge_list(name):
    pin = ENVS / f"{name}.linux-64.pin.txt"
    if not pin.exists():
        pytest.skip(f"{pin.name} not generated yet (workflow/scripts/pin_envs.sh)")
    lines = [line for line in pin.read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "@EXPLICIT"
    urls = lines[1:]
    assert urls and all(u.startswith("https://conda.anaconda.org/conda-forge/") for u in urls)
    deps = conda_deps(ENVS / f"{name}.yaml")
    if "pytorch" in deps:
        build = deps["pytorch"]["build"].rstrip("*")
        torch = [u for u in urls if re.search(r"/pytorch-\d", u)]
        assert len(torch) == 1 and f"-{deps['pytorch']['version']}-{build}" in torch[0]


def test_only_known_files_in_envs():
    allowed = {f"{n}.yaml" for n in ENV_NAMES} | {f"{n}.linux-64.pin.txt" for n in ENV_NAMES}
    assert {p.name for p in ENVS.iterdir()} <= allowed


def test_pin_script_calls_conda_lock_with_and_without_cuda(tmp_path):
    """The script as a maintainer runs it, against a stand-in conda-lock that
    records its arguments (the real one needs conda-forge)."""
    stub = tmp_path / "bin" / "conda-lock"
    stub.parent.mkdir()
    stub.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "calls.txt"}\n')
    stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{stub.parent}{os.pathsep}{os.environ['PATH']}"}
    script = REPO / "workflow" / "scripts" / "pin_envs.sh"
    subprocess.run(["bash", str(script)], env=env, check=True, capture_output=True)
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert len(calls) == 3
    by_env = {re.search(r"--file envs/(\S+)\.yaml", call)[1]: call for call in calls}
    assert set(by_env) == set(ENV_NAMES)
    assert "--with-cuda 12.9" in by_env["train-cuda"]
    assert "--without-cuda" in by_env["train-cpu"] and "--without-cuda" in by_env["analysis"]
    for name, call in by_env.items():
        assert "--kind explicit" in call and "--platform linux-64" in call
        assert f"--filename-template envs/{name}.{{platform}}.pin.txt" in call
    bad = subprocess.run(["bash", str(script), "nope"], env=env, capture_output=True)
    assert bad.returncode == 2


# Which env file each job of the DAG gets, read from Snakemake's own job objects
# (what `snakemake --list-conda-envs` prints, minus creating the envs, which
# needs conda). With local_cores set, as the cluster profiles set it: device
# cuda on this GPU-less machine is then a cluster's business, not refused.
PROBE = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import (ConfigSettings, DAGSettings, DeploymentMethod,
    DeploymentSettings, OutputSettings, ResourceSettings)
snakefile, workdir, configfile, overrides = sys.argv[1:]
with SnakemakeApi(OutputSettings(quiet=None)) as api:
    workflow_api = api.workflow(
        resource_settings=ResourceSettings(cores=1, local_cores=1),
        config_settings=ConfigSettings(configfiles=[Path(configfile)],
                                       config=json.loads(overrides)),
        deployment_settings=DeploymentSettings(deployment_method={DeploymentMethod.CONDA}),
        snakefile=Path(snakefile), workdir=Path(workdir))
    workflow_api.dag(DAGSettings())
    workflow = workflow_api._workflow
    workflow._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True)
    workflow._build_dag()
    envs = {}
    for job in workflow.dag.jobs:
        spec = job.conda_env_spec
        path = None if spec is None else spec.file.get_path_or_uri(secret_free=True)
        envs.setdefault(job.rule.name, set()).add(path and str(Path(path).resolve()))
print("ENVS=" + json.dumps({rule: sorted(paths, key=str) for rule, paths in envs.items()}))
"""


def rule_envs(workdir, configfile, **overrides) -> dict[str, list]:
    process = subprocess.run(
        [sys.executable, "-c", PROBE, str(SNAKEFILE), str(workdir), str(configfile)]
        + [json.dumps(overrides)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == 0, process.stdout + process.stderr
    line = [line for line in process.stdout.splitlines() if line.startswith("ENVS=")][-1]
    return json.loads(line.removeprefix("ENVS="))


@pytest.mark.workflow
@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"torch_build": "cpu"}, TRAIN_CPU),
        ({"torch_build": "cuda"}, TRAIN_CUDA),
        ({"torch_build": "cuda", "device": "cpu"}, TRAIN_CUDA),
        ({"torch_build": "auto", "device": "auto"}, TRAIN_CUDA),
        ({"torch_build": "auto", "device": "cuda:1"}, TRAIN_CUDA),
        ({"torch_build": "auto", "device": "cpu"}, TRAIN_CPU),
        ({"torch_build": "cpu", "seeds_per_job": 2}, TRAIN_CPU),
    ],
)
def test_training_rule_resolves_to_the_configured_env(tmp_path, overrides, expected):
    envs = rule_envs(tmp_path, REPO / "config.yaml", **overrides)
    train = {rule: paths for rule, paths in envs.items() if rule.startswith("train")}
    assert train, envs
    assert all(paths == [str(expected.resolve())] for paths in train.values()), train
    if overrides.get("seeds_per_job") == 2:
        assert len(train) == 10  # one job per loss (2) x seeds 0..9 in blocks of two
    summaries = [rule for rule in envs if rule.startswith("summarize_")]
    assert sorted(summaries) == [
        "summarize_evaluation_linear_l1",
        "summarize_evaluation_linear_mse",
    ]
    for rule in (*summaries, "summarize", "plot_curves", "plot_analysis", "explorer"):
        assert envs[rule] == [str(ANALYSIS.resolve())]
    assert envs["all"] == [None]  # no command, no env


@pytest.mark.workflow
@pytest.mark.parametrize("configfile", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_dry_run_without_conda_passes_for_every_test_config(workdir, configfile):
    process = snakemake(workdir, "-n", configfile=configfile)
    jobs = planned_jobs(process)
    assert sum(n for rule, n in jobs.items() if rule.startswith("train")) > 0, jobs


def test_github_workflow_runs_lint_dry_runs_and_a_cpu_conda_run():
    workflows = sorted((REPO / ".github" / "workflows").glob("*.yml"))
    assert workflows
    text = "\n".join(p.read_text() for p in workflows)
    for path in workflows:
        assert yaml.safe_load(path.read_text())["jobs"]
    assert "snakefmt --check" in text and "--lint" in text
    assert "tests/configs/" in text and " -n " in text
    assert "--use-conda" in text and "torch_build=cpu" in text
