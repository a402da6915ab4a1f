"""Which configuration a run uses: config.yaml, a user's --configfile, --config,
and `only:` to run part of the grid; config bombs refused while Snakemake starts."""

import re
import shlex
import shutil
import subprocess
import sys
import time

import pandas as pd
import psutil
import pytest

from conftest import CONFIGS, REPO, snakemake, snakemake_command
from optbench.planning import jobs

pytestmark = pytest.mark.workflow
TINY = CONFIGS / "tiny.yaml"
CHECK_CONFIG = REPO / "workflow" / "scripts" / "check_config.py"


def planned_runs(process, root="results") -> set[str]:
    """The run TSVs a dry run (with -p) schedules in the study folder ``root``: a
    packed job's, expanded from the --job argument of its printed command (its
    only output is its manifest); a one-run job's, read from its `output:` line."""
    runs = set()
    for line in (process.stdout + process.stderr).splitlines():
        if "train.py" in line and " --job " in line:
            arguments = shlex.split(line)
            expanded = jobs.expand(arguments[arguments.index("--job") + 1])
            runs |= {run.tsv for run in expanded if run.tsv.startswith(f"{root}/runs/")}
            continue
        match = re.match(r"\s+output: (.*)$", line)
        if match:
            # Training outputs carry Snakemake's "(update)" flag (train.smk).
            paths = [path.removesuffix(" (update)") for path in match.group(1).split(", ")]
            runs |= {
                path for path in paths if path.startswith(f"{root}/runs/") and path.endswith(".tsv")
            }
    return runs


def runs(losses, optimizers, seeds, root="results") -> set[str]:
    return {
        f"{root}/runs/linear/{loss}/{optimizer}/base/seed{seed}.tsv"
        for loss in losses
        for optimizer in optimizers
        for seed in seeds
    }


@pytest.fixture
def project_dir(tmp_path):
    """A working directory holding the repository's config.yaml, as a clone does."""
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    return tmp_path


def test_configfile_replaces_config_yaml_and_runs_exactly_its_grid(project_dir):
    """Merged over config.yaml (Snakemake's default), all four optimizers ran."""
    two = project_dir / "two.yaml"
    two.write_text(
        "seeds: [0]\nsteps: 3\ndevice: cpu\nlosses: {mse: {class: MSELoss}}\n"
        "optimizers:\n"
        "  sgd: {class: SGD, kwargs: {lr: 0.1}}\n"
        "  adam: {class: Adam, kwargs: {lr: 0.1}}\n"
    )
    # Up to the tables (the leaderboard is read): no figures, explorer or Parquet.
    up_to_the_tables = ("--omit-from", "plot_curves", "plot_analysis", "explorer", "columnar")
    snakemake(project_dir, "--cores", "2", *up_to_the_tables, configfile=two)
    written = {
        str(p.relative_to(project_dir)) for p in (project_dir / "results/runs").rglob("*.tsv")
    }
    assert written == runs(["mse"], ["sgd", "adam"], [0])
    board = pd.read_csv(project_dir / "results/summary/leaderboard.tsv", sep="\t")
    assert sorted(board["optimizer"]) == ["adam", "sgd"]


def test_configfiles_merge_in_order_and_missing_keys_take_the_defaults(project_dir):
    (project_dir / "config.yaml").write_text(
        "optimizers: {nadam: {class: NAdam}}\nlosses: {huber: {class: HuberLoss}}\n"
    )
    first, second = project_dir / "a.yaml", project_dir / "b.yaml"
    first.write_text("seeds: [0]\noptimizers: {sgd: {class: SGD, kwargs: {lr: 0.1}}}\n")
    second.write_text("seeds: [3, 4]\noptimizers: {adam: {class: Adam}}\n")
    process = snakemake(project_dir, "-n", "-p", "--configfile", str(first), str(second))
    # config.yaml's nadam and huber are not used; losses are the schema's defaults.
    # The study is named after both files (docs/outputs.md, Studies).
    assert planned_runs(process, "results/a+b") == runs(
        ["mse", "l1"], ["sgd", "adam"], [3, 4], "results/a+b"
    )


