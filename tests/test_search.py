"""Search spaces (optbench.planning.search): trials from a scrambled Halton sequence."""

import math

import pytest
import yaml
from scipy.stats import qmc

from conftest import REPO, SCHEMA, planned_jobs, snakemake, snakemake_forked
from optbench.planning import search, settings

SPACE = {
    "lr": {"scale": "log", "low": 1.0e-5, "high": 1.0},
    "weight_decay": {"scale": "linear", "low": 0.0, "high": 0.1},
    "betas.1": {"scale": "one_minus_log", "low": 0.9, "high": 0.9999},
    "steps_per": {"scale": "integer", "low": 1, "high": 4},
}
KWARGS = {"lr": 0.001, "betas": [0.9, 0.999]}


def test_trial_k_depends_only_on_k_so_adding_trials_keeps_the_others():
    few = search.expand_search(KWARGS, {"trials": 5, "space": SPACE})
    many = search.expand_search(KWARGS, {"trials": 12, "space": SPACE})
    assert few == many[:6]  # base + 5 trials, names and values alike
    assert len({v.name for v in many}) == 13
    other_seed = search.expand_search(KWARGS, {"trials": 5, "space": SPACE, "seed": 1})
    assert [v.name for v in other_seed[1:]] != [v.name for v in few[1:]]


def test_values_follow_each_scale_from_the_halton_points():
    variants = search.expand_search(KWARGS, {"trials": 64, "space": SPACE})[1:]
    # the independent reference: scipy's points, in sorted name order
    names = sorted(SPACE)
    units = qmc.Halton(d=len(names), scramble=True, seed=0).random(64)
    for variant, point in zip(variants, units, strict=True):
        unit = dict(zip(names, point, strict=True))
        lr = 10 ** (-5 + 5 * unit["lr"])
        assert variant.kwargs["lr"] == pytest.approx(lr, rel=5e-3)  # 3 significant digits
        assert variant.kwargs["lr"] == float(f"{variant.kwargs['lr']:.3g}")
        assert variant.kwargs["weight_decay"] == pytest.approx(0.1 * unit["weight_decay"], abs=1e-3)
        beta2 = 1 - math.exp(math.log(1e-4) + (1 - unit["betas.1"]) * math.log(1e3))
        # rounded in its distance from 1 (3 significant digits there)
        assert 1 - variant.kwargs["betas"][1] == pytest.approx(1 - beta2, rel=5e-3)
        assert 0.9 <= variant.kwargs["betas"][1] < 1.0  # never rounded up to 1
        assert variant.kwargs["betas"][0] == 0.9
        assert variant.kwargs["steps_per"] == 1 + math.floor(4 * unit["steps_per"])
    # the integers share the trials almost evenly (low discrepancy; independent
    # uniform draws would spread 16 +- 3.5 per value)
    counts = [sum(v.kwargs["steps_per"] == k for v in variants) for k in range(1, 5)]
    assert sum(counts) == 64 and max(counts) - min(counts) <= 2, counts


def test_names_are_short_readable_and_the_same_every_time():
    first = search.expand_search(KWARGS, {"trials": 3, "space": SPACE})
    again = search.expand_search(KWARGS, {"trials": 3, "space": SPACE})
    assert [v.name for v in first] == [v.name for v in again]
    name = first[1].name
    assert name.startswith("betas_1_0.9") and "-lr" in name and "-steps_per" in name
    assert search.trial_name({"lr": 0.001, "betas.1": 0.99}) == "betas_1_0.99-lr0.001"


def config(optimizers, **extra):
    return {
        "seeds": [0, 1],
        "tuning_seeds": [100],
        "steps": 5,
        "device": "cpu",
        "problems": {"linear": {"kwargs": {"dim": 20}}},
        "losses": {"mse": {"class": "MSELoss"}},
        "optimizers": optimizers,
        **extra,
    }


