"""Configuration checks: every bad input gets a message naming the key and the fix."""

import ast
import contextlib
import copy
import inspect
import sys
from pathlib import Path

import bad_input
import jsonschema
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
    assert case.message in text
    assert "Fix" in text or "Known keys" in text or "Allowed keys" in text


# Schema checks that no row can trigger, with the reason (checked below).
UNREACHABLE_BY_A_ROW = {
    # A row is merged over the default config; merging can add entries but not
    # remove them, so an empty optimizers/losses mapping never reaches the schema.
    "minProperties",
}
SCHEMA_CHECKS = {
    "type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength",
    "maxLength", "pattern", "enum", "const", "minItems", "maxItems", "uniqueItems",
    "minProperties", "maxProperties", "required", "additionalProperties", "oneOf", "anyOf",
    "not",
}  # fmt: skip


def schema_checks(node, inside_alternatives=False) -> set[str]:
    """The check keywords a schema uses; those inside oneOf/anyOf count as that one check."""
    found = set()
    if isinstance(node, dict):
        for key, value in node.items():
            # additionalProperties is a check where false, a schema for values otherwise
            checks = key in SCHEMA_CHECKS and (key != "additionalProperties" or value is False)
            if checks and not inside_alternatives:
                found.add(key)
            if key in ("properties", "$defs"):
                for child in value.values():
                    found |= schema_checks(child, inside_alternatives)
            elif key in ("items", "additionalProperties", "propertyNames", "not"):
                found |= schema_checks(value, inside_alternatives)
            elif key in ("oneOf", "anyOf", "allOf"):
                for child in value:
                    found |= schema_checks(child, inside_alternatives or key != "allOf")
    return found


def message_statements(path) -> list[tuple[int, int, str]]:
    """Statements of the checker whose text tells a fix: one per kind of check."""
    source = path.read_text()
    statements = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Return | ast.Raise | ast.Assign | ast.Expr):
            texts = [n.value for n in ast.walk(node) if isinstance(n, ast.Constant)]
            if any(isinstance(text, str) and "Fix" in text for text in texts):
                line = source.splitlines()[node.lineno - 1].strip()
                statements.append((node.lineno, node.end_lineno, line))
    return statements


def executed_lines(function, filename) -> set[int]:
    """Line numbers of ``filename`` that run while ``function()`` runs."""
    lines = set()

    def local(frame, event, arg):
        if event == "line":
            lines.add(frame.f_lineno)
        return local

    def calls(frame, event, arg):
        return local if frame.f_code.co_filename == filename else None

    previous = sys.gettrace()
    sys.settrace(calls)
    try:
        function()
    finally:
        sys.settrace(previous)
    return lines


def test_the_bad_input_table_covers_every_kind_of_check():
    """Every check of the schema and every message of the checker is reached by
    a row of docs/bad-input.md: a new check without its row fails here."""
    merged = {}
    for case in BAD_INPUT:
        merged[case.name] = copy.deepcopy(DEFAULT)
        update_config(merged[case.name], yaml.safe_load(case.change))
    schema = yaml.safe_load(SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    fired = {e.validator for config in merged.values() for e in validator.iter_errors(config)}
    missing = schema_checks(schema) - fired - UNREACHABLE_BY_A_ROW
    assert not missing, f"schema checks without a row in docs/bad-input.md: {sorted(missing)}"
    emptied = copy.deepcopy(DEFAULT)
    update_config(emptied, {"optimizers": {}, "losses": {}})
    assert emptied == DEFAULT  # why minProperties is out of reach

    def run_every_row():
        for config in merged.values():
            with contextlib.suppress(settings.ConfigError):
                settings.validate(config, SCHEMA)

    checker = settings.validate.__code__.co_filename
    ran = executed_lines(run_every_row, checker)
    unreached = [
        f"{Path(checker).name}:{first}: {line}"
        for first, last, line in message_statements(Path(checker))
        if not ran & set(range(first, last + 1))
    ]
    assert not unreached, "messages no row of docs/bad-input.md produces:\n" + "\n".join(unreached)
    assert len({case.change for case in BAD_INPUT}) == len(BAD_INPUT)  # no row twice


@pytest.mark.parametrize(
    "case", bad_input.runtime_cases(), ids=[c.name for c in bad_input.runtime_cases()]
)
def test_values_only_torch_refuses_pass_the_checks_before_the_run(case):
    """The second table of docs/bad-input.md holds what reaches the training job:
    a row that the checker refuses belongs in the first table."""
    config = copy.deepcopy(DEFAULT)
    change = yaml.safe_load(case.change)
    update_config(config, change)
    experiment = settings.validate(config, SCHEMA)
    ((kind, entries),) = change.items()
    for name, entry in entries.items():
        component = getattr(experiment, kind)[name]
        assert (component.cls, component.kwargs) == (entry["class"], entry["kwargs"])


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
