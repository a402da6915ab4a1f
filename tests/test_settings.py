"""Configuration checks: every bad input gets a message naming the key and the fix."""

import ast
import contextlib
import copy
import inspect
import json
import sys
import time
from pathlib import Path

import bad_input
import jsonschema
import pytest
import torch
import yaml
from snakemake.utils import update_config

from conftest import REPO, SCHEMA
from optbench.planning import config_files, settings, torch_catalog

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


# Entry points other than validate(): they read files, which a row (YAML merged
# over the default config) cannot reach; tests/test_configfiles.py covers them.
NOT_FOR_ROWS = {"load_config_files"}


def message_statements(path) -> list[tuple[int, int, str]]:
    """Statements of the checker whose text tells a fix: one per kind of check."""
    source = path.read_text()
    tree = ast.parse(source)
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name in NOT_FOR_ROWS:
            skipped |= set(range(node.lineno, node.end_lineno + 1))
    statements = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skipped:
            continue
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
    assert experiment.seeds == tuple(range(10)) and experiment.tuning_seeds == ()
    assert experiment.device == "auto"
    assert experiment.problems == {
        "linear": settings.Problem("linear", "linear", "regression", {"dim": 20}, ("mse", "l1"), 40)
    }
    assert all(list(o.variants) == ["base"] for o in experiment.optimizers.values())
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


# Exponent floats as users write them, and the value each is (Python's float syntax,
# which YAML 1.2 and JSON share; PyYAML's YAML 1.1 leaves them text).
EXPONENT_FLOATS = {"1e-4": 0.0001, "1E5": 100000.0, "-2e-3": -0.002, "5e+2": 500.0,
                   ".5e-3": 0.0005, "2.5e-1": 0.25}  # fmt: skip


@pytest.mark.parametrize("text", EXPONENT_FLOATS)
def test_an_exponent_float_is_a_number_in_every_setting(text):
    """As Snakemake hands the config over (it reads files with YAML 1.1: '1e-4' is text):
    a search range refused it ("low and high must be numbers"), thresholds refused it
    (not of type 'number') and parameter groups passed it on to torch as text."""
    value = EXPONENT_FLOATS[text]
    low, high = sorted((abs(value) / 10, abs(value) * 10))
    given = {"low": f"{low:e}", "high": f"{high:e}"}  # e.g. '1.000000e-05': YAML 1.1 text
    config = with_change(set_key("tuning_seeds", [100]))
    config["thresholds"] = {"default": {"absolute": text.lstrip("-")}}
    config["optimizers"] = {
        "adamw": {"class": "AdamW", "kwargs": {"lr": text.lstrip("-"), "betas": [text, 0.99]},
                  "groups": {"others": {"weight_decay": text}},
                  "search": {"trials": 2, "space": {"lr": {"scale": "log", **given}}}},
        "sgd": {"class": "SGD", "kwargs": {"lr": 0.1}, "sweep": {"momentum": [text, "1e-1"]}},
    }  # fmt: skip
    experiment = settings.validate(config, SCHEMA)
    adamw, sgd = experiment.optimizers["adamw"], experiment.optimizers["sgd"]
    assert adamw.kwargs["lr"] == abs(value) and adamw.kwargs["betas"] == [value, 0.99]
    assert adamw.groups == {"others": {"weight_decay": value}}
    drawn = [v.kwargs["lr"] for name, v in adamw.variants.items() if name != "base"]
    assert len(drawn) == 2 and all(low <= lr <= high for lr in drawn)
    assert sorted(v.kwargs["momentum"] for name, v in sgd.variants.items() if name != "base") == (
        sorted([value, 0.1])
    )
    assert experiment.thresholds == {"default": {"absolute": abs(value)}}