def refused(entry) -> str:
    with pytest.raises(settings.ConfigError) as error:
        settings.validate(config({"x": entry}), SCHEMA, memory_bytes=None)
    return str(error.value)


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"lr": {"scale": "log", "low": 1.0, "high": 0.1}}, "low (1.0) must be below high (0.1)"),
        ({"lr": {"scale": "log", "low": 0.0, "high": 0.1}}, "a log range must stay above 0"),
        (
            {"betas.1": {"scale": "one_minus_log", "low": 0.9, "high": 1.0}},
            "a one_minus_log range lies inside (0, 1)",
        ),
        ({"lr": {"scale": "integer", "low": 1, "high": 5}}, "an integer range, but"),
        ({"lr": {"scale": "cubic", "low": 1, "high": 5}}, "scale 'cubic' is not one of"),
        ({"momentum": {"scale": "linear", "low": 0.0, "high": 0.9}}, "does not accept 'momentum'"),
        ({"betas.2": {"scale": "linear", "low": 0.0, "high": 0.9}}, "searches element 2 of betas"),
    ],
)
def test_bad_ranges_are_refused_naming_the_key(space, message):
    entry = {
        "class": "Adam",
        "kwargs": {"betas": [0.9, 0.999]},
        "search": {"trials": 4, "space": space},
    }
    text = refused(entry)
    assert "config key optimizers.x.search.space." in text and message in text


@pytest.mark.parametrize("schedule", [None, {"family": "warmup_cosine", "warmup": 0.1}])
def test_a_range_with_other_keys_is_refused_with_or_without_a_schedule(schedule):
    """A guess such as {low, high, log: true} (with a schedule family the variants
    were drawn before the range was checked: a KeyError traceback)."""
    entry = {
        "class": "AdamW",
        "kwargs": {"lr": 1e-3},
        "search": {"trials": 4, "space": {"lr": {"low": 1e-4, "high": 0.1, "log": True}}},
    }
    if schedule:
        entry["schedule"] = schedule
    text = refused(entry)
    assert "config key optimizers.x.search.space.lr: a range is {scale:" in text
    assert "Fix: give exactly these three keys" in text


def test_a_search_is_one_way_to_tune_and_gets_the_same_budget_as_the_others():
    entry = {"class": "SGD", "kwargs": {"lr": 0.1}, "search": {"trials": 4, "space": SPACE_LR}}
    assert "both sweep and search" in refused(entry | {"sweep": {"lr": [0.1, 0.2]}})
    unequal = config(
        {
            "a": entry,
            "b": {"class": "Adam", "kwargs": {}, "search": {"trials": 6, "space": SPACE_LR}},
        }
    )
    with pytest.raises(settings.ConfigError, match="different numbers of candidates"):
        settings.validate(unequal, SCHEMA, memory_bytes=None)
    no_tuning = config({"a": entry}, tuning_seeds=[])
    with pytest.raises(settings.ConfigError, match="tuning_seeds is empty"):
        settings.validate(no_tuning, SCHEMA, memory_bytes=None)


SPACE_LR = {"lr": {"scale": "log", "low": 1.0e-4, "high": 1.0}}


def test_adding_trials_plans_only_the_new_variants(tmp_path):
    """One job per run (job_scope cell): a dry run after growing the search from 2
    to 4 trials trains the 2 new variants only."""
    entry = {"class": "SGD", "kwargs": {"lr": 0.1}, "search": {"trials": 2, "space": SPACE_LR}}
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(config({"sgd": entry}, job_scope="cell", seeds_per_job="all")))
    workdir = tmp_path / "w"
    snakemake(workdir, "--cores", "2", "--omit-from", "summarize_cell", configfile=path)
    entry["search"]["trials"] = 4
    path.write_text(yaml.safe_dump(config({"sgd": entry}, job_scope="cell", seeds_per_job="all")))
    # (a dry run forked from this warmed-up process: only the plan is read)
    dry_run = ["-n", "--configfile", str(path), "--config", "study=config"]
    (process,) = snakemake_forked({"grown": (workdir, dry_run)}, tmp_path).values()
    assert process.returncode == 0, process.stderr[-3000:]
    jobs = planned_jobs(process)
    trained = {k: v for k, v in jobs.items() if k.startswith("train")}
    assert sum(trained.values()) == 2, jobs
    new = search.expand_search({"lr": 0.1}, {"trials": 4, "space": SPACE_LR})[
        3:
    ]  # after base and 2 trials
    text = process.stdout + process.stderr
    assert all(f"variant={variant.name}" in text for variant in new)
    assert REPO.exists()
