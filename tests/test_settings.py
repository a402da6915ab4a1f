"""Configuration checks: every bad input gets a message naming the key and the fix."""

import copy
import inspect

import bad_input
import pytest
import torch
import yaml
from snakemake.utils import update_config

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


def parseable(case):
    try:
        yaml.safe_load(case.change)
    except yaml.YAMLError:
        return False  # malformed YAML is Snakemake's to report: tests/test_faults.py
    return True


BAD_INPUT = [case for case in bad_input.cases() if parseable(case)]


@pytest.mark.parametrize("case", BAD_INPUT, ids=[case.name for case in BAD_INPUT])
def test_bad_config_is_rejected_with_key_and_fix(case):
    """Every row of docs/bad-input.md, merged over the default as Snakemake merges configs."""
    config = copy.deepcopy(DEFAULT)
    update_config(config, yaml.safe_load(case.change))
    with pytest.raises(settings.ConfigError) as error:
        settings.validate(config, SCHEMA)
    text = str(error.value)
    assert all(message in text for message in case.messages), text
    assert "Fix" in text or "Known keys" in text or "Allowed keys" in text


def test_the_bad_input_table_covers_every_kind_of_check():
    assert len(bad_input.cases()) >= 30


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