def test_the_config_loader_reads_yaml_1_2_floats(tmp_path):
    """config_files.load_config_files (check_config, progress) reads a file as YAML 1.2
    does: every exponent float a float; other text stays text."""
    path = tmp_path / "mine.yaml"
    numbers = ", ".join(EXPONENT_FLOATS)
    path.write_text(f"floats: [{numbers}]\nquoted: '1e-4'\ntext: [1e, e5, 1e-4x, Adam, 1_0]\n"
                    "ints: [10, -3]\n")  # fmt: skip
    loaded = config_files.load_config_files([path])
    assert loaded["floats"] == list(EXPONENT_FLOATS.values())
    assert all(type(v) is float for v in loaded["floats"])
    assert loaded["quoted"] == "1e-4"  # the loader keeps quotes; validate reads it too
    assert loaded["text"] == ["1e", "e5", "1e-4x", "Adam", 10]  # 1_0: YAML 1.1's int
    assert loaded["ints"] == [10, -3] and all(type(v) is int for v in loaded["ints"])
    assert yaml.safe_load(path.read_text())["floats"][0] == "1e-4"  # PyYAML alone: text


def test_exponent_floats_given_with_dash_dash_config_are_numbers():
    """snakemake --config 'optimizers={adam: {..., search: ...}}' gives every scalar as
    text; only its keys are read as numbers, and 1e-4 in a search range is one."""
    entry = {"class": "Adam", "kwargs": {"lr": "1e-3", "eps": "1E-8"},
             "search": {"trials": "2", "space": {"lr": {"scale": "log", "low": "1e-4",
                                                        "high": "1e-1"}}}}  # fmt: skip
    config = with_change(set_key("tuning_seeds", ["100", "101"]))
    config["optimizers"] = {"adam": entry}
    given = {"optimizers": {"adam": entry}, "tuning_seeds": config["tuning_seeds"]}
    adam = settings.validate(config, SCHEMA, command_line=given).optimizers["adam"]
    assert adam.kwargs == {"lr": 0.001, "eps": 1e-8}
    drawn = [v.kwargs["lr"] for name, v in adam.variants.items() if name != "base"]
    assert len(drawn) == 2 and all(1e-4 <= lr <= 1e-1 for lr in drawn)


def test_text_that_is_no_number_stays_text_and_strict():
    """Only exact exponent floats are read: other text where a number belongs is
    refused with the key, and names that are text stay text."""
    config = with_change(set_optimizer("sgd", {"class": "SGD", "kwargs": {"lr": "abc"}}))
    with pytest.raises(settings.ConfigError, match="optimizers.sgd.kwargs.lr: torch.optim.SGD"):
        settings.validate(config, SCHEMA)
    for text in ("1e-4x", "1 e-4", "1e-4.5"):
        config = with_change(set_optimizer("sgd", {"class": "SGD", "kwargs": {"lr": text}}))
        with pytest.raises(settings.ConfigError, match="optimizers.sgd.kwargs.lr"):
            settings.validate(config, SCHEMA)
    config = with_change(set_loss("mse", {"class": "MSELoss", "kwargs": {"reduction": "sum"}}))
    config["optimizers"]["e5"] = {"class": "SGD", "kwargs": {"lr": "1e-1"}}
    experiment = settings.validate(config, SCHEMA)
    assert experiment.losses["mse"].kwargs == {"reduction": "sum"}
    assert experiment.optimizers["e5"].cls == "SGD"
    assert experiment.optimizers["e5"].kwargs == {"lr": 0.1}


def test_command_line_text_values_are_read_as_numbers():
    """snakemake --config seeds=[0,1] delivers strings inside lists and mappings."""
    config = with_change(set_key("seeds", ["2", "0", "1.0"]))
    config["optimizers"]["sgd"] = {
        "class": "SGD",
        "kwargs": {"lr": "0.5", "nesterov": "true", "momentum": "0.9"},
    }
    config["losses"]["mse"] = {"class": "MSELoss", "kwargs": {"reduction": "sum"}}
    given = {"seeds": config["seeds"], "optimizers": {"sgd": config["optimizers"]["sgd"]}}
    experiment = settings.validate(config, SCHEMA, command_line=given)
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


# --- Size and depth, measured as YAML aliases expand -------------------------


def expanded_count(value) -> int:
    """Values in ``value`` (containers and scalars) after a real expansion: JSON
    text has no aliases, so a round trip copies every shared list."""
    value = json.loads(json.dumps(value))

    def count(node):
        if isinstance(node, dict):
            return 1 + sum(count(v) for v in node.values())
        if isinstance(node, list):
            return 1 + sum(count(v) for v in node)
        return 1

    return count(value) - 1  # the top-level mapping itself is not a value