def test_config_on_the_command_line_extends_config_yaml_and_only_picks_from_it(project_dir):
    """Without --configfile, config.yaml is read and --config merges over it: an
    optimizer added on the command line can be run alone."""
    (project_dir / "config.yaml").write_text(
        "seeds: [2, 5]\nlosses: {huber: {class: HuberLoss}}\n"
        "optimizers: {sgd: {class: SGD, kwargs: {lr: 0.1}}}\n"
    )
    adamw = "optimizers={adamw: {class: AdamW, kwargs: {lr: 0.01}}}"
    process = snakemake(project_dir, "-n", "-p", "--config", adamw)
    assert planned_runs(process) == runs(["huber"], ["sgd", "adamw"], [2, 5])
    process = snakemake(project_dir, "-n", "-p", "--config", adamw, "only={optimizers: [adamw]}")
    assert planned_runs(process) == runs(["huber"], ["adamw"], [2, 5])


def test_only_schedules_exactly_the_chosen_cells(project_dir):
    process = snakemake(
        project_dir, "-n", "-p", "--config", "only={optimizers: [sgd, adam], losses: [mse]}"
    )
    assert planned_runs(process) == runs(["mse"], ["sgd", "adam"], range(10))
    process = snakemake(
        project_dir, "-n", "-p", "--config", "only={optimizers: [adam], losses: [l1], seeds: [7]}"
    )
    assert planned_runs(process) == {"results/runs/linear/l1/adam/base/seed7.tsv"}
    text = process.stdout + process.stderr
    # The summary job waits for that job's manifest and summarises that cell only.
    assert "input: results/manifests/train/linear/l1/seeds0-9.tsv\n" in text
    assert "output: results/summary/cells/evaluation/linear/l1/adam/base.json\n" in text
    assert "results/figures/losses/linear/mse" not in text


def test_only_in_a_config_file_and_on_the_command_line_combine(workdir):
    selection = workdir / "selection.yaml"
    selection.write_text("only: {losses: [l1]}\n")
    process = snakemake(
        workdir,
        "-n",
        "-p",
        "--configfile",
        str(TINY),
        str(selection),
        "--config",
        "only={seeds: [1]}",
        "seeds_per_job=2",
    )
    folder = "results/tiny+selection"
    assert planned_runs(process, folder) == runs(["l1"], ["sgd", "adam"], [1], folder)
    # Packed as for the whole grid: seed 1 stays in the job of seeds 0-1.
    assert re.findall(r"rule (train\S*):", process.stdout) == ["train_seeds_0-1"] * 2


def test_config_bomb_is_refused_in_seconds_and_little_memory(workdir):
    """About 500 bytes expanding to 10^8 values in an optimizer's kwargs: before
    the bound, `snakemake -n` ran past 150 s and 4 GB."""
    levels = "[0, 0, 0, 0, 0, 0, 0, 0, 0, 0]"
    for i in range(7):
        levels = f"[&a{i} {levels}, " + ", ".join([f"*a{i}"] * 9) + "]"
    bomb = workdir / "bomb.yaml"
    bomb.write_text(
        f"optimizers: {{sgd: {{class: SGD, kwargs: {{lr: 0.1, dampening: {levels}}}}}}}\n"
    )
    assert bomb.stat().st_size < 600
    command = snakemake_command(workdir, "-n", "--configfile", str(REPO / "config.yaml"), str(bomb))
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    watched, peak = psutil.Process(process.pid), 0
    while process.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        if time.perf_counter() - started > 60:
            process.kill()
            break
        time.sleep(0.02)
    output = process.communicate()[0].decode()
    seconds = time.perf_counter() - started
    assert process.returncode != 0 and seconds < 60, f"still running after {seconds:.0f} s"
    assert "config key optimizers.sgd.kwargs.dampening: holds more than 100,000 values" in output
    assert peak < 300 * 2**20, f"peak {peak / 2**20:.0f} MB"


