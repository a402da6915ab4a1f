"""Learning-rate schedules: closed forms, both engines, the TSV's lr column, the checks.

References are independent of optbench.schedules: torch's own lr_scheduler
classes (which compute the same shapes recursively) and hand-written loops
that set each step's rate themselves.
"""

import json
import math
import sys

import pytest
import torch
import yaml

import optbench.problems as problems
from conftest import SCHEMA, TRAIN_SCRIPT, training_job
from optbench import schedules
from optbench.engines import batched, scheduling
from optbench.planning import settings

STEPS = 40


def torch_factors(make_scheduler, steps=STEPS) -> list[float]:
    """The factors a torch.optim.lr_scheduler class gives step by step (base lr 1)."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = make_scheduler(optimizer)
    factors = []
    for _ in range(steps):
        factors.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return factors


def family(name, **values):
    return [schedules.factor({"family": name, **values}, t, STEPS) for t in range(STEPS)]


def test_warmup_reaches_the_base_rate_on_its_last_step():
    # W = round(0.1 x 40) = 4 warm-up steps: 1/4, 2/4, 3/4, 1.
    factors = family("warmup", warmup=0.1)
    assert factors[:5] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert set(factors[4:]) == {1.0}
    linear = torch_factors(lambda o: torch.optim.lr_scheduler.LinearLR(o, 0.25, 1.0, 3))
    assert factors == pytest.approx(linear, rel=1e-12)


@pytest.mark.parametrize("final", [0.0, 0.1])
def test_warmup_cosine_against_torch_cosine_annealing(final):
    factors = family("warmup_cosine", warmup=0.1, final=final)
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]  # warm-up end: the base rate
    # The decay phase is torch's cosine annealing over the remaining 36 steps.
    cosine = torch_factors(
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=36, eta_min=final), 36
    )
    assert factors[4:] == pytest.approx(cosine, rel=1e-12, abs=1e-15)
    assert factors[4 + 18] == pytest.approx(final + (1 - final) / 2, rel=1e-15)  # the middle
    last = final + (1 - final) * (1 + math.cos(math.pi * 35 / 36)) / 2
    assert factors[-1] == pytest.approx(last, rel=1e-15)  # the last step, just above final


def test_warmup_linear_against_torch_linear_lr():
    factors = family("warmup_linear", warmup=0.05, final=0.2)  # W = 2
    assert factors[:2] == [0.5, 1.0]
    linear = torch_factors(lambda o: torch.optim.lr_scheduler.LinearLR(o, 1.0, 0.2, 38), 38)
    assert factors[2:] == pytest.approx(linear, rel=1e-12)
    assert factors[-1] == pytest.approx(0.2 + 0.8 / 38, rel=1e-15)


def test_warmup_stable_decay():
    # W = 2, D = round(0.2 x 40) = 8: stable until step 31, then linear towards 0.
    factors = family("warmup_stable_decay", warmup=0.05, decay=0.2, final=0.0)
    assert factors[:2] == [0.5, 1.0]
    assert set(factors[2:33]) == {1.0}
    assert factors[32:] == pytest.approx([1 - k / 8 for k in range(8)], rel=1e-15)


def test_step_decay_against_torch_step_lr():
    factors = family("step", every=0.25, gamma=0.5)  # every 10 steps
    assert factors == pytest.approx(
        torch_factors(lambda o: torch.optim.lr_scheduler.StepLR(o, 10, 0.5)), rel=1e-15
    )
    assert (factors[9], factors[10], factors[39]) == (1.0, 0.5, 0.125)


def test_constant_and_no_schedule_are_one():
    assert family("constant") == [1.0] * STEPS
    assert [schedules.factor(None, t, STEPS) for t in range(STEPS)] == [1.0] * STEPS


# ----------------------------------------------------------- both engines


def hand_loop(seed, base_lr, rate_of_step, steps=STEPS):
    """The article's loop with the step's rate set by hand: (losses, rates)."""
    instance = problems.build("linear", seed, steps, {})
    optimizer = torch.optim.AdamW(instance.model.parameters(), lr=base_lr)
    criterion = torch.nn.MSELoss()
    losses, rates = [], []
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = rate_of_step(step)
        rates.append(optimizer.param_groups[0]["lr"])
        inputs, targets = instance.batch(step)
        optimizer.zero_grad()
        loss = criterion(instance.model(inputs), targets)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, rates


def warmup_cosine_by_hand(base, step, warmup_steps=4, steps=STEPS):
    if step < warmup_steps:
        return base * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / (steps - warmup_steps)
    return base * (1 + math.cos(math.pi * progress)) / 2


@pytest.mark.parametrize("engine", ["batched", "loop"])
def test_both_engines_follow_the_schedule_bit_for_bit(engine):
    seeds = [0, 1, 2]
    cosine = {"family": "warmup_cosine", "warmup": 0.1}
    warm = {"family": "warmup", "warmup": 0.1}
    # Two variants (two schedules) in one batch: each keeps its own rates.
    schedule_list = [cosine, cosine, warm]
    instances = [problems.build("linear", seed, STEPS, {}) for seed in seeds]
    train = batched.train_batched if engine == "batched" else batched.train_loop
    result = train(
        instances,
        torch.nn.MSELoss(),
        "AdamW",
        {"lr": 0.05},
        STEPS,
        schedules=schedule_list,
    )
    runs = result.runs if engine == "batched" else result
    if engine == "batched":
        assert result.engine == "batched" and result.details["variants"] == 2
    for seed, run in zip(seeds[:2], runs[:2], strict=True):
        losses, rates = hand_loop(seed, 0.05, lambda t: warmup_cosine_by_hand(0.05, t))
        assert run.losses == losses
        assert run.lrs == rates
    losses, rates = hand_loop(2, 0.05, lambda t: 0.05 * min(1.0, (t + 1) / 4))
    assert (runs[2].losses, runs[2].lrs) == (losses, rates)


def test_a_torch_lr_scheduler_class_in_the_batched_engine_equals_its_loop():
    instances = [problems.build("linear", seed, STEPS, {}) for seed in (0, 1)]
    schedule = {"class": "StepLR", "step_size": 10, "gamma": 0.5}
    result = batched.train_batched(
        instances, torch.nn.MSELoss(), "AdamW", {"lr": 0.05}, STEPS, schedules=schedule
    )
    assert result.engine == "batched"
    for seed, run in zip((0, 1), result.runs, strict=True):
        losses, rates = hand_loop(seed, 0.05, lambda t: 0.05 * 0.5 ** (t // 10))
        assert run.losses == losses
        assert run.lrs == pytest.approx(rates, rel=1e-15)


def test_lbfgs_takes_a_schedule_in_the_loop():
    instance = problems.build("linear", 0, 10, {})
    optimizer = torch.optim.LBFGS(instance.model.parameters(), lr=0.5)
    from optbench.engines.training import train_instance

    looped = train_instance(
        instance, torch.nn.MSELoss(), optimizer, 10, schedule={"family": "step", "every": 0.5}
    )
    assert looped.lrs == [0.5] * 5 + [0.05] * 5


def test_the_recorded_rate_of_a_self_tuning_optimizer_is_lr_times_d():
    pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
    instance = problems.build("linear", 0, 5, {})
    optimizer = pytorch_optimizer.Prodigy(instance.model.parameters(), lr=1.0)
    rates = scheduling.LearningRates(optimizer, None, 5)
    criterion = torch.nn.MSELoss()
    for step in range(3):
        inputs, targets = instance.batch(step)
        optimizer.zero_grad()
        criterion(instance.model(inputs), targets).backward()
        optimizer.step()
    group = optimizer.param_groups[0]
    assert group["d"] != 1e-6  # Prodigy's estimate has moved from its start
    assert rates.current() == group["lr"] * group["d"]


def test_a_schedule_free_optimizer_takes_a_warmup_only():
    pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
    instance = problems.build("linear", 0, 10, {})
    optimizer = pytorch_optimizer.ScheduleFreeAdamW(instance.model.parameters(), lr=0.01)
    with pytest.raises(scheduling.ScheduleRunError, match="takes a warm-up only"):
        scheduling.LearningRates(optimizer, {"family": "warmup_cosine"}, 10)
    rates = scheduling.LearningRates(optimizer, {"family": "warmup", "warmup": 0.2}, 10)
    rates.before(0)
    assert rates.current() == 0.005


def test_a_bad_lr_scheduler_keyword_fails_the_job_naming_the_entry():
    from optbench.engines import training

    instance = problems.build("linear", 0, 10, {})
    optimizer = torch.optim.SGD(instance.model.parameters(), lr=0.1)
    with pytest.raises(training.RunError) as error:
        training.learning_rates(optimizer, {"class": "StepLR"}, 10, "sgd")
    assert "config key optimizers.sgd.schedule: torch.optim.lr_scheduler.StepLR" in str(error.value)
    assert "step_size" in str(error.value) and "Fix" in str(error.value)


def test_the_training_job_writes_each_steps_rate(tmp_path):
    spec = {
        "problem": {"name": "linear", "problem": "linear", "kind": "regression", "kwargs": {}},
        "optimizer": {
            "name": "adamw",
            "class": "AdamW",
            "kwargs": {"lr": 0.05},
            "schedule": {"family": "warmup_cosine", "warmup": 0.1},
        },
        "loss": {"name": "mse", "class": "MSELoss", "kwargs": {}},
        "variant": "base",
        "steps": STEPS,
        "device": "cpu",
    }
    tsv, sidecar = tmp_path / "seed3.tsv", tmp_path / "seed3.json"
    command = [sys.executable, str(TRAIN_SCRIPT), "--spec", json.dumps(spec)]
    process = training_job([*command, "--run", "3", tsv, sidecar])
    assert process.returncode == 0, process.stderr
    rows = [line.split("\t") for line in tsv.read_text().splitlines()[1:]]
    losses, rates = hand_loop(3, 0.05, lambda t: warmup_cosine_by_hand(0.05, t))
    assert [float(row[1]) for row in rows] == losses
    assert [float(row[3]) for row in rows] == rates
    assert json.loads(sidecar.read_text())["optimizer"]["schedule"] == spec["optimizer"]["schedule"]


# ------------------------------------------------------------- planning


def validated(optimizers: dict, **extra):
    config = {"optimizers": optimizers, "tuning_seeds": [100], **extra}
    return settings.validate(yaml.safe_load(yaml.safe_dump(config)), SCHEMA, memory_bytes=None)


def test_swept_schedule_parameters_make_named_variants_with_their_schedules():
    experiment = validated(
        {
            "adamw": {
                "class": "AdamW",
                "kwargs": {"lr": 0.01},
                "schedule": {"family": "warmup_cosine"},
                "sweep": {"schedule.warmup": [0.0, 0.2], "lr": [0.01]},
            }
        }
    )
    variants = experiment.optimizers["adamw"].variants
    assert list(variants) == ["base", "lr0.01-schedule_warmup0.0", "lr0.01-schedule_warmup0.2"]
    assert variants["base"].schedule == {"family": "warmup_cosine"}
    assert variants["lr0.01-schedule_warmup0.2"].schedule == {
        "family": "warmup_cosine",
        "warmup": 0.2,
    }
    assert variants["lr0.01-schedule_warmup0.2"].kwargs == {"lr": 0.01}  # no schedule key
    cell = next(c for c in experiment.cells() if c.variant == "lr0.01-schedule_warmup0.2")
    assert experiment.run_spec(cell)["optimizer"]["schedule"]["warmup"] == 0.2


def test_a_searched_warmup_fraction_is_drawn_like_a_keyword_argument():
    experiment = validated(
        {
            "adamw": {
                "class": "AdamW",
                "kwargs": {"lr": 0.01},
                "schedule": {"family": "warmup_linear", "final": 0.1},
                "search": {
                    "trials": 4,
                    "space": {
                        "lr": {"scale": "log", "low": 1e-4, "high": 1.0},
                        "schedule.warmup": {"scale": "linear", "low": 0.0, "high": 0.3},
                    },
                },
            }
        }
    )
    variants = list(experiment.optimizers["adamw"].variants.values())[1:]
    assert len(variants) == 4
    for variant in variants:
        warmup = variant.swept["schedule.warmup"]
        assert 0.0 <= warmup <= 0.3
        assert variant.schedule == {"family": "warmup_linear", "final": 0.1, "warmup": warmup}
        assert f"schedule_warmup{warmup!r}" in variant.name
        assert set(variant.kwargs) == {"lr"}


def test_a_job_of_several_variants_carries_each_variants_schedule():
    from optbench.planning import jobs

    experiment = validated(
        {
            "sgd": {
                "class": "SGD",
                "kwargs": {"lr": 0.1},
                "schedule": {"family": "step"},
                "sweep": {"schedule.gamma": [0.5, 0.1]},
            }
        },
        job_scope="loss",
    )
    cells = [c for c in experiment.cells() if c.loss == "mse"]
    text = jobs.argument(experiment, cells, (0,), "{problem}/{variant}.tsv", "{variant}.json")
    runs = {run.spec["variant"]: run.spec["optimizer"] for run in jobs.expand(text)}
    assert runs["schedule_gamma0.5"]["schedule"] == {"family": "step", "gamma": 0.5}
    assert runs["schedule_gamma0.1"]["schedule"] == {"family": "step", "gamma": 0.1}
    assert runs["base"]["schedule"] == {"family": "step"}
    # An entry without a schedule keeps its runs' settings as they were: no key at all.
    plain = validated({"sgd": {"class": "SGD", "kwargs": {"lr": 0.1}}})
    assert "schedule" not in plain.run_spec(plain.cells()[0])["optimizer"]