def test_size_bound_counts_every_use_of_an_alias(monkeypatch):
    shared = [0.5] * 10
    config = with_change(lambda c: c.__setitem__("extra", [shared] * 10))
    size = expanded_count(config)
    assert size > 110  # the ten uses of `shared` count ten times
    monkeypatch.setattr(config_files, "MAX_VALUES", size)
    with pytest.raises(settings.ConfigError) as error:  # refused for the unknown key only
        settings.validate(config, SCHEMA)
    assert "holds more than" not in str(error.value) and "'extra'" in str(error.value)
    monkeypatch.setattr(config_files, "MAX_VALUES", size - 1)
    with pytest.raises(settings.ConfigError) as error:
        settings.validate(config, SCHEMA)
    assert error.value.problems == [
        f"the configuration holds more than {size - 1:,} values in all once its YAML aliases "
        "are expanded. Fix: make the grid smaller or split it into several runs."
    ]


def test_alias_bomb_is_refused_at_once_naming_the_key():
    """10^8 values in 500 bytes of YAML; expanding them took 40 s and 2.3 GB here."""
    levels = "[0, 0, 0, 0, 0, 0, 0, 0, 0, 0]"
    for i in range(7):
        levels = f"[&a{i} {levels}, " + ", ".join([f"*a{i}"] * 9) + "]"
    text = f"optimizers: {{sgd: {{class: SGD, kwargs: {{lr: 0.1, dampening: {levels}}}}}}}"
    assert len(text) < 600
    config = copy.deepcopy(DEFAULT)
    update_config(config, yaml.safe_load(text))
    started = time.perf_counter()
    with pytest.raises(settings.ConfigError) as error:
        settings.validate(config, SCHEMA)
    assert time.perf_counter() - started < 5
    assert error.value.problems[0].startswith(
        "config key optimizers.sgd.kwargs.dampening: holds more than 100,000 values"
    )


def test_depth_bound_counts_keys_from_the_top(monkeypatch):
    """optimizers.adam.kwargs.betas.0 is five keys deep: allowed at 5, refused at 4."""
    monkeypatch.setattr(config_files, "MAX_DEPTH", 5)
    settings.validate(DEFAULT, SCHEMA)
    monkeypatch.setattr(config_files, "MAX_DEPTH", 4)
    with pytest.raises(settings.ConfigError) as error:
        settings.validate(DEFAULT, SCHEMA)
    assert error.value.problems == [
        "config key optimizers.adam.kwargs.betas: nests deeper than 4 levels. Fix: give it a "
        "plain value; no setting nests deeper than optimizers.<name>.kwargs.<argument>.<item>."
    ]


# --- Keyword argument types, from the defaults in torch's source -------------


def as_yaml_value(value):
    """A torch default as YAML delivers it: tuples become lists."""
    return [as_yaml_value(v) for v in value] if isinstance(value, tuple) else value


def test_catalogue_types_agree_with_imported_torch_defaults():
    """Each literal default torch's signature has is known, with its value, and the
    default itself (as YAML would give it) passes the check."""
    catalog = torch_catalog.load()
    checked = 0
    for name, signature in {**catalog.optimizers, **catalog.losses}.items():
        cls = getattr(torch.optim, name, None) or getattr(torch.nn, name)
        for parameter in inspect.signature(cls.__init__).parameters.values():
            default = parameter.default
            literal = isinstance(default, bool | int | float | str | tuple)
            expected = signature.expected.get(parameter.name)
            assert (expected is not None) == literal, (name, parameter.name, default)
            if literal:
                assert expected.default == default, (name, parameter.name)
                assert signature.wrong_type(parameter.name, as_yaml_value(default)) is None
                checked += 1
    assert checked > 150


@pytest.mark.parametrize(
    ("cls", "argument", "good", "bad"),
    [
        ("SGD", "lr", [1, 0.5, 1e-9, -1.0], [True, False, "0.1", [0.1], {"a": 1}, None]),
        ("SGD", "dampening", [0, 0.25], [[0.5], [[0.0]], "0"]),
        ("SGD", "nesterov", [True, False], [1, 0, 1.0, "true", None]),
        ("Adam", "betas", [[0.9, 0.99], (0.8, 0.9), [1, 0]], [[0.9], [0.9, 0.9, 0.9], 0.9]),
        ("Adam", "betas", [], [[0.9, True], [0.9, "0.99"], [[0.9], 0.99]]),
        ("LBFGS", "history_size", [10, 0], [10.5, True, "10"]),  # annotated int
        ("LBFGS", "max_eval", [None, "x", [1]], []),  # default None: no evidence
        ("SGD", "foreach", [None, True, "x"], []),
    ],
)
def test_keyword_types_follow_torch_defaults(cls, argument, good, bad):
    signature = torch_catalog.load().optimizers[cls]
    for value in good:
        assert signature.wrong_type(argument, value) is None, value
    for value in bad:
        assert signature.wrong_type(argument, value) is not None, value


