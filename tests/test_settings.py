"""Configuration checks: every bad input gets a message naming the key and the fix."""

import copy
import inspect

import pytest
import torch
import yaml

from conftest import REPO, SCHEMA
from optbench import settings, torch_catalog

DEFAULT = yaml.safe_load((REPO / "config.yaml").read_text())


def with_change(change):
    config = copy.deepcopy(DEFAULT)
    change(config)
    return config


def set_key(key, value):
    return lambda c: c.__setitem__(key, value)


def set_optimizer(name, entry):
    return lambda c: c["optimizers"].__setitem__(name, entry)


def set_loss(name, entry):
    return lambda c: c["losses"].__setitem__(name, entry)


# (case id, change, text the message must contain)
BAD_CONFIGS = [
    ("steps zero", set_key("steps", 0), "config key steps: 0 is less than the minimum of 1"),
    ("steps text", set_key("steps", "40"), "config key steps: '40' is not of type 'integer'"),
    ("dim zero", set_key("dim", 0), "config key dim: 0 is less than the minimum of 1"),
    ("seed float", set_key("seeds", [0, 1.5]), "config key seeds.1: 1.5 is not of type 'integer'"),
    ("seed negative", set_key("seeds", [-1]), "config key seeds.0: -1 is less than the minimum"),
    ("seed text", set_key("seeds", ["zero"]), "seeds.0: 'zero' is not of type 'integer'"),
    ("seeds duplicate", set_key("seeds", [0, 1, 1]), "seeds: [0, 1, 1] has non-unique elements"),
    ("seeds empty", set_key("seeds", []), "config key seeds: [] should be non-empty"),
    ("device unknown", set_key("device", "gpu"), "config key device: 'gpu' does not match"),
    ("device index text", set_key("device", "cuda:x"), "config key device: 'cuda:x'"),
    ("band unknown", set_key("band", "sd"), "config key band: 'sd' is not one of"),
    ("unknown key", set_key("step", 40), "unknown config key(s) 'step'. Known keys:"),
    ("entry typo", set_optimizer("sgd", {"clas": "SGD"}), "config key optimizers.sgd:"),
    ("no optimizers", set_key("optimizers", {}), "config key optimizers: {} should be non-empty"),
    ("kwargs list", set_loss("mse", {"class": "MSELoss", "kwargs": [1]}), "losses.mse.kwargs"),
    ("name space", set_optimizer("my sgd", {"class": "SGD"}), "name 'my sgd' is not a safe"),
    ("name dotdot", set_optimizer("..", {"class": "SGD"}), "name '..' is not a safe"),
    ("name slash", set_loss("a/b", {"class": "L1Loss"}), "name 'a/b' is not a safe"),
    ("name shell", set_optimizer("$(touch pwned)", {"class": "SGD"}), "is not a safe"),
    ("name semicolon", set_optimizer("x;rm", {"class": "SGD"}), "name 'x;rm' is not a safe"),
    ("name look-alike", set_optimizer("\u0430dam", {"class": "Adam"}), "is not a safe"),
    ("class injection", set_optimizer("x", {"class": "__import__('os')"}), "optimizers.x.class"),
    ("class unknown", set_optimizer("x", {"class": "Adamm"}), "'Adamm' is not a optimizer class"),
    ("class case", set_optimizer("x", {"class": "adam"}), "Did you mean 'Adam'?"),
    ("loss as optimizer", set_optimizer("x", {"class": "MSELoss"}), "not a optimizer class"),
    ("module as loss", set_loss("x", {"class": "Linear"}), "'Linear' is not a loss class"),
    ("base class", set_optimizer("x", {"class": "Optimizer"}), "not a optimizer class"),
    ("closure optimizer", set_optimizer("x", {"class": "LBFGS"}), "needs a closure"),
    (
        "kwarg typo",
        set_optimizer("sgd", {"class": "SGD", "kwargs": {"lr": 0.1, "momentun": 0.9}}),
        "config key optimizers.sgd.kwargs: torch.optim.SGD does not accept 'momentun'",
    ),
    (
        "loss kwarg typo",
        set_loss("mse", {"class": "MSELoss", "kwargs": {"reduce_mode": "sum"}}),
        "losses.mse.kwargs: torch.nn.MSELoss does not accept 'reduce_mode'",
    ),
    (
        "params kwarg",
        set_optimizer("sgd", {"class": "SGD", "kwargs": {"params": [1]}}),
        "'params' is supplied by the pipeline",
    ),
]


