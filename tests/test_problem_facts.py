"""A problem's facts (held-out target default, bytes per run, cost per run-step)
are declared in its own file and read from there by planning and reporting;
a fact left out falls back, a malformed one is refused naming the file and the fix."""

import re
import shutil
import textwrap

import pytest
import yaml

import optbench.problems as problems
from conftest import REPO, SCHEMA, snakemake
from optbench.planning import cost, settings
from optbench.problems import ProblemError
from optbench.reporting.analysis_context import heldout_target_text

TEMPLATE = REPO / "problems" / "_template.py"
# The facts planted in a copy of the template (regression, held-out data).
FACTS = textwrap.dedent(
    """
    HELDOUT_TARGET = {"loss": 0.5}
    RUN_BYTES = 1000000000
    RUN_STEP_US = {"loop": 1250000, "lbfgs_loop": 3000000}
    """
)
MiB = 2**20


def plant(folder, name="mine", facts=FACTS):
    """A copy of the template as a user problem ``name``, with ``facts`` appended."""
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(TEMPLATE.read_text() + facts)
    return path


def experiment(users, **extra):
    config = {
        "seeds": [0, 1],
        "steps": 2,
        "problems": {"mine": {}},
        "losses": {"mse": {"class": "MSELoss"}},
        "optimizers": {
            "sgd": {"class": "SGD", "kwargs": {"lr": 0.01}},
            "lbfgs": {"class": "LBFGS", "kwargs": {}},
        },
        **extra,
    }
    return settings.validate(config, SCHEMA, problems_dir=users, memory_bytes=None)


def target_of(found, loss="mse"):
    problem = found.problems["mine"]
    return heldout_target_text(found.heldout_targets, "mine", problem.facts.heldout_target, loss)


def test_a_user_problems_declared_facts_set_its_estimates_and_default_target(tmp_path):
    users = tmp_path / "problems"
    plant(users)
    found = experiment(users)
    plan = cost.plan_for(found)
    # By hand: one training job (one loss) of 2 optimizers x 2 seeds = 4 runs of 2 steps;
    # SGD in the loop at 1.25 s per run-step, L-BFGS at 3 s, plus one start-up of 2.5 s.
    assert (plan.jobs, plan.largest_runs, plan.largest_steps) == (1, 4, 2)
    assert plan.seconds == pytest.approx(2.5 + 1.25 * 2 * 2 + 3.0 * 2 * 2, rel=1e-12)
    assert plan.largest_bytes == 400 * MiB + 4 * (1_000_000_000 + 2 * 120)
    assert plan.describe(None) == (
        "planned: 4 runs, 8 run-steps in 1 training job(s); the largest job, 4 runs of 2 "
        "steps, needs about 4.42 GB; training takes roughly 20 s on one core"
    )
    assert target_of(found) == "loss:0.5"
    # The config's target still wins over the file's.
    chosen = experiment(users, heldout_targets={"mine/mse": {"accuracy": 0.7}})
    assert target_of(chosen) == "accuracy:0.7"


def test_facts_left_out_fall_back(tmp_path):
    users = tmp_path / "problems"
    plant(users, facts='\nRUN_STEP_US = {"loop": 1250000}\n')  # only the loop's cost
    plan = cost.plan_for(experiment(users))
    # L-BFGS at the guessed 20,000 us; each run keeps the default 256 KiB.
    assert plan.seconds == pytest.approx(2.5 + 1.25 * 4 + 0.02 * 4, rel=1e-12)
    assert plan.largest_bytes == 400 * MiB + 4 * (256 * 1024 + 2 * 120)
    assert target_of(experiment(users)) == ""  # held-out data, but no target declared
    plant(users, facts="")  # the template as shipped declares no fact
    plain = cost.plan_for(experiment(users))
    assert plain.seconds == pytest.approx(2.5 + 0.001 * 4 + 0.02 * 4, rel=1e-12)


def test_the_builtin_figures_are_read_from_their_files(tmp_path, monkeypatch):
    """A built-in's figures move with its file: an edited copy of the built-in folder
    changes the estimate and the default target (nothing is kept elsewhere)."""
    builtin = tmp_path / "builtin"
    shutil.copytree(problems.BUILTIN_DIR, builtin)
    source = builtin / "digits_mlp.py"
    text = source.read_text()
    text = text.replace('HELDOUT_TARGET = {"accuracy": 0.9}', 'HELDOUT_TARGET = {"loss": 0.3}')
    text = text.replace('"loop": 660,', '"loop": 5000000,')
    text = text.replace("RUN_BYTES = 262144", "RUN_BYTES = 5000000")
    source.write_text(text)
    monkeypatch.setattr(problems, "BUILTIN_DIR", builtin)
    config = {
        "seeds": [0],
        "steps": 2,
        "engine": "loop",
        "problems": {"digits_mlp": {}},
        "losses": {"ce": {"class": "CrossEntropyLoss"}},
        "optimizers": {"sgd": {"class": "SGD", "kwargs": {"lr": 0.1}}},
    }
    found = settings.validate(config, SCHEMA, memory_bytes=None)
    plan = cost.plan_for(found)
    assert plan.seconds == pytest.approx(2.5 + 5.0 * 2, rel=1e-12)
    assert plan.largest_bytes == 400 * MiB + 1 * (5_000_000 + 2 * 120)
    declared = found.problems["digits_mlp"].facts.heldout_target
    assert heldout_target_text({}, "digits_mlp", declared, "ce") == "loss:0.3"


