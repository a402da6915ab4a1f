"""Config files: loading and merging them as Snakemake does, the size guard
that measures a file before anything expands its YAML aliases, the schema's
defaults and the reading of numbers given as text (1e-4 is a number: YAML
1.2's floats, whichever loader read the file). Torch-free.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

# A float with an exponent, as YAML 1.2 (and JSON, and Python) reads it: 1e-4,
# 1E5, -2e-3, 5e+2, .5e-3, 1.0e4. PyYAML follows YAML 1.1, whose floats need a
# dot and a signed exponent, so it leaves most of these strings.
FLOAT_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


class ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading YAML 1.2's exponent floats as floats."""


ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:float", FLOAT_TEXT, list("+-0123456789."))

# PyYAML's C parser (libyaml), where PyYAML was built with it: it reads a file
# about ten times faster than the pure-Python one and gives the same values
# (tests/test_yaml_loading.py checks every config and the schema both ways). The
# constructor and resolver, ConfigLoader's exponent floats included, are the
# same Python code on top of either parser.
if getattr(yaml, "__with_libyaml__", False):

    class FastConfigLoader(yaml.CSafeLoader):
        """ConfigLoader on libyaml's parser."""

    FastConfigLoader.add_implicit_resolver(
        "tag:yaml.org,2002:float", FLOAT_TEXT, list("+-0123456789.")
    )
    FastSafeLoader = yaml.CSafeLoader
else:  # pragma: no cover (PyYAML without libyaml)
    FastConfigLoader, FastSafeLoader = ConfigLoader, yaml.SafeLoader


def read_yaml(stream):
    """A YAML document (text or an open file) as the config loader reads it."""
    return yaml.load(stream, Loader=ConfigLoader)  # noqa: S506 (a SafeLoader subclass)


def read_yaml_file(path, fast=FastConfigLoader, pure=ConfigLoader):
    """A whole YAML file as ``pure`` (the config loader) reads it, read by ``fast``
    (the same on libyaml). A file ``fast`` refuses is read again by ``pure``, so
    that its error message (with the offending line shown) stays PyYAML's own."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    try:
        return yaml.load(text, Loader=fast)  # noqa: S506 (SafeLoader or CSafeLoader based)
    except yaml.YAMLError:
        return yaml.load(text, Loader=pure)  # noqa: S506


def numbers_from_text(value):
    """Every string value that is exactly a YAML 1.2 exponent float, read as that
    float, at any depth (mapping keys are left as they are).

    Snakemake reads config files with PyYAML's YAML 1.1 rules before the
    workflow sees them, and its ``--config`` values arrive as text, so "1e-4"
    reaches the checks as a string wherever a user wrote it: a kwarg, a sweep,
    a search range, a threshold, a parameter group. No setting takes a string
    of that shape (names, classes and families never look like 1e-4), so every
    one is converted, quoted or not: a loader cannot tell them apart once
    Snakemake has read the file. Any other string stays a string, and the
    checks refuse it where a number is expected.
    """
    if isinstance(value, str):
        return float(value) if FLOAT_TEXT.match(value) else value
    if isinstance(value, list | tuple):
        return [numbers_from_text(item) for item in value]
    if isinstance(value, dict):
        return {key: numbers_from_text(item) for key, item in value.items()}
    return value


# Bounds on the configuration, far above any real experiment (the largest
# settings nest five levels deep: optimizers.adam.kwargs.betas.0) and far below
# what makes a dry run slow (100,000 values walk in well under a second).
MAX_VALUES = 100_000


MAX_DEPTH = 16


class ConfigError(ValueError):
    """The configuration cannot be used; each problem says where and how to fix it."""

    def __init__(self, problems):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


def _key_path(path) -> str:
    return ".".join(str(part) for part in path) or "(top level)"


class _Oversized(Exception):
    def __init__(self, path: tuple, reason: str):
        super().__init__(reason)
        self.path, self.reason = path, reason


def _setting_path(path: tuple) -> tuple:
    """The setting a path lies in: up to the first list index, at most four keys
    (optimizers.sgd.kwargs.dampening), so a message names a key a user wrote."""
    named = []
    for part in path[:4]:
        if not isinstance(part, str):
            break
        named.append(part)
    return tuple(named)


def _measure(node, path: tuple, measured: dict, open_nodes: set) -> int:
    """Values in ``node`` once aliases are expanded, counted without expanding.

    A container shared through YAML aliases is counted once per use but walked
    once (``measured`` remembers it by identity), so the cost follows the file,
    not the expansion. Raises _Oversized past MAX_VALUES or MAX_DEPTH, or when a
    container holds itself.
    """
    if len(path) > MAX_DEPTH:
        raise _Oversized(path, "depth")
    if not isinstance(node, dict | list | tuple):
        return 1
    key = id(node)
    if key in measured:
        return measured[key]
    if key in open_nodes:
        raise _Oversized(path, "cycle")
    open_nodes.add(key)
    try:
        count = 1
        children = node.items() if isinstance(node, dict) else enumerate(node)
        for name, child in children:
            count += _measure(child, (*path, name), measured, open_nodes)
            if count > MAX_VALUES:
                raise _Oversized(path, "values")
    finally:
        open_nodes.discard(key)
    measured[key] = count
    return count


def _size_problems(config: dict) -> list[str]:
    """Every top-level key that is too large, too deep or self-referencing."""
    fixes = {
        "values": (
            f"holds more than {MAX_VALUES:,} values once its YAML aliases are expanded "
            "(each use of an alias counts in full). Fix: give it a plain value; a setting "
            "is a number, a string, a bool or a short list"
        ),
        "depth": (
            f"nests deeper than {MAX_DEPTH} levels. Fix: give it a plain value; no setting "
            "nests deeper than optimizers.<name>.kwargs.<argument>.<item>"
        ),
        "cycle": "contains itself (a YAML alias inside its own anchor). Fix: remove the alias",
    }
    measured, problems, total = {}, [], 0
    for key, value in config.items():
        try:
            total += _measure(value, (key,), measured, set())
        except _Oversized as error:
            problems.append(
                f"config key {_key_path(_setting_path(error.path))}: {fixes[error.reason]}."
            )
    if not problems and total > MAX_VALUES:
        problems.append(
            f"the configuration holds more than {MAX_VALUES:,} values in all once its YAML "
            "aliases are expanded. Fix: make the grid smaller or split it into several runs."
        )
    return problems


def _coerce_text(value, command_line: bool = True):
    """Numbers and booleans that arrived as text from the command line, read as
    what they say.

    ``snakemake --config`` parses lists and mappings with YAML's BaseLoader,
    which keeps every scalar a string (seeds=[0,1] gives ['0', '1']). Torch
    hyper-parameters and seeds are never strings of that shape, so they are
    converted; other strings are left alone. From a config file
    (``command_line`` False) nothing is: there a string such as "100" was
    quoted on purpose, and strict typing refuses it. (Exponent floats such as
    1e-4 are read as numbers everywhere before this: ``numbers_from_text``.)
    """
    if isinstance(value, str):
        if not command_line:
            return value
        try:
            parsed = read_yaml(value)
        except yaml.YAMLError:
            return value
        return parsed if isinstance(parsed, int | float | bool) else value
    if isinstance(value, list | tuple):
        return [_coerce_text(v, command_line) for v in value]
    if isinstance(value, dict):
        return {k: _coerce_text(v, command_line) for k, v in value.items()}
    return value


def load_schema(path: str | Path) -> dict:
    # Read by every snakemake start: libyaml's parser where there is one.
    return read_yaml_file(path, FastSafeLoader, yaml.SafeLoader)


def _fill_defaults(config: dict, schema: dict) -> dict:
    filled = dict(config)
    for key, spec in schema["properties"].items():
        filled.setdefault(key, spec["default"])
    for kind in ("optimizers", "losses", "problems"):
        if isinstance(filled[kind], dict):
            filled[kind] = {
                name: {"kwargs": {}, **entry} if isinstance(entry, dict) else entry
                for name, entry in filled[kind].items()
            }
    # A problem's steps default to the top-level steps (budgets: stand in for them).
    if isinstance(filled["problems"], dict):
        filled["problems"] = {
            name: {"steps": filled["steps"], **entry}
            if isinstance(entry, dict) and "budgets" not in entry
            else entry
            for name, entry in filled["problems"].items()
        }
    return filled


def _with_numbers(config: dict, command_line=()) -> dict:
    """The values of the top-level keys given on the command line (``command_line``)
    with their text read as the numbers and booleans it says (``_coerce_text``),
    at any depth: seeds, kwargs, sweeps, search ranges and trials, schedules,
    thresholds. A config file's values are kept as written."""
    return {
        key: _coerce_text(value, True) if key in command_line else value
        for key, value in config.items()
    }