@pytest.mark.parametrize(
    ("change", "message"), [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS]
)
def test_bad_config_is_rejected_with_key_and_fix(change, message):
    with pytest.raises(settings.ConfigError) as error:
        settings.validate(with_change(change), SCHEMA)
    text = str(error.value)
    assert message in text
    assert "Fix" in text or "Known keys" in text or "Allowed keys" in text


def test_default_config_is_the_reference_experiment():
    experiment = settings.validate(DEFAULT, SCHEMA)
    assert experiment.seeds == tuple(range(10))
    assert (experiment.steps, experiment.dim, experiment.device) == (40, 20, "auto")
    assert {n: (c.cls, c.kwargs) for n, c in experiment.optimizers.items()} == {
        "sgd": ("SGD", {"lr": 0.1}),
        "momentum_sgd": ("SGD", {"lr": 0.1, "momentum": 0.9}),
        "adam": ("Adam", {"lr": 0.1, "betas": [0.9, 0.99], "eps": 1e-9}),
        "rmsprop": ("RMSprop", {}),
    }
    assert {n: c.cls for n, c in experiment.losses.items()} == {"mse": "MSELoss", "l1": "L1Loss"}
    assert experiment.n_runs == 80


def test_empty_config_takes_the_schema_defaults():
    assert settings.validate({}, SCHEMA) == settings.validate(DEFAULT, SCHEMA)


def test_every_schema_property_has_description_and_default():
    schema = yaml.safe_load(SCHEMA.read_text())
    for key, spec in schema["properties"].items():
        assert spec.get("description"), key
        assert "default" in spec, key


def test_yaml_float_without_dot_is_read_as_number():
    config = with_change(set_optimizer("adam", {"class": "Adam", "kwargs": {"eps": "1e-9"}}))
    assert settings.validate(config, SCHEMA).optimizers["adam"].kwargs == {"eps": 1e-9}


def test_command_line_text_values_are_read_as_numbers():
    """snakemake --config seeds=[0,1] delivers strings inside lists and mappings."""
    config = with_change(set_key("seeds", ["2", "0", "1.0"]))
    config["optimizers"]["sgd"] = {
        "class": "SGD",
        "kwargs": {"lr": "0.5", "nesterov": "true", "momentum": "0.9"},
    }
    config["losses"]["mse"] = {"class": "MSELoss", "kwargs": {"reduction": "sum"}}
    experiment = settings.validate(config, SCHEMA)
    assert experiment.seeds == (2, 0, 1) and all(type(s) is int for s in experiment.seeds)
    assert experiment.optimizers["sgd"].kwargs == {"lr": 0.5, "nesterov": True, "momentum": 0.9}
    assert experiment.losses["mse"].kwargs == {"reduction": "sum"}


def test_any_torch_class_is_one_entry_away():
    config = with_change(set_optimizer("adamw", {"class": "AdamW", "kwargs": {"lr": 0.01}}))
    config["losses"]["huber"] = {"class": "HuberLoss", "kwargs": {"delta": 0.5}}
    experiment = settings.validate(config, SCHEMA)
    assert "adamw" in experiment.optimizers and "huber" in experiment.losses


def test_static_catalogue_matches_imported_torch():
    """The torch-free catalogue agrees with torch itself, class by class."""
    catalog = torch_catalog.load()
    real_optimizers = {
        name
        for name, obj in vars(torch.optim).items()
        if isinstance(obj, type)
        and issubclass(obj, torch.optim.Optimizer)
        and obj is not torch.optim.Optimizer
    }
    real_losses = {
        name
        for name, obj in vars(torch.nn).items()
        if isinstance(obj, type) and issubclass(obj, torch.nn.modules.loss._Loss)
    }
    assert set(catalog.optimizers) == real_optimizers
    assert set(catalog.losses) == real_losses
    for name, signature in {**catalog.optimizers, **catalog.losses}.items():
        cls = getattr(torch.optim, name, None) or getattr(torch.nn, name)
        real = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        assert list(signature.parameters) == real, name


def test_without_torch_source_only_the_schema_is_checked(monkeypatch):
    monkeypatch.setattr(torch_catalog, "load", lambda: None)
    config = with_change(set_optimizer("x", {"class": "NoSuchOptimizer"}))
    experiment = settings.validate(config, SCHEMA)  # the training job reports it instead
    assert experiment.optimizers["x"].cls == "NoSuchOptimizer"
