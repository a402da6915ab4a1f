"""The size and budget axes: problems declare sizes and parameter counts, a
config entry expands over them, each budget is its own run whose schedule ends
at its own last step.

References: the parameters of the models actually built (torch's numel), and
the warm-up + cosine rate written out by hand for each budget's own length.
"""

import json
import math
import sys

import pytest
import yaml

import optbench.problems as problems
from conftest import SCHEMA, TRAIN_SCRIPT, training_job
from optbench.planning import settings


@pytest.mark.parametrize("name", ["text_transformer", "digits_mlp"])
def test_each_declared_size_has_the_parameter_count_of_the_model_built(name):
    declaration = problems.declaration(name)
    assert len(declaration.facts.sizes) >= 3
    counts = []
    for size, kwargs in declaration.facts.sizes.items():
        model = problems.build(name, 0, 2, kwargs).model
        built = sum(parameter.numel() for parameter in model.parameters())
        declared = declaration.facts.count_at({**declaration.parameters, **kwargs})
        assert declared == built, size
        counts.append(built)
    assert counts == sorted(counts)  # smallest first
    assert counts[-1] / counts[0] >= 8


def validate(problem_entry: dict, **extra):
    config = {
        "problems": {"text": problem_entry},
        "losses": {"ce": {"class": "CrossEntropyLoss"}},
        "optimizers": {"adamw": {"class": "AdamW", "kwargs": {"lr": 0.001}}},
        **extra,
    }
    return settings.validate(
        yaml.safe_load(yaml.safe_dump(config)), SCHEMA, check_torch=False, memory_bytes=None
    )


def test_an_entry_expands_into_one_problem_per_size_and_budget():
    experiment = validate(
        {"problem": "text_transformer", "sizes": ["m", "xs"], "budgets": [200, 50]}
    )
    names = list(experiment.problems)
    # Sizes in the file's order (smallest first), budgets ascending.
    assert names == ["text-xs-b50", "text-xs-b200", "text-m-b50", "text-m-b200"]
    large = experiment.problems["text-m-b200"]
    assert (large.family, large.size, large.steps) == ("text", "m", 200)
    assert (large.kwargs["width"], large.kwargs["layers"]) == (64, 2)
    assert large.parameter_count == 135168
    # The size and its count are run settings, so the sidecar records them.
    spec = experiment.run_spec(next(c for c in experiment.cells() if c.problem == large.name))
    assert (spec["problem"]["size"], spec["problem"]["parameter_count"]) == ("m", 135168)
    assert spec["steps"] == 200
    # only: names the entry, which keeps its whole family.
    kept = validate({"problem": "text_transformer", "sizes": "all"}, only={"problems": ["text"]})
    assert list(kept.problems) == ["text-xs", "text-s", "text-m", "text-l"]


def test_an_entry_without_axes_keeps_its_name_and_settings():
    experiment = validate({"problem": "text_transformer", "steps": 30})
    (problem,) = experiment.problems.values()
    assert (problem.name, problem.family, problem.size) == ("text", None, None)
    assert "size" not in problem.as_dict() and "parameter_count" not in problem.as_dict()


@pytest.mark.parametrize(
    ("entry", "said"),
    [
        ({"problem": "text_transformer", "sizes": ["huge"]}, "'huge' not among the sizes"),
        ({"problem": "linear", "sizes": ["s"]}, "declares no sizes"),
        (
            {"problem": "text_transformer", "sizes": ["s"], "kwargs": {"width": 8}},
            "width is set by size 's' too",
        ),
        ({"problem": "text_transformer", "budgets": [10], "steps": 10}, "both steps and budgets"),
    ],
)
def test_axes_that_cannot_be_used_are_refused_with_the_fix(entry, said):
    with pytest.raises(settings.ConfigError) as error:
        validate(entry)
    assert said in str(error.value) and "Fix" in str(error.value)


def test_each_budget_is_its_own_run_whose_schedule_ends_at_its_last_step(tmp_path):
    """The lr column of a 10-step and a 20-step run of one entry: each warms up
    and decays over its own length (a shorter budget is not a truncated longer
    run), and their seed's losses start from the same weights."""
    experiment = validate(
        {"problem": "digits_mlp", "sizes": ["xs"], "budgets": [10, 20]},
        optimizers={
            "adamw": {
                "class": "AdamW",
                "kwargs": {"lr": 0.01},
                "schedule": {"family": "warmup_cosine", "warmup": 0.1},
            }
        },
    )
    columns = {}
    for cell in experiment.cells():
        tsv, sidecar = tmp_path / f"{cell.problem}.tsv", tmp_path / f"{cell.problem}.json"
        process = training_job(
            [sys.executable, TRAIN_SCRIPT, "--spec", experiment.run_spec_json(cell)]
            + ["--run", "0", tsv, sidecar]
        )
        assert process.returncode == 0, process.stderr
        rows = [line.split("\t") for line in tsv.read_text().splitlines()[1:]]
        columns[experiment.problems[cell.problem].steps] = rows
        assert json.loads(sidecar.read_text())["problem"]["parameter_count"] == 610
    for steps, rows in columns.items():
        warmup = round(0.1 * steps)

        def by_hand(t, steps=steps, warmup=warmup):
            if t < warmup:
                return 0.01 * (t + 1) / warmup
            return 0.01 * (1 + math.cos(math.pi * (t - warmup) / (steps - warmup))) / 2

        assert len(rows) == steps
        assert [float(row[3]) for row in rows] == pytest.approx(
            [by_hand(t) for t in range(steps)], rel=1e-12
        )
    # Step 5 of the short run is deep in its decay; the long run is at its peak there.
    assert float(columns[10][5][3]) < 0.006 < float(columns[20][5][3])
    assert columns[10][0][1] == columns[20][0][1]  # same seed: same initial loss


