"""The same numbers on any x86-64 machine: the portable mode's pins, and jobs run under
simulated hosts (environment variables that make the libraries take another CPU's
code paths) writing identical run files."""

import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import (
    AVX2_HOST,
    AVX512_HOST,
    REPO,
    SCHEMA,
    TRAIN_SCRIPT,
    host_environment,
    run_default_command,
)
from optbench.engines import numerics
from optbench.planning import jobs, settings

X86 = platform.machine().lower() in ("x86_64", "amd64")

# Stand-ins for other CPUs: an AVX2 laptop and an AVX-512 server (AVX2_HOST,
# AVX512_HOST in conftest, where the default run on the first is shared).
# ATen's scalar kernels, which every x86-64 CPU can run: their bits differ from the
# AVX2 kernels' on any host with AVX2, so this host shows that a simulation bites.
SCALAR_HOST = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "AVX2"}

# A config that reaches the batched engine on every built-in problem.
EVERY_PROBLEM = {
    "seeds": [0, 1, 2],
    "steps": 12,
    "device": "cpu",
    "problems": {
        "linear": {"kwargs": {"dim": 20}},
        "quadratic": {},
        "logistic": {},
        "rosenbrock": {},
        "noisy_quadratic": {},
        "digits_mlp": {},
        "digits_cnn": {},
        "breast_cancer_mlp": {},
        "text_transformer": {},
    },
    "optimizers": {
        "adam": {"class": "Adam", "kwargs": {"lr": 0.01}},
        "sgd": {"class": "SGD", "kwargs": {"lr": 0.01, "momentum": 0.9}},
    },
    "losses": {
        "mse": {"class": "MSELoss"},
        "bce": {"class": "BCEWithLogitsLoss"},
        "ce": {"class": "CrossEntropyLoss"},
    },
}


# ------------------------------------------------------------------ unit


