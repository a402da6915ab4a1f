"""Results across machines: two folders stand in for two hosts (simulated instruction
sets, as tests/test_numerics.py's portable-bytes tests do); their bundles merge with
0 differing runs, and a planted difference is refused, named, and counted."""

import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from conftest import CONFIGS, REPO, SCHEMA, TRAIN_SCRIPT, planned_jobs, snakemake
from optbench import bundles, reuse, runfiles
from optbench.engines import numerics
from optbench.planning import jobs, settings

X86 = platform.machine().lower() in ("x86_64", "amd64")
TOOL = REPO / "tools" / "bundle.py"
# An AVX2 laptop and an AVX-512 server (tests/test_numerics.py).
LAPTOP = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
SERVER = {"ATEN_CPU_CAPABILITY": "avx512", "MKL_ENABLE_INSTRUCTIONS": "AVX512"}


def host_environment(host: dict) -> dict:
    kept = {k: v for k, v in os.environ.items() if k not in numerics.STEERING_VARIABLES}
    return kept | host


def train_on(workdir: Path, host: dict, seeds) -> Path:
    """One training job (train.py, as the rules call it) of the tiny grid's cells for
    ``seeds``, under a simulated host; returns the study folder (results/)."""
    with open(CONFIGS / "tiny.yaml", encoding="utf-8") as handle:
        grid = settings.validate(yaml.safe_load(handle), SCHEMA)
    runs = workdir / "results/runs/{problem}/{loss}/{optimizer}/{variant}/seed{seed}"
    argument = jobs.argument(grid, grid.cells(), list(seeds), f"{runs}.tsv", f"{runs}.json")
    command = [sys.executable, str(TRAIN_SCRIPT), "--job", argument, "--numerics", "portable"]
    process = subprocess.run(
        command, capture_output=True, text=True, env=host_environment(host), timeout=600
    )
    assert process.returncode == 0, process.stderr[-3000:]
    return workdir / "results"


@pytest.fixture(scope="module")
def two_hosts(tmp_path_factory):
    """The laptop trains seeds 0-1, the server seeds 1-2: seed 1's 4 runs overlap."""
    root = tmp_path_factory.mktemp("hosts")
    laptop = train_on(root / "laptop", LAPTOP, [0, 1])
    server = train_on(root / "server", SERVER, [1, 2])
    return laptop, server