def test_loss_keyword_types_follow_torch_defaults():
    losses = torch_catalog.load().losses
    assert losses["MSELoss"].wrong_type("reduction", "sum") is None
    assert losses["MSELoss"].wrong_type("reduction", 1).describe() == "a string"
    assert losses["CTCLoss"].wrong_type("blank", 0.5).describe() == "an integer"
    assert losses["HuberLoss"].wrong_type("delta", 2) is None


def test_muon_defaults_named_by_module_constants_are_resolved():
    """Muon's eps=EPS and ns_coefficients=(DEFAULT_A, ...) are names, not literals."""
    expected = torch_catalog.load().optimizers["Muon"].expected
    muon = inspect.signature(torch.optim.Muon.__init__).parameters
    assert expected["eps"].default == muon["eps"].default
    assert expected["ns_coefficients"].default == muon["ns_coefficients"].default


# --- Every problem at once ---------------------------------------------------


def test_every_problem_is_reported_at_once_each_with_its_key_and_fix():
    config = with_change(set_key("step", 40))
    config["seeds"] = [0, -1]
    config["optimizers"]["sgd"] = {"class": "SGD", "kwargs": {"lr": 0.1, "momentun": 0.9}}
    config["optimizers"]["adam"]["kwargs"]["betas"] = 0.9
    config["optimizers"]["x"] = {"class": "Adamm"}
    config["losses"]["mse"] = {"class": "MSELoss", "kwargs": {"reduction": 1}}
    config["only"] = {"losses": ["huber"]}
    with pytest.raises(settings.ConfigError) as error:
        settings.validate(config, SCHEMA)
    problems = error.value.problems
    keys = [
        "unknown config key(s) 'step'",
        "config key seeds.1: -1 is less than the minimum of 0",
        "config key optimizers.sgd.kwargs: torch.optim.SGD does not accept 'momentun'",
        "config key optimizers.adam.kwargs.betas: torch.optim.Adam takes a list of 2 numbers",
        "config key optimizers.x.class: 'Adamm' is not an optimizer class in torch.optim",
        "config key losses.mse.kwargs.reduction: torch.nn.MSELoss takes a string",
        "config key only.losses: 'huber' is not in the configured grid",
    ]
    assert len(problems) == len(keys)
    for key in keys:
        (line,) = [p for p in problems if key in p]
        assert "Fix" in line or "Known keys" in line
    assert str(error.value) == "\n".join(problems)


def test_an_entry_refused_by_the_schema_is_not_checked_again():
    config = with_change(set_optimizer("sgd", {"class": "SGD", "kwargs": [1]}))
    with pytest.raises(settings.ConfigError) as error:
        settings.validate(config, SCHEMA)
    assert error.value.problems == [
        "config key optimizers.sgd.kwargs: [1] is not of type 'object'. Fix: A mapping of "
        "keyword arguments for the class, e.g. {lr: 0.1}; lists become tuples."
    ]


# --- only: part of the grid --------------------------------------------------


def test_only_keeps_the_configured_order_of_the_chosen_cells():
    config = with_change(
        set_key("only", {"optimizers": ["adam", "sgd"], "losses": ["l1"], "seeds": ["7", "2"]})
    )
    # As --config 'only={..., seeds: [7, 2]}' gives it: text.
    experiment = settings.validate(config, SCHEMA, command_line={"only": config["only"]})
    assert list(experiment.optimizers) == ["sgd", "adam"]
    assert list(experiment.losses) == ["l1"]
    assert experiment.seeds == (2, 7)
    assert experiment.n_runs == 4
    assert experiment.optimizers["adam"] == settings.validate(DEFAULT, SCHEMA).optimizers["adam"]