def check_config(*files, checker=CHECK_CONFIG):
    """workflow/scripts/check_config.py (or the copy ``checker``) on ``files``."""
    return subprocess.run(
        [sys.executable, str(checker), *map(str, files)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


def test_check_config_reads_files_as_snakemake_would(tmp_path):
    assert check_config().stdout.startswith("ok: 80 runs = 8 cells x 10 seeds ")
    extra = tmp_path / "extra.yaml"
    extra.write_text("seeds: [0, 1, 2]\n")
    assert check_config(TINY, extra).stdout.startswith("ok: 12 runs = 4 cells x 3 seeds ")
    typo = tmp_path / "typo.yaml"
    typo.write_text("step: 5\noptimizers: {sgd: {class: SGD, kwargs: {momentun: 0.9}}}\n")
    process = check_config(typo)
    assert process.returncode == 1
    assert process.stderr.startswith("2 problems:\nunknown config key(s) 'step'.")
    assert "config key optimizers.sgd.kwargs: torch.optim.SGD does not accept 'momentun'" in (
        process.stderr
    )


def test_check_config_refuses_a_mapping_bomb_that_snakemake_would_expand(tmp_path):
    """10^8 values as nested mappings: Snakemake copies each while loading
    (10^7 values took it about 30 s and 850 MB); the checker reads it in under a second."""
    levels = "{" + ", ".join(f"k{j}: 0" for j in range(10)) + "}"
    for i in range(7):
        levels = f"{{k0: &m{i} {levels}, " + ", ".join(f"k{j}: *m{i}" for j in range(1, 10)) + "}"
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(f"optimizers: {{sgd: {{class: SGD, kwargs: {{dampening: {levels}}}}}}}\n")
    started = time.perf_counter()
    process = check_config(bomb)
    assert time.perf_counter() - started < 10
    assert process.returncode == 1
    assert f"config file {bomb}: config key optimizers.sgd.kwargs.dampening: holds more" in (
        process.stderr
    )


def test_check_config_evaluates_nothing_in_a_config_file(tmp_path):
    """Snakemake runs the Python of a YTE config file (__use_yte__: true) while loading it."""
    marker = tmp_path / "evaluated"
    yte = tmp_path / "yte.yaml"
    yte.write_text(f'__use_yte__: true\nsteps: ?__import__("pathlib").Path("{marker}").touch()\n')
    process = check_config(yte)
    assert process.returncode == 1 and not marker.exists()
    assert "unknown config key(s) '__use_yte__'" in process.stderr


def test_exponent_floats_are_numbers_in_a_config_file_and_on_the_command_line(project_dir):
    """1e-4 as users write it: Snakemake reads config files with YAML 1.1, which leaves it
    text, and --config gives text. A search range of 1e-4 to 1e-1 was refused ("low
    and high must be numbers"); here the plan holds the drawn and swept rates."""
    mine = project_dir / "mine.yaml"
    mine.write_text(
        "seeds: [0]\ntuning_seeds: [100]\nlosses: {mse: {class: MSELoss}}\n"
        "optimizers:\n"
        "  adam: {class: Adam, kwargs: {lr: 1e-4, eps: 1E-8},\n"
        "         search: {trials: 2, space: {lr: {scale: log, low: 1e-4, high: 1e-1}}}}\n"
        "  sgd: {class: SGD, kwargs: {lr: 5e-2}, sweep: {lr: [1e-2, 5e+0]}}\n"
    )
    assert check_config(mine).stdout.startswith("ok: 12 runs = 6 cells x 2 seeds ")
    threshold = "thresholds={default: {relative: 1e-2}}"
    process = snakemake(project_dir, "-n", "-p", "--configfile", str(mine), "--config", threshold)
    text = process.stdout + process.stderr
    variants = {}  # results/mine/runs/linear/mse/OPTIMIZER/VARIANT/seedN.tsv
    for path in planned_runs(process, root="results/mine"):
        variants.setdefault(path.split("/")[5], set()).add(path.split("/")[6])
    assert variants["sgd"] == {"base", "lr0.01", "lr5.0"}
    drawn = [float(name.removeprefix("lr")) for name in variants["adam"] - {"base"}]
    assert len(drawn) == 2 and all(1e-4 <= rate <= 1e-1 for rate in drawn)
    assert '"base":{"eps":1e-08,"lr":0.0001}' in text
    assert "relative:0.01" in text and "relative:0.001" not in text