def tool(*args, cwd):
    return subprocess.run(
        [sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True, cwd=cwd
    )


def export_both(laptop, server, where: Path):
    for study, host in ((laptop, "laptop"), (server, "server")):
        done = tool("export", study, where / f"{host}.tar.gz", "--host", host, cwd=where)
        assert done.returncode == 0, done.stderr
    return where / "laptop.tar.gz", where / "server.tar.gz"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.skipif(not X86, reason="the portable promise covers x86-64 hosts")
def test_two_hosts_merge_with_no_differing_run(two_hosts, tmp_path):
    laptop, server = two_hosts
    a, b = export_both(laptop, server, tmp_path)
    done = tool("merge", "--into", "results/both", a, b, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "laptop vs server: 4 compared, 4 identical, 0 differ" in done.stdout
    merged = tmp_path / "results/both"
    table = (merged / "merge/reproducibility.tsv").read_text().splitlines()
    assert table == [
        "host_a\thost_b\truns_compared\tidentical\tdiffering",
        "laptop\tserver\t4\t4\t0",
    ]
    # 2 optimizers x 2 losses x seeds 0, 1, 2, each the bytes of a host that trained it.
    merged_runs = sorted(p.relative_to(merged) for p in merged.rglob("seed*.tsv"))
    assert len(merged_runs) == 12
    for name in merged_runs:
        source = laptop / name if (laptop / name).exists() else server / name
        assert sha(merged / name) == sha(source)
        # The sidecar, with its timing pass, is the first listed host's that held the run.
        sidecar = name.with_suffix(".json")
        expected = laptop / sidecar if (laptop / sidecar).exists() else server / sidecar
        assert (merged / sidecar).read_bytes() == expected.read_bytes()
    rows = [line.split("\t") for line in (merged / "merge/runs.tsv").read_text().splitlines()]
    seed1 = [row for row in rows[1:] if row[0].endswith("seed1.tsv")]
    assert len(seed1) == 4 and all(row[2:] == ["laptop,server", "laptop", "True"] for row in seed1)
    # Each merged run is in the run index at its new place, so the pipeline reuses it.
    for name in merged_runs:
        digest = json.loads((merged / name.with_suffix(".json")).read_text())["settings_sha256"]
        (place,) = reuse.locations(tmp_path / "results/run-index", digest)
        assert place["tsv"] == str(Path("results/both") / name)
        assert place["tsv_sha256"] == sha(merged / name)
    # The provenance: the simulated instruction sets, the code digest, torch.
    with tarfile.open(b) as archive:
        record = json.load(archive.extractfile("bundle.json"))
    assert record["host"] == "server" and record["numerics_modes"] == ["portable"]
    assert len(record["code_sha256"]) == 12 and record["torch_versions"]
    assert len(record["runs"]) == 8
    # The pipeline on the merged study (seeds 0-2) makes the analysis and trains nothing.
    dry = snakemake(
        tmp_path, "-n", "--config", "seeds=[0,1,2]", configfile=CONFIGS / "tiny.yaml", study="both"
    )
    planned = planned_jobs(dry)
    assert "train" not in planned and planned["summarize_cell"] == 4, planned


@pytest.mark.skipif(not X86, reason="the portable promise covers x86-64 hosts")
def test_a_planted_difference_is_refused_named_and_counted(two_hosts, tmp_path):
    laptop, server = two_hosts
    planted = tmp_path / "server"
    shutil.copytree(server, planted)
    run = planted / "runs/linear/mse/adam/base/seed1.tsv"
    lines = run.read_text().split("\n")
    step, loss, *rest = lines[3].split("\t")
    lines[3] = "\t".join([step, repr(float(loss) * (1 + 2**-40)), *rest])
    run.write_text("\n".join(lines))
    a, b = export_both(laptop, planted, tmp_path)
    refused = tool("merge", "--into", "results/both", a, b, cwd=tmp_path)
    assert refused.returncode == 1
    assert "1 run(s) with the same settings digest differ between hosts" in refused.stderr
    assert "runs/linear/mse/adam/base/seed1.tsv (portable mode): laptop vs server" in refused.stderr
    assert "line 4:" in refused.stderr and "--prefer HOST" in refused.stderr
    assert not (tmp_path / "results/both").exists()  # nothing half-merged
    # Choosing a host merges, and the table still counts the difference.
    kept = tool("merge", "--into", "results/both", a, b, "--prefer", "server", cwd=tmp_path)
    assert kept.returncode == 0, kept.stderr
    table = (tmp_path / "results/both/merge/reproducibility.tsv").read_text().splitlines()
    assert table[1] == "laptop\tserver\t4\t3\t1"
    assert (tmp_path / "results/both/runs/linear/mse/adam/base/seed1.tsv").read_bytes() == (
        run.read_bytes()
    )


def test_bundles_of_other_settings_at_one_path_are_refused(tmp_path):
    """Two bundles whose run at one path has different settings digests (another
    config or code): never merged, the run named."""
    made = []
    for host, digest in (("a", "1" * 64), ("b", "2" * 64)):
        study = tmp_path / host / "results"
        sidecar = {"settings_sha256": digest, "numerics": {"mode": "portable"}}
        tsv = study / "runs/p/l/o/base/seed0.tsv"
        runfiles.write_run(tsv, [1.0, 0.5], tsv.with_suffix(".json"), sidecar)
        bundles.export(study, tmp_path / f"{host}.tar.gz", host, "code")
        made.append(tmp_path / f"{host}.tar.gz")
    with pytest.raises(bundles.BundleError) as error:
        bundles.merge(made, tmp_path / "merged")
    assert "different settings digests" in str(error.value)
    assert "runs/p/l/o/base/seed0.tsv: a 111111111111, b 222222222222" in str(error.value)


def test_a_bundle_changed_after_export_is_refused(tmp_path):
    study = tmp_path / "results"
    tsv = study / "runs/p/l/o/base/seed0.tsv"
    runfiles.write_run(tsv, [1.0, 0.5], tsv.with_suffix(".json"), {"settings_sha256": "d"})
    bundles.export(study, tmp_path / "a.tar.gz", "a", "code")
    with tarfile.open(tmp_path / "a.tar.gz") as archive:
        members = {m.name: archive.extractfile(m).read() for m in archive.getmembers()}
    members["runs/p/l/o/base/seed0.tsv"] = members["runs/p/l/o/base/seed0.tsv"].replace(
        b"0.5", b"0.6"
    )
    with tarfile.open(tmp_path / "b.tar.gz", "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    with pytest.raises(bundles.BundleError, match=r"seed0\.tsv is missing or not the file"):
        bundles.merge([tmp_path / "b.tar.gz"], tmp_path / "merged")