def test_every_builtin_declares_its_measured_costs():
    """No built-in falls back to the guess for a user's problem."""
    for name in problems.available():
        costs = problems.declaration(name).facts.run_step_us
        assert set(costs) == set(problems.RUN_STEP_ENGINES), name


def test_the_docs_table_of_heldout_targets_is_what_the_files_declare():
    text = (REPO / "docs" / "problems.md").read_text()
    section = text.split("## Held-out targets", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| (accuracy >=|loss <=) ([0-9.]+)", section, re.M)
    documented = {
        name: {"accuracy" if sign == "accuracy >=" else "loss": float(value)}
        for name, sign, value in rows
    }
    declared = {
        name: problems.declaration(name).facts.heldout_target
        for name in problems.available()
        if problems.declaration(name).facts.heldout_target
    }
    assert documented == declared and len(declared) == 4


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        ('HELDOUT_TARGET = {"accuracy": 1.5}', r"HELDOUT_TARGET must be one metric.*1.5"),
        ('HELDOUT_TARGET = {"f1": 0.9}', r"HELDOUT_TARGET must be one metric.*'f1'"),
        ('HELDOUT_TARGET = {"loss": 1, "accuracy": 0.9}', "HELDOUT_TARGET must be one metric"),
        ('HELDOUT_TARGET = {"loss": 0}', "HELDOUT_TARGET must be one metric"),
        ("HELDOUT_TARGET = 0.9", "HELDOUT_TARGET must be one metric"),
        ("RUN_BYTES = 4 * 2**20", r"RUN_BYTES must be a literal.*write the value out"),
        ("RUN_BYTES = 1.5e6", "RUN_BYTES must be a whole number of bytes above 0"),
        ("RUN_BYTES = 0", "RUN_BYTES must be a whole number of bytes above 0"),
        ("RUN_BYTES = True", "RUN_BYTES must be a whole number"),
        ('RUN_STEP_US = {"gpu": 5}', "RUN_STEP_US key 'gpu' is not one of loop, batched"),
        ('RUN_STEP_US = {"loop": None}', r"RUN_STEP_US 'loop': None is not a number .*above 0\."),
        ('RUN_STEP_US = {"batched": -1}', "'batched': -1 is not a number .*above 0 or None"),
        ("RUN_STEP_US = [221, 4.2, 310]", "RUN_STEP_US is list, not a dict"),
        ("RUN_STEP_US = {}\nRUN_STEP_US = {}", "RUN_STEP_US is assigned more than once"),
    ],
)
def test_a_malformed_fact_is_refused_naming_the_file_and_the_fix(tmp_path, facts, expected):
    path = plant(tmp_path, facts="\n" + facts + "\n")
    with pytest.raises(ProblemError, match=expected) as error:
        problems.declaration("mine", tmp_path)
    assert str(path) in str(error.value) and "Fix:" in str(error.value)
    # and the config check says so under the problem's key, before any job
    with pytest.raises(settings.ConfigError, match=r"config key problems\.mine\.problem: .*Fix:"):
        experiment(tmp_path)


@pytest.mark.workflow
def test_the_workflow_reads_a_user_problems_facts(tmp_path):
    """Through Snakefile and common.smk: the dry run states the estimate from the
    file's figures and the cell's summary job takes the file's held-out target."""
    clone = tmp_path / "clone"
    for name in ("workflow", "problems", "profiles"):
        shutil.copytree(REPO / name, clone / name)
    shutil.copy(REPO / "Snakefile", clone / "Snakefile")
    plant(clone / "problems")
    config = tmp_path / "mine.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "seeds": [0],
                "steps": 2,
                "device": "cpu",
                "job_scope": "cell",
                "problems": {"mine": {}},
                "losses": {"mse": {"class": "MSELoss"}},
                "optimizers": {"sgd": {"class": "SGD", "kwargs": {"lr": 0.01}}},
            }
        )
    )
    dry = snakemake(tmp_path / "w", "-n", "-p", configfile=config, snakefile=clone / "Snakefile")
    text = dry.stdout + dry.stderr
    # one run of 2 steps at 1.25 s each, one start-up; 1 GB kept by the run
    assert "runs of 2 steps, needs about 1.42 GB" in text
    assert "training takes roughly 5 s on one core" in text
    assert "--heldout-target=loss:0.5" in text


def test_the_docs_table_of_builtin_figures_is_what_the_files_declare():
    text = (REPO / "docs" / "problems.md").read_text()
    section = text.split("## Facts", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \| ([^|]+) \|$", section, re.M)

    def number(cell):
        cell = cell.strip().replace(",", "")
        return None if cell in ("None", "-") else float(cell)

    documented = {
        name: ([number(cell) for cell in costs.split(" / ")], number(run_bytes))
        for name, costs, run_bytes in rows
    }
    declared = {}
    for name in problems.available():
        facts = problems.declaration(name).facts
        costs = [facts.run_step_us[engine] for engine in problems.RUN_STEP_ENGINES]
        declared[name] = (costs, facts.run_bytes)
    assert documented == declared
    # and the fallbacks the facts table states
    assert cost.STATE_BYTES == 262_144
    assert cost.GUESSED_RUN_STEP_US == {
        "loop": 1000,
        "batched": None,
        "lbfgs_loop": 20000,
        "lbfgs_batched": None,
    }
