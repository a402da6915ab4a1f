"""eval_every: held-out metrics every k steps, in eval mode, untimed, equal across engines."""

import json
import math
import sys

import pytest
import torch

import optbench.problems as problems
from conftest import TRAIN_SCRIPT, training_job
from optbench.engines import batched, training


def hand_curve(name, seed, steps, at, lr=0.01, criterion=None):
    """The plain loop, evaluating the held-out data by hand after the listed steps."""
    instance = problems.build(name, seed, steps, {})
    optimizer = torch.optim.Adam(instance.model.parameters(), lr=lr)
    curve = []
    for step in range(steps):
        optimizer.zero_grad()
        instance.loss(criterion, *instance.batch(step)).backward()
        optimizer.step()
        if step + 1 in at:
            curve.append({"step": step + 1, **instance.evaluate(criterion)})
    return curve


def test_evaluation_steps_are_every_k_and_the_last():
    assert training.evaluation_steps(12, 5) == {5, 10, 12}
    assert training.evaluation_steps(10, 5) == {5, 10}
    assert training.evaluation_steps(10, 0) == set()
    assert training.evaluation_steps(3, 7) == {3}


@pytest.mark.parametrize(
    ("name", "loss"),
    [
        ("breast_cancer_mlp", torch.nn.BCEWithLogitsLoss()),
        ("digits_mlp", torch.nn.CrossEntropyLoss()),
    ],
)
def test_both_engines_record_the_hand_loops_curve(name, loss):
    expected = [hand_curve(name, seed, 12, {5, 10, 12}, criterion=loss) for seed in (0, 1, 2)]
    loop = batched.train_loop(
        [problems.build(name, s, 12, {}) for s in (0, 1, 2)], loss, "Adam", {"lr": 0.01}, 12,
        eval_every=5,
    )  # fmt: skip
    assert [run.curve for run in loop] == expected
    together = batched.train_batched(
        [problems.build(name, s, 12, {}) for s in (0, 1, 2)], loss, "Adam", {"lr": 0.01}, 12,
        eval_every=5,
    )  # fmt: skip
    assert together.engine == "batched"
    assert [run.curve for run in together.runs] == expected  # the same weights, the same bits


def test_a_problem_without_held_out_data_records_no_curve():
    runs = batched.train_loop(
        [problems.build("linear", 0, 6, {})], torch.nn.MSELoss(), "SGD", {"lr": 0.1}, 6,
        eval_every=2,
    )  # fmt: skip
    assert runs[0].curve == []


def test_schedule_free_is_evaluated_at_its_evaluation_point_and_trains_on():
    pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
    criterion = torch.nn.CrossEntropyLoss()
    instance = problems.build("digits_mlp", 0, 8, {})
    optimizer = pytorch_optimizer.ScheduleFreeAdamW(instance.model.parameters(), lr=0.01)
    looped = training.train_instance(instance, criterion, optimizer, 8, eval_every=4)
    # By hand: train mode for the steps, eval mode for each evaluation.
    twin = problems.build("digits_mlp", 0, 8, {})
    hand = pytorch_optimizer.ScheduleFreeAdamW(twin.model.parameters(), lr=0.01)
    hand.train()
    expected = []
    for step in range(8):
        hand.zero_grad()
        twin.loss(criterion, *twin.batch(step)).backward()
        hand.step()
        if step + 1 in (4, 8):
            training_point = [p.detach().clone() for p in twin.model.parameters()]
            hand.eval()
            expected.append({"step": step + 1, **twin.evaluate(criterion)})
            hand.train()
            with torch.no_grad():  # train() is not eval()'s exact inverse in floats
                for weight, value in zip(twin.model.parameters(), training_point, strict=True):
                    weight.copy_(value)
    assert looped.curve == expected
    # Switched back after each evaluation: the steps after it train at the
    # training point, as the hand loop's do (the loop ends in eval mode).
    hand.eval()
    weights = zip(instance.model.parameters(), twin.model.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in weights)


