"""workflow/scripts/check_config.py and the workflow run the same checks: the same
verdict, and the same messages, on the table of docs/bad-input.md; user problems
in problems/ are found by both."""

import importlib.util
import shutil

import bad_input
import pytest
from test_configfiles import check_config as check

from conftest import REPO, snakemake


def _checker_module():
    spec = importlib.util.spec_from_file_location("check_config", CHECKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CHECKER = REPO / "workflow" / "scripts" / "check_config.py"
CHECKER_MODULE = _checker_module()


@pytest.mark.parametrize("case", bad_input.cases(), ids=[c.name for c in bad_input.cases()])
def test_checker_refuses_every_bad_input_row_with_its_message(case, tmp_path, capsys):
    """In this process (its main), for speed; the tests below run the script itself."""
    change = tmp_path / "change.yaml"
    change.write_text(case.change + "\n", encoding="utf-8")
    assert CHECKER_MODULE.main([str(REPO / "config.yaml"), str(change)]) == 1
    out, err = capsys.readouterr()
    for message in case.messages:
        assert message in err, err


def test_checker_describes_the_grid_by_what_multiplies():
    process = check(REPO / "configs" / "tuned.yaml")
    assert process.returncode == 0, process.stderr
    first, second, *power = process.stdout.splitlines()
    assert first == (
        "ok: 13500 runs = 540 cells x 25 seeds (20 evaluation, 5 tuning); cells: "
        "10 (problem, loss) pairs of 7 problem(s) x 54 optimizer variants of "
        "6 optimizer(s)"
    )
    assert second.startswith("planned: 13,500 runs, ")
    assert power and all(line.startswith("power: ") for line in power)


def test_an_empty_file_is_refused_by_both(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    process = check(empty)
    assert process.returncode == 1
    assert "is empty; a config file must be given as JSON or YAML" in process.stderr
    workflow = snakemake(tmp_path, "-n", configfile=empty, check=False)
    assert workflow.returncode != 0
    assert "Config file must be given as JSON or YAML" in workflow.stdout + workflow.stderr


@pytest.mark.workflow
def test_a_user_problem_is_accepted_by_both(tmp_path):
    clone = tmp_path / "clone"
    shutil.copytree(REPO / "workflow", clone / "workflow")
    shutil.copytree(REPO / "problems", clone / "problems")
    shutil.copytree(REPO / "profiles", clone / "profiles")
    shutil.copy(REPO / "Snakefile", clone / "Snakefile")
    shutil.copy(REPO / "problems" / "_template.py", clone / "problems" / "sine.py")
    config = tmp_path / "sine.yaml"
    config.write_text(
        "seeds: [0]\nsteps: 3\ndevice: cpu\nproblems: {sine: {}}\n"
        "optimizers: {sgd: {class: SGD, kwargs: {lr: 0.01}}}\n"
        "losses: {mse: {class: MSELoss}}\n"
    )
    process = check(config, checker=clone / "workflow/scripts/check_config.py")
    assert process.returncode == 0, process.stderr
    assert process.stdout.startswith("ok: 1 runs = 1 cells x 1 seeds")
    dry = snakemake(tmp_path / "w", "-n", configfile=config, snakefile=clone / "Snakefile")
    assert "train" in dry.stdout + dry.stderr


@pytest.mark.parametrize(
    "configfile", sorted((REPO / "configs").glob("*.yaml")), ids=lambda path: path.stem
)
def test_every_shipped_config_passes_the_checks(configfile, capsys):
    """configs/*.yaml (the fair comparison, the optimizer and the modern studies) are
    usable as shipped: every class, kwarg, schedule, search and target checks out."""
    assert CHECKER_MODULE.main([str(configfile)]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.startswith("ok: ")


def test_checker_states_that_five_seeds_cannot_separate_four_optimizers(tmp_path, capsys):
    """Default grid (4 optimizers: 6 pairs per block) on 5 seeds: the smallest
    Holm p is 6 * 2 / 2**5 = 0.375; 8 seeds give 6 * 2 / 2**8 = 0.047 < 0.05."""
    change = tmp_path / "five.yaml"
    change.write_text("seeds: [0, 1, 2, 3, 4]\n", encoding="utf-8")
    assert CHECKER_MODULE.main([str(REPO / "config.yaml"), str(change)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("power")]
    assert lines[0] == (
        "power: pairwise tests (leaderboard ranks; Holm over 6 pairs) on linear/mse, "
        "linear/l1, 5 evaluation seeds: no difference can be significant at n = 5 "
        "(smallest reachable p 0.375 >= 0.05); 8 seeds needed"
    )


@pytest.mark.workflow
def test_a_dry_run_states_the_power_of_its_tests_before_running(tmp_path):
    process = snakemake(tmp_path, "-n", configfile=REPO / "tests" / "configs" / "diverging.yaml")
    assert (
        "power: pairwise tests (leaderboard ranks; one pair, uncorrected) on linear/mse, "
        "2 evaluation seeds: no difference can be significant at n = 2 (smallest reachable "
        "p 0.5 >= 0.05); 6 seeds needed"
    ) in process.stderr