def _merge(base: dict, new: dict) -> None:
    """Merges ``new`` into ``base`` as Snakemake merges config files: mappings key
    by key, anything else replaced."""
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = _merge_copy(value)


def _merge_copy(value):
    if isinstance(value, dict):
        copy: dict = {}
        _merge(copy, value)
        return copy
    return value


def load_config_files(paths) -> dict:
    """Config files read and merged in order, as several --configfile are.

    Snakemake's own loading copies every mapping while it merges, so a mapping
    repeated through YAML aliases is expanded before the workflow can check
    it. Here each file's size is measured right after parsing, while aliases
    are still shared, and an oversized file is refused before anything copies
    it. Problems of every file are reported together.
    """
    merged: dict = {}
    problems = []
    for path in paths:
        try:
            loaded = read_yaml_file(path)
        except (OSError, yaml.YAMLError) as error:
            detail = " ".join(str(error).split())
            what = "cannot be read" if isinstance(error, OSError) else "not valid JSON or YAML"
            problems.append(f"config file {path}: {what} ({detail}). Fix the file.")
            continue
        if loaded is None:
            # As Snakemake, which refuses a config file without keys.
            problems.append(
                f"config file {path}: is empty; a config file must be given as JSON or YAML "
                "with keys at top level. Fix: write the keys to change, e.g. steps: 40, or "
                "leave out --configfile to run config.yaml."
            )
            continue
        if not isinstance(loaded, dict):
            problems.append(
                f"config file {path}: holds {type(loaded).__name__}, not a mapping of keys to "
                "values. Fix: write one key per line, e.g. steps: 40."
            )
            continue
        oversized = _size_problems(loaded)
        if oversized:
            problems += [f"config file {path}: {problem}" for problem in oversized]
            continue
        _merge(merged, loaded)
    if problems:
        raise ConfigError(problems)
    return merged