def test_the_training_job_writes_the_curve_into_the_sidecar(tmp_path):
    spec = {
        "problem": {
            "name": "cancer",
            "problem": "breast_cancer_mlp",
            "kind": "binary",
            "kwargs": {"hidden": 16, "batch_size": 32, "heldout_fraction": 0.2},
        },
        "optimizer": {"name": "adam", "class": "Adam", "kwargs": {"lr": 0.01}},
        "loss": {"name": "bce", "class": "BCEWithLogitsLoss", "kwargs": {}},
        "variant": "base",
        "steps": 12,
        "device": "cpu",
        "eval_every": 5,
    }
    command = [sys.executable, str(TRAIN_SCRIPT), "--spec", json.dumps(spec)]
    runs = []
    for seed in (0, 1):
        runs += [
            "--run",
            str(seed),
            str(tmp_path / f"seed{seed}.tsv"),
            str(tmp_path / f"s{seed}.json"),
        ]
    process = training_job([*command, *runs])
    assert process.returncode == 0, process.stderr
    for seed in (0, 1):
        meta = json.loads((tmp_path / f"s{seed}.json").read_text())
        expected = hand_curve(
            "breast_cancer_mlp", seed, 12, {5, 10, 12}, criterion=torch.nn.BCEWithLogitsLoss()
        )
        assert meta["heldout_curve"] == expected
        assert meta["heldout"] == {k: v for k, v in expected[-1].items() if k != "step"}
        assert meta["eval_every"] == 5
        # The per-run table beside the TSV: the same rows, exact as repr writes them.
        table = (tmp_path / f"seed{seed}.heldout.tsv").read_text().splitlines()
        assert table[0] == "step\theldout_loss\theldout_accuracy"
        rows = [line.split("\t") for line in table[1:]]
        assert [int(r[0]) for r in rows] == [5, 10, 12]
        for row, point in zip(rows, expected, strict=True):
            assert float(row[1]) == point["heldout_loss"]
            assert float(row[2]) == point["heldout_accuracy"]
    # Without eval_every the run has no curve, and an earlier run's table goes.
    rerun = [*command[:-1], json.dumps({**spec, "eval_every": 0}), *runs]
    process = training_job(rerun)
    assert process.returncode == 0, process.stderr
    assert not list(tmp_path.glob("*.heldout.tsv"))


# ------------------------------------------------------------------ targets


def test_steps_to_a_heldout_target_are_the_first_evaluated_crossing():
    from optbench.reporting.cells import HeldoutTarget

    curve = [
        {"step": 5, "heldout_loss": 2.0, "heldout_accuracy": 0.5},
        {"step": 10, "heldout_loss": 0.9, "heldout_accuracy": 0.91},
        {"step": 12, "heldout_loss": 1.1, "heldout_accuracy": 0.95},
    ]
    final = {"heldout_loss": 1.1, "heldout_accuracy": 0.95}
    assert HeldoutTarget.parse("accuracy:0.9").steps_to(curve, final, 12) == 10.0
    assert HeldoutTarget.parse("accuracy:0.95").steps_to(curve, final, 12) == 12.0
    assert HeldoutTarget.parse("loss:1.0").steps_to(curve, final, 12) == 10.0
    assert math.isnan(HeldoutTarget.parse("loss:0.5").steps_to(curve, final, 12))  # censored
    # Without a curve (no eval_every) only the final evaluation, after the last step, counts.
    assert HeldoutTarget.parse("accuracy:0.9").steps_to([], final, 12) == 12.0
    assert math.isnan(HeldoutTarget.parse("").steps_to(curve, final, 12))  # no target
    assert math.isnan(HeldoutTarget.parse("accuracy:0.9").steps_to([], None, 12))  # no data
    with pytest.raises(ValueError, match="expected loss:VALUE or accuracy:VALUE"):
        HeldoutTarget.parse("f1:0.9")


def test_targets_come_from_the_config_else_the_builtin_defaults():
    import yaml

    from conftest import SCHEMA
    from optbench.planning import settings
    from optbench.reporting.analysis_context import heldout_target_text

    config = {
        "problems": {"digits_mlp": {}, "cnn": {"problem": "digits_cnn"}, "linear": {}},
        "losses": {"ce": {"class": "CrossEntropyLoss"}, "mse": {"class": "MSELoss"}},
        "heldout_targets": {"digits_mlp/ce": {"accuracy": 0.8}},
    }
    experiment = settings.validate(yaml.safe_load(yaml.safe_dump(config)), SCHEMA)
    text = {
        (problem, loss): heldout_target_text(
            experiment.heldout_targets,
            problem,
            experiment.problems[problem].facts.heldout_target,
            loss,
        )
        for problem, loss in [("digits_mlp", "ce"), ("cnn", "ce"), ("linear", "mse")]
    }
    assert text == {
        ("digits_mlp", "ce"): "accuracy:0.8",  # the config's
        ("cnn", "ce"): "accuracy:0.9",  # digits_cnn's default, declared in its file
        ("linear", "mse"): "",  # no held-out data, no target
    }
    with pytest.raises(
        settings.ConfigError, match="heldout_targets.digits_mlp/mse: not a problem/loss"
    ):
        settings.validate({**config, "heldout_targets": {"digits_mlp/mse": {"loss": 1.0}}}, SCHEMA)