def test_only_does_not_change_how_seeds_are_packed():
    """seeds_per_job: all spans every configured seed, chosen or not."""
    config = with_change(set_key("seeds_per_job", "all"))
    config["only"] = {"seeds": [3]}
    experiment = settings.validate(config, SCHEMA)
    assert experiment.seeds_per_job == 10
    assert [(b.label, b.seeds) for b in experiment.seed_ranges()] == [("0-9", (3,))]


def test_only_covers_every_grid_axis():
    """When the grid gains an axis (problems), `only` must be able to select on it."""
    schema = yaml.safe_load(SCHEMA.read_text())
    assert set(schema["properties"]["only"]["properties"]) == set(settings.GRID_AXES)


# --- Config files read by the pipeline itself (check_config.py) -------------


def test_config_files_merge_in_order_as_snakemake_merges_them(tmp_path):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("steps: 5\noptimizers: {sgd: {class: SGD, kwargs: {lr: 0.1}}}\n")
    second.write_text(
        "steps: 7\noptimizers: {sgd: {kwargs: {momentum: 0.9}}, adam: {class: Adam}}\n"
    )
    expected = {}
    for path in (first, second):
        update_config(expected, yaml.safe_load(path.read_text()))
    assert settings.load_config_files([first, second]) == expected


def test_config_file_with_a_mapping_bomb_is_refused_before_any_copy(tmp_path):
    """Snakemake copies every mapping while loading: 10^8 values took it minutes."""
    levels = "{" + ", ".join(f"k{j}: 0" for j in range(10)) + "}"
    for i in range(7):
        levels = f"{{k0: &m{i} {levels}, " + ", ".join(f"k{j}: *m{i}" for j in range(1, 10)) + "}"
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(f"optimizers: {{sgd: {{class: SGD, kwargs: {{dampening: {levels}}}}}}}\n")
    bad_type = tmp_path / "type.yaml"
    bad_type.write_text("- not a mapping\n")
    started = time.perf_counter()
    with pytest.raises(settings.ConfigError) as error:
        settings.load_config_files([bomb, bad_type])
    assert time.perf_counter() - started < 5
    assert error.value.problems[0].startswith(
        f"config file {bomb}: config key optimizers.sgd.kwargs.dampening: holds more than"
    )
    assert error.value.problems[1].startswith(f"config file {bad_type}: holds list")


# --- Problems, sweeps and seed roles (issue 10) --------------------------------

SWEEP = {
    "tuning_seeds": [100, 101],
    "losses": {"mse": {"class": "MSELoss"}, "bce": {"class": "BCEWithLogitsLoss"}},
    "problems": {
        "linear": {"kwargs": {"dim": 4}},
        "logistic_noisy": {"problem": "logistic", "kwargs": {"label_noise": 0.2}, "steps": 7},
        "rosen": {"problem": "rosenbrock"},
    },
    "optimizers": {
        "sgd": {"class": "SGD", "kwargs": {"lr": 0.1, "momentum": 0.5}, "sweep": {"lr": [0.01, 1]}},
        "lbfgs": {"class": "LBFGS"},
    },
}


def test_sweep_variants_problems_and_seed_roles_make_the_grid():
    experiment = settings.validate(dict(SWEEP, seeds=[0, 1, 2]), SCHEMA)
    sgd = experiment.optimizers["sgd"]
    assert {name: v.kwargs for name, v in sgd.variants.items()} == {
        "base": {"lr": 0.1, "momentum": 0.5},
        "lr0.01": {"lr": 0.01, "momentum": 0.5},
        "lr1": {"lr": 1, "momentum": 0.5},
    }
    cells = [(c.problem, c.loss, c.optimizer, c.variant) for c in experiment.cells()]
    # every loss that fits a problem's kind; the objective gets its pseudo-loss
    problem_losses = list(dict.fromkeys((p, loss) for p, loss, _, _ in cells))
    assert problem_losses == [("linear", "mse"), ("logistic_noisy", "bce"), ("rosen", "objective")]
    assert cells[:4] == [
        ("linear", "mse", "sgd", "base"),
        ("linear", "mse", "sgd", "lr0.01"),
        ("linear", "mse", "sgd", "lr1"),
        ("linear", "mse", "lbfgs", "base"),
    ]
    assert experiment.all_seeds == (0, 1, 2, 100, 101)
    assert experiment.n_runs == 3 * 4 * 5
    spec = experiment.run_spec(settings.Cell("logistic_noisy", "bce", "sgd", "lr1"))
    assert spec["steps"] == 7 and spec["variant"] == "lr1"
    assert spec["optimizer"] == {
        "name": "sgd",
        "class": "SGD",
        "kwargs": {"lr": 1, "momentum": 0.5},
    }
    assert spec["problem"]["kwargs"] == {"dim": 10, "samples": 200, "label_noise": 0.2}
    rosen = experiment.run_spec(settings.Cell("rosen", "objective", "lbfgs", "base"))
    assert rosen["loss"] is None and rosen["steps"] == 40