def test_portable_pins_every_library_and_reports_what_it_found():
    environ = {"ATEN_CPU_CAPABILITY": "avx512", "PATH": "/bin"}
    found = numerics.pin("portable", environ, torch_imported=False)
    assert found["ATEN_CPU_CAPABILITY"] == "avx512"
    assert found["MKL_CBWR"] is None
    assert environ == {"PATH": "/bin", **numerics.PORTABLE_ENVIRONMENT}
    assert environ["MKL_CBWR"] == "COMPATIBLE,STRICT"
    assert environ["ATEN_CPU_CAPABILITY"] == "avx2"
    assert environ["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert environ["OMP_NUM_THREADS"] == environ["MKL_NUM_THREADS"] == "1"


def test_native_sets_nothing():
    environ = {"ATEN_CPU_CAPABILITY": "avx512"}
    found = numerics.pin("native", environ, torch_imported=False)
    assert environ == {"ATEN_CPU_CAPABILITY": "avx512"}
    assert found["ATEN_CPU_CAPABILITY"] == "avx512"


def test_pinning_after_torch_is_refused_unless_already_pinned():
    environ = {"ATEN_CPU_CAPABILITY": "avx512"}
    with pytest.raises(numerics.NumericsError, match="before the first import of torch"):
        numerics.pin("portable", environ, torch_imported=True)
    assert environ == {"ATEN_CPU_CAPABILITY": "avx512"}  # nothing set that could not act
    pinned = dict(numerics.PORTABLE_ENVIRONMENT)
    assert numerics.pin("portable", pinned, torch_imported=True)["MKL_CBWR"] == "COMPATIBLE,STRICT"
    with pytest.raises(ValueError, match="portable, native"):
        numerics.pin("fast", {})


def test_this_test_process_runs_pinned():
    """conftest pins before torch: what the in-process bit-exact tests rely on."""
    import torch

    assert os.environ["MKL_CBWR"] == "COMPATIBLE,STRICT"
    if X86:
        assert torch.backends.cpu.get_cpu_capability() in ("AVX2", "DEFAULT")


def test_mode_from_the_command_line():
    assert numerics.mode_from_argv(["--job", "{}"]) == "portable"
    assert numerics.mode_from_argv(["--numerics", "native", "--job", "x"]) == "native"
    assert numerics.mode_from_argv(["--numerics=native"]) == "native"


CPUINFO = """processor\t: 0
model name\t: Some CPU 9000
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512bw
"""


def test_host_instruction_sets_and_promise():
    sets = numerics.host_instruction_sets(CPUINFO)
    assert sets == ["sse2", "avx", "avx2", "fma", "avx512f", "avx512bw"]
    assert numerics.cpu_model(CPUINFO) == "Some CPU 9000"
    assert numerics.promise_holds("portable", "x86_64", sets) == (True, numerics.PORTABLE_PROMISE)
    holds, why = numerics.promise_holds("portable", "x86_64", ["sse2", "avx"])
    assert not holds and "lacks AVX2" in why
    holds, why = numerics.promise_holds("portable", "aarch64", [])
    assert not holds and "aarch64" in why
    assert not numerics.promise_holds("native", "x86_64", sets)[0]
    assert numerics.host_instruction_sets("no flags here") == []


# ------------------------------------------------------- simulated hosts


def run_files(workdir: Path) -> dict[str, str]:
    """SHA-256 of every run TSV under results/runs."""
    return {
        str(path.relative_to(workdir)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted((workdir / "results" / "runs").rglob("*.tsv"))
    }


def sidecars(workdir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((workdir / "results/runs").rglob("*.json"))]


def job_under(tmp_path, name, grid, host, numerics_mode="portable"):
    """One training job (train.py, as the rules call it) of every cell of ``grid``."""
    workdir = tmp_path / name
    runs = workdir / "results/runs/{problem}/{loss}/{optimizer}/{variant}/seed{seed}"
    argument = jobs.argument(grid, grid.cells(), grid.all_seeds, f"{runs}.tsv", f"{runs}.json")
    command = [sys.executable, str(TRAIN_SCRIPT), "--job", argument, "--numerics", numerics_mode]
    process = subprocess.run(
        command, capture_output=True, text=True, env=host_environment(host), timeout=600
    )
    assert process.returncode == 0, process.stderr[-3000:]
    return workdir, run_files(workdir)


@pytest.mark.workflow
@pytest.mark.skipif(not X86, reason="the portable promise covers x86-64 hosts")
def test_default_config_same_bytes_on_simulated_hosts(default_results, tmp_path):
    """The whole pipeline on config.yaml (README's first command) under the AVX2
    host (the session's shared default run) and under the AVX-512 host."""
    avx2, files_avx2 = default_results, run_files(default_results)
    avx512 = run_default_command(tmp_path, AVX512_HOST)
    files_avx512 = run_files(avx512)
    assert len(files_avx2) == 80
    assert files_avx2 == files_avx512
    recorded = sidecars(avx512)[0]["numerics"]
    assert recorded["mode"] == "portable"
    assert recorded["aten_cpu_capability"] == "AVX2"
    assert recorded["environment_found"]["ATEN_CPU_CAPABILITY"] == "avx512"
    assert recorded["environment_found"]["MKL_ENABLE_INSTRUCTIONS"] == "AVX512"
    assert recorded["pinned"] == numerics.PORTABLE_ENVIRONMENT
    assert recorded["threads"] == 1 and recorded["mkldnn_enabled"] is False
    assert recorded["portable_promise_holds"] is ("avx2" in recorded["host_instruction_sets"])
    # The figures drawn from them are the same files too.
    for figure in ("overview.png", "finals.png"):
        assert (avx2 / "results/figures" / figure).read_bytes() == (
            avx512 / "results/figures" / figure
        ).read_bytes(), figure


@pytest.mark.skipif(not X86, reason="the portable promise covers x86-64 hosts")
def test_batched_jobs_on_every_builtin_same_bytes_on_simulated_hosts(tmp_path):
    grid = settings.validate(EVERY_PROBLEM, SCHEMA)
    avx2, files_avx2 = job_under(tmp_path, "avx2", grid, AVX2_HOST)
    _, files_avx512 = job_under(tmp_path, "avx512", grid, AVX512_HOST)
    _, files_scalar = job_under(tmp_path, "scalar", grid, SCALAR_HOST)
    # 9 (problem, loss) pairs (each problem takes the one loss here that fits it)
    # x 2 optimizers x 3 seeds.
    assert len(files_avx2) == 54
    assert files_avx2 == files_avx512 == files_scalar
    written = sidecars(avx2)
    assert {s["problem"]["name"] for s in written} == set(EVERY_PROBLEM["problems"])
    # Vmapped convolutions and attention are not the loop's bits, nor cross entropy's
    # per-sample sum: those train in the loop (engine auto promises the loop's bits).
    engines = {s["problem"]["name"]: s["engine"] for s in written}
    assert engines.pop("digits_cnn") == engines.pop("text_transformer") == "loop"
    assert engines.pop("digits_mlp") == "loop"
    assert set(engines.values()) == {"batched"}
    assert all(s["engine_details"].get("kernels_exact", True) for s in written)


@pytest.mark.skipif(not X86, reason="ATEN_CPU_CAPABILITY values are x86's")
def test_native_mode_bits_follow_the_host(tmp_path, capsys):
    """What the portable mode removes: in the native mode a simulated host changes bits.

    ATen's scalar kernels with MKL's AVX2 branch, against the AVX2 host, differ on
    every host with AVX2. The laptop/server pair of the portable test may or may
    not differ here (it depends on this CPU's MKL and ATen paths): the test prints
    how many files did.
    """
    grid = settings.validate(EVERY_PROBLEM, SCHEMA)
    avx2, files_avx2 = job_under(tmp_path, "avx2", grid, AVX2_HOST, "native")
    _, files_scalar = job_under(tmp_path, "scalar", grid, SCALAR_HOST, "native")
    _, files_avx512 = job_under(tmp_path, "avx512", grid, AVX512_HOST, "native")
    differ = sum(files_avx2[k] != files_scalar[k] for k in files_avx2)
    assert differ > 0, "ATen's scalar kernels gave the AVX2 kernels' bits in the native mode"
    recorded = sidecars(avx2)[0]["numerics"]
    assert recorded["mode"] == "native"
    assert recorded["pinned"] == {}
    assert recorded["threads"] == 1  # a job's own --threads, as before
    assert not recorded["portable_promise_holds"]
    assert recorded["promise"] == numerics.NATIVE_PROMISE
    with capsys.disabled():
        print(
            f"\nnative mode: {differ} of {len(files_avx2)} run files differ between the AVX2 "
            f"and scalar-kernel hosts, "
            f"{sum(files_avx2[k] != files_avx512[k] for k in files_avx2)} between AVX2 and AVX-512"
        )


@pytest.mark.workflow
@pytest.mark.parametrize(("optimizer", "loss"), [("adam", "mse"), ("sgd", "l1")])
def test_the_documented_hand_check_matches_a_run(tiny_results, optimizer, loss):
    """docs/reproducibility.md: the plain loop with the portable mode's environment
    (this process's, inherited) gives the run file's bytes."""
    for seed in (0, 1):
        process = subprocess.run(
            [sys.executable, str(REPO / "tools/article_loop.py"), "--optimizer", optimizer]
            + ["--loss", loss, "--seed", str(seed), "--steps", "5"],
            capture_output=True,
            text=True,
            check=True,
        )
        run = tiny_results / f"results/runs/linear/{loss}/{optimizer}/base/seed{seed}.tsv"
        assert process.stdout == run.read_text()