@pytest.mark.workflow
def test_a_run_with_eval_every_reports_steps_to_the_heldout_target(tmp_path):
    import pandas as pd
    import yaml

    from conftest import snakemake

    config = {
        "seeds": [0, 1],
        "steps": 30,
        "eval_every": 10,
        "baseline": "sgd",
        "problems": {"breast_cancer_mlp": {}},
        "losses": {"bce": {"class": "BCEWithLogitsLoss"}},
        "optimizers": {
            "sgd": {"class": "SGD", "kwargs": {"lr": 0.1}},
            "adam": {"class": "Adam", "kwargs": {"lr": 0.01}},
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    # No loss figures, explorer or Parquet tables: nothing here reads them (the
    # comparison figures are made: baseline.png is checked).
    snakemake(
        tmp_path,
        "--cores",
        "2",
        "--omit-from",
        "plot_curves",
        "explorer",
        "columnar",
        configfile=path,
    )
    runs = pd.read_csv(tmp_path / "results/summary/runs.tsv", sep="\t")
    for row in runs.itertuples():
        sidecar = (
            tmp_path
            / f"results/runs/breast_cancer_mlp/bce/{row.optimizer}/base/seed{row.seed}.json"
        )
        curve = json.loads(sidecar.read_text())["heldout_curve"]
        assert [point["step"] for point in curve] == [10, 20, 30]
        # breast_cancer_mlp's default target: held-out accuracy at least 0.95.
        hit = [float(p["step"]) for p in curve if p["heldout_accuracy"] >= 0.95]
        assert row.heldout_target_accuracy == 0.95 and math.isnan(row.heldout_target_loss)
        if hit:
            assert row.steps_to_heldout_target == hit[0]
        else:
            assert math.isnan(row.steps_to_heldout_target)  # censored
    board = pd.read_csv(tmp_path / "results/summary/leaderboard.tsv", sep="\t").set_index(
        "optimizer"
    )
    for optimizer, rows in runs.groupby("optimizer"):
        assert (
            board.loc[optimizer, "share_heldout_target"]
            == rows["steps_to_heldout_target"].notna().mean()
        )
    profiles = pd.read_csv(tmp_path / "results/summary/performance_profiles.tsv", sep="\t")
    assert set(profiles["cost"]) == {
        "steps", "evaluations", "time", "heldout_steps", "heldout_time"
    }  # fmt: skip
    # Time to the target: its steps at the step time each job measured alone.
    for row in runs.itertuples():
        sidecar = (
            tmp_path
            / f"results/runs/breast_cancer_mlp/bce/{row.optimizer}/base/seed{row.seed}.json"
        )
        timing = json.loads(sidecar.read_text())["step_timing"]
        assert timing["threads"] == 1 and timing["timed_steps"] == 20 and timing["cpu"]
        assert row.seconds_per_step == timing["seconds_per_step"] > 0
        if not math.isnan(row.steps_to_heldout_target):
            assert row.time_to_heldout_target == row.steps_to_heldout_target * row.seconds_per_step
    # Adam against the baseline SGD, in steps to the held-out target: SGD never
    # reaches it in the median, Adam does.
    (row,) = pd.read_csv(tmp_path / "results/summary/baseline.tsv", sep="\t").itertuples()
    assert (row.optimizer, row.baseline, row.measure) == ("adam", "sgd", "steps_to_heldout_target")
    adam = runs[runs["optimizer"] == "adam"]["steps_to_heldout_target"].fillna(math.inf)
    sgd = runs[runs["optimizer"] == "sgd"]["steps_to_heldout_target"].fillna(math.inf)
    assert row.speedup == (math.inf if sgd.median() == math.inf else sgd.median() / adam.median())
    assert (tmp_path / "results/figures/baseline.png").is_file()


EVALUATION_INVARIANCE = [
    ("torch.optim", "Adam", {"lr": 0.01}),
    ("torch.optim", "SGD", {"lr": 0.1, "momentum": 0.9}),
    ("torch.optim", "LBFGS", {"lr": 0.5, "max_iter": 3}),
    ("pytorch_optimizer", "ScheduleFreeAdamW", {"lr": 0.01}),
    ("pytorch_optimizer", "ScheduleFreeSGD", {"lr": 0.1}),
    ("pytorch_optimizer", "ScheduleFreeRAdam", {"lr": 0.01}),
]


@pytest.mark.parametrize(("module", "name", "kwargs"), EVALUATION_INVARIANCE)
@pytest.mark.parametrize("problem", ["digits_mlp", "breast_cancer_mlp"])
def test_evaluating_never_changes_the_training_losses(problem, module, name, kwargs):
    """Training losses with eval_every k are bit-identical to eval_every 0.

    Schedule-free optimizers move the weights to the evaluation point and back;
    that round trip is not exact in floats (before the fix: 5 of 6 runs differed
    from step 35 on), so an evaluation must leave the training point's bits alone.
    """
    package = pytest.importorskip(module)
    criterion = torch.nn.CrossEntropyLoss() if problem == "digits_mlp" else None
    if problem == "breast_cancer_mlp":
        criterion = torch.nn.BCEWithLogitsLoss()
    steps = 60

    def losses(eval_every):
        instance = problems.build(problem, 3, steps, {})
        optimizer = getattr(package, name)(instance.model.parameters(), **kwargs)
        run = training.train_instance(instance, criterion, optimizer, steps, eval_every=eval_every)
        return run.losses, [p.detach().clone() for p in instance.model.parameters()], run

    plain, plain_weights, _ = losses(0)
    for every in (1, 7):
        evaluated, weights, run = losses(every)
        assert len(run.curve) == len(training.evaluation_steps(steps, every))
        assert evaluated == plain, f"eval_every {every} changed the training losses"
        assert all(torch.equal(a, b) for a, b in zip(weights, plain_weights, strict=True))