def test_only_selects_problems_and_keeps_their_fitting_losses():
    config = dict(SWEEP, only={"problems": ["rosen", "linear"], "losses": ["bce"]})
    experiment = settings.validate(config, SCHEMA)
    # linear has no loss left (mse not chosen); the objective keeps its own
    assert list(experiment.problems) == ["rosen"]
    assert {c.loss for c in experiment.cells()} == {"objective"}


def test_a_user_problem_is_found_in_the_problems_folder(tmp_path):
    template = (REPO / "problems" / "_template.py").read_text()
    (tmp_path / "mine.py").write_text(template)
    config = {"problems": {"mine": {}}}
    experiment = settings.validate(config, SCHEMA, problems_dir=tmp_path)
    assert experiment.problems["mine"].problem == "mine"
    with pytest.raises(settings.ConfigError, match="unknown problem 'mine'"):
        settings.validate(config, SCHEMA)  # not without the folder


def test_tuned_config_runs_the_article_optimizers_with_adamw_and_lbfgs_on_every_problem():
    config = yaml.safe_load((REPO / "configs" / "tuned.yaml").read_text())
    experiment = settings.validate(config, SCHEMA)
    assert list(experiment.optimizers) == [
        "sgd", "momentum_sgd", "adam", "rmsprop", "adamw", "lbfgs"
    ]  # fmt: skip
    # The same number of candidates for every optimizer: base + 8 searched trials,
    # every one with its learning rate inside the same six decades.
    counts = {name: len(o.variants) for name, o in experiment.optimizers.items()}
    assert set(counts.values()) == {9}
    rates = [
        v.kwargs["lr"]
        for o in experiment.optimizers.values()
        for name, v in o.variants.items()
        if name != "base"
    ]
    assert len(rates) == 6 * 8
    assert all(1e-4 <= rate <= 10.0 for rate in rates)
    schedules = {name: o.variants["base"].schedule for name, o in experiment.optimizers.items()}
    assert schedules.pop("lbfgs") is None  # its line search sets its step
    assert all(s == {"family": "warmup_cosine", "warmup": 0.05} for s in schedules.values())
    assert {p.problem for p in experiment.problems.values()} == {
        "linear", "quadratic", "logistic", "rosenbrock", "noisy_quadratic", "digits_mlp"
    }  # fmt: skip
    assert len(experiment.seeds) == 20 and len(experiment.tuning_seeds) == 5
    assert not set(experiment.seeds) & set(experiment.tuning_seeds)


def test_quoted_numbers_in_a_config_file_are_refused_with_the_key():
    """Strict types: "100" in a file was quoted on purpose; only --config text is read."""
    config = with_change(
        set_key("problems", {"quadratic": {"kwargs": {"condition_number": "100"}}})
    )
    with pytest.raises(settings.ConfigError) as caught:
        settings.validate(config, SCHEMA)
    message = str(caught.value)
    assert "problems.quadratic.kwargs.condition_number: '100' (str) is not a float" in message
    assert "Fix: give a value of the default's type." in message
    config = with_change(set_optimizer("sgd", {"class": "SGD", "kwargs": {"lr": "0.5"}}))
    with pytest.raises(settings.ConfigError, match="optimizers.sgd"):
        settings.validate(config, SCHEMA)
    # The same text given on the command line is read as the number it says.
    given = {"problems": {"quadratic": {"kwargs": {"condition_number": "100"}}}}
    config = with_change(set_key("problems", given["problems"]))
    problem = settings.validate(config, SCHEMA, command_line=given).problems["quadratic"]
    assert problem.kwargs["condition_number"] == 100