def test_tune_at_marks_the_tuned_blocks_and_refuses_names_off_the_axes():
    experiment = validate(
        {
            "problem": "digits_mlp",
            "sizes": ["xs", "s", "m"],
            "budgets": [50, 200],
            "tune_at": {"sizes": ["xs"], "budgets": [50]},
        }
    )
    tuned = [name for name, problem in experiment.problems.items() if problem.tuned]
    assert tuned == ["text-xs-b50"]  # the entry is named text in validate()
    with pytest.raises(settings.ConfigError) as error:
        validate({"problem": "digits_mlp", "budgets": [50], "tune_at": {"budgets": [100]}})
    assert "tune_at.budgets: 100 not among the entry's budgets" in str(error.value)


def test_untuned_blocks_take_the_setting_of_the_nearest_tuned_size_and_budget():
    import pandas as pd

    from optbench.reporting import scaling

    members = {
        f"f-{size}-b{budget}": {
            "family": "f",
            "size": size,
            "budget": budget,
            "parameters": count,
            "tuned": (size, budget) in {("xs", 50), ("m", 50)},
        }
        for size, count in (("xs", 610), ("s", 2410), ("m", 9610))
        for budget in (50, 200)
    }
    # s (2,410) is 3.95x above xs (610) and 3.99x below m (9,610): xs is nearer.
    assert scaling.transfer_sources(members) == {
        "f-xs-b200": "f-xs-b50",
        "f-s-b50": "f-xs-b50",
        "f-s-b200": "f-xs-b50",
        "f-m-b200": "f-m-b50",
    }
    choice = pd.DataFrame(
        {
            "problem": list(members),
            "loss": "ce",
            "optimizer": "adamw",
            "variant": [f"t{i}" for i in range(6)],
            "score": [0.1 * i for i in range(6)],
            "n_candidates": 8,
            "n_tied": 1,
            "n_tuning_seeds": 3,
        }
    )
    moved = scaling.transfer_selection(choice, members).set_index("problem")
    assert moved.loc["f-m-b200", "variant"] == "t4"  # f-m-b50's
    assert moved.loc["f-s-b200", ["variant", "tuned_at"]].tolist() == ["t0", "f-xs-b50"]
    assert moved.loc["f-xs-b50", ["variant", "tuned_at"]].tolist() == ["t0", "f-xs-b50"]
    # Tuned everywhere: the selection is left as it is, without the column.
    everywhere = {name: {**facts, "tuned": True} for name, facts in members.items()}
    assert scaling.transfer_selection(choice, everywhere).equals(choice)


def test_the_dry_run_prices_a_larger_size_by_its_parameter_count():
    from optbench.planning import cost

    def seconds(sizes):
        experiment = validate({"problem": "digits_mlp", "sizes": sizes, "steps": 100})
        return cost.training_seconds(experiment, jobs=0)

    # hidden 128 has 9,610 parameters, the default (hidden 32) 2,410; xs (610) is
    # priced as the default, not below it (start-up costs dominate small models).
    assert seconds(["m"]) == pytest.approx(seconds(["s"]) * 9610 / 2410, rel=1e-12)
    assert seconds(["xs"]) == pytest.approx(seconds(["s"]), rel=1e-12)


def test_the_scaling_study_meets_the_issues_minimums():
    """configs/scaling.yaml: tuned AdamW with warm-up + cosine as the baseline
    against Muon, SOAP and Lion, equal searches of at least 8 trials, 3+ sizes
    spanning 8x+ in parameters, 3+ budgets spanning 4x+, 3+ tuning and 10+
    evaluation seeds."""
    from conftest import REPO

    config = yaml.safe_load((REPO / "configs" / "scaling.yaml").read_text())
    experiment = settings.validate(config, SCHEMA, check_torch=False, memory_bytes=None)
    assert experiment.baseline == "adamw"
    adamw = experiment.optimizers["adamw"]
    assert adamw.cls == "AdamW"
    assert {v.schedule["family"] for v in adamw.variants.values()} == {"warmup_cosine"}
    classes = {o.cls.rsplit(".", 1)[-1] for o in experiment.optimizers.values()}
    assert {"Muon", "SOAP", "Lion"} <= classes
    trials = {name: len(o.variants) - 1 for name, o in experiment.optimizers.items()}
    assert len(set(trials.values())) == 1 and min(trials.values()) >= 8
    counts = sorted({p.parameter_count for p in experiment.problems.values()})
    budgets = sorted({p.steps for p in experiment.problems.values()})
    assert len(counts) >= 3 and counts[-1] / counts[0] >= 8
    assert len(budgets) >= 3 and budgets[-1] / budgets[0] >= 4
    assert len(experiment.tuning_seeds) >= 3 and len(experiment.seeds) >= 10
    # the shorter budgets are read mid-run from held-out curves
    assert all(budget % experiment.eval_every == 0 for budget in budgets[:-1])
