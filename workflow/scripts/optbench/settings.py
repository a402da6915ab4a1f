"""Checks the workflow configuration and turns it into the experiment grid.

Runs inside every ``snakemake`` invocation, so it stays torch-free and cheap.
Every problem found is reported at once, like a linter: one ``ConfigError``
lists them all, each naming its config key and saying how to fix it; nothing
is scheduled until the configuration is clean.

The one exception is size. YAML anchors and aliases let a few hundred bytes
stand for 10^8 values (the parser shares the aliased object, so loading is
cheap, but anything that copies or walks the config expands it). So the
config's expanded size, depth and self-references are measured first, without
expanding anything, and an oversized config is refused before any other check
walks it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import yaml

from optbench import torch_catalog

# Float text that PyYAML's YAML 1.1 rules leave a string: '1e-9' has no dot.
_FLOAT_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")

# Optimizers whose step() needs a closure that re-evaluates the model; the
# reference training loop (one forward/backward per step) cannot drive them.
_NEEDS_CLOSURE = {"LBFGS"}


# Bounds on the configuration, far above any real experiment (the largest
# settings nest five levels deep: optimizers.adam.kwargs.betas.0) and far below
# what makes a dry run slow (100,000 values walk in well under a second).
MAX_VALUES = 100_000
MAX_DEPTH = 16

# The grid's axes, in the order cells are listed; `only:` selects along them.
GRID_AXES = ("losses", "optimizers", "seeds")


class ConfigError(ValueError):
    """The configuration cannot be used; each problem says where and how to fix it."""

    def __init__(self, problems):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class Component:
    """One optimizer or loss of the grid: its name in paths and how to build it."""

    name: str
    cls: str
    kwargs: dict

    def as_dict(self) -> dict:
        return {"name": self.name, "class": self.cls, "kwargs": self.kwargs}


@dataclass(frozen=True)
class SeedBlock:
    """Seeds that one packed training job runs; label is the block's value range."""

    label: str
    seeds: tuple[int, ...]


@dataclass(frozen=True)
class Experiment:
    seeds: tuple[int, ...]
    steps: int
    dim: int
    device: str
    band: str
    seeds_per_job: int  # already resolved: "all" becomes the number of seeds' span
    torch_build: str  # resolved: cuda or cpu
    optimizers: dict[str, Component]
    losses: dict[str, Component]

    @property
    def n_runs(self) -> int:
        return len(self.seeds) * len(self.optimizers) * len(self.losses)

    def seed_blocks(self) -> list[SeedBlock]:
        """The configured seeds grouped by value into blocks of seeds_per_job."""
        blocks: dict[int, list[int]] = {}
        for seed in sorted(self.seeds):
            blocks.setdefault(seed // self.seeds_per_job, []).append(seed)
        size = self.seeds_per_job
        return [
            SeedBlock(f"{index * size}-{(index + 1) * size - 1}", tuple(seeds))
            for index, seeds in sorted(blocks.items())
        ]

    def run_spec(self, loss: str, optimizer: str) -> dict:
        """The settings a training job needs for one (loss, optimizer) cell."""
        return {
            "loss": self.losses[loss].as_dict(),
            "optimizer": self.optimizers[optimizer].as_dict(),
            "steps": self.steps,
            "dim": self.dim,
            "device": self.device,
        }

    def run_spec_json(self, loss: str, optimizer: str) -> str:
        return json.dumps(self.run_spec(loss, optimizer), sort_keys=True)


def _key_path(path) -> str:
    return ".".join(str(part) for part in path) or "(top level)"


def _shorten(text: str, limit: int = 240) -> str:
    """A message line of readable length, however large the offending value."""
    return text if len(text) <= limit else f"{text[: limit // 2]} ... {text[-limit // 3 :]}"


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


def _schema_message(error: jsonschema.ValidationError, schema: dict) -> str:
    """One readable sentence for a schema violation, with the fix taken from the schema."""
    key = _key_path(error.absolute_path)
    # The failing sub-schema's own description, else that of the top-level key.
    top = schema["properties"].get(error.absolute_path[0], {}) if error.absolute_path else {}
    description = " ".join(str(error.schema.get("description", top.get("description", ""))).split())
    validator = error.validator
    if validator == "additionalProperties" and error.schema is schema:
        allowed = ", ".join(sorted(schema["properties"]))
        unknown = sorted(set(error.instance) - set(schema["properties"]))
        return (
            f"unknown config key(s) {', '.join(map(repr, unknown))}. "
            f"Known keys: {allowed}. Fix the spelling or remove the key."
        )
    if validator == "additionalProperties":
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
        return (
            f"config key {key}: {error.message}. Allowed keys there: {allowed}. "
            "Fix the spelling or remove the key."
        )
    if error.validator == "pattern" and "propertyNames" in list(error.absolute_schema_path):
        return (
            f"config key {key}: name {error.instance!r} is not a safe file-name token. "
            f"Fix: rename it; {description}"
        )
    message = _shorten(error.message)
    if validator == "uniqueItems":
        return f"config key {key}: {message}. Fix: list each value once."
    fix = f" Fix: {description}" if description else ""
    return f"config key {key}: {message}.{fix}"


def _coerce(value):
    """Numbers and booleans that arrived as text, read as what they say.

    Two sources give text where a number was meant: PyYAML reads '1e-9' (no
    dot) as a string, and ``snakemake --config`` parses lists and mappings with
    YAML's BaseLoader, which keeps every scalar a string (seeds=[0,1] gives
    ['0', '1']). Torch hyper-parameters and seeds are never strings of that
    shape, so they are converted; other strings are left alone.
    """
    if isinstance(value, str):
        if _FLOAT_TEXT.match(value):
            return float(value)
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        return parsed if isinstance(parsed, int | float | bool) else value
    if isinstance(value, list | tuple):
        return [_coerce(v) for v in value]
    if isinstance(value, dict):
        return {k: _coerce(v) for k, v in value.items()}
    return value


def _yaml_text(value) -> str:
    """A value as a user would write it in config.yaml."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_yaml_text(v) for v in value) + "]"
    return str(value)


def _what(value) -> str:
    """How a wrong value reads in a message: its kind, and the value when short."""
    kind = {bool: "a bool", int: "an integer", float: "a number", str: "the string"}.get(
        type(value)
    )
    if kind is None:
        kind = {dict: "a mapping", list: "a list", tuple: "a list"}.get(type(value), "a value")
    return _shorten(f"{kind} {value!r}", 80)


def _component_problems(kind: str, name: str, entry: dict, catalog) -> list[str]:
    """Class, keyword and keyword-type checks against the torch source, where it can be read."""
    cls, kwargs = entry["class"], entry["kwargs"]
    key = f"{kind}.{name}"
    module = "torch.optim" if kind == "optimizers" else "torch.nn"
    if kind == "optimizers" and cls in _NEEDS_CLOSURE:
        return [
            f"config key {key}.class: {module}.{cls} needs a closure that re-evaluates "
            "the model at every step, which the reference training loop does not use. "
            "Fix: choose another optimizer class."
        ]
    if catalog is None:
        return []
    known = catalog.optimizers if kind == "optimizers" else catalog.losses
    what = "an optimizer" if kind == "optimizers" else "a loss"
    if cls not in known:
        close = [k for k in known if k.lower() == cls.lower()]
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return [
            f"config key {key}.class: {cls!r} is not {what} class in {module}.{hint} "
            f"Fix: use one of {', '.join(sorted(known))}."
        ]
    problems = []
    if kind == "optimizers" and "params" in kwargs:
        problems.append(
            f"config key {key}.kwargs: 'params' is supplied by the pipeline (the model's "
            "weights). Fix: remove it from kwargs."
        )
    signature = known[cls]
    unknown = [arg for arg in signature.unknown(kwargs) if arg != "params"]
    if unknown:
        accepted = [p for p in signature.parameters if p != "params"]
        problems.append(
            f"config key {key}.kwargs: {module}.{cls} does not accept "
            f"{', '.join(map(repr, unknown))}. Fix: use only {', '.join(accepted)}."
        )
    for arg, value in kwargs.items():
        expected = signature.wrong_type(arg, value)
        if expected is not None:
            problems.append(
                f"config key {key}.kwargs.{arg}: {module}.{cls} takes {expected.describe()} "
                f"here (its default is {_yaml_text(expected.default)}), not {_what(value)}. "
                f"Fix: give {expected.describe()}, e.g. {arg}: {_yaml_text(expected.default)}."
            )
    return problems


def _selection(axes: dict[str, tuple], only: dict) -> tuple[dict[str, tuple], list[str]]:
    """The part of the grid that ``only`` keeps, axis by axis, in configured order."""
    selected, problems = {}, []
    for axis, values in axes.items():
        wanted = only.get(axis)
        if wanted is None:
            selected[axis] = values
            continue
        missing = [value for value in wanted if value not in values]
        if missing:
            problems.append(
                f"config key only.{axis}: {', '.join(map(repr, missing))} "
                f"{'is' if len(missing) == 1 else 'are'} not in the configured grid. "
                f"Fix: choose from {', '.join(map(str, values))}."
            )
        selected[axis] = tuple(value for value in values if value in wanted)
    return selected, problems


def _seeds_per_job(value, seeds: tuple[int, ...]) -> int:
    """Block size K of the seed packing; "all" is one block spanning every seed."""
    if value == "all":
        return max(seeds) + 1
    return int(value)


def _torch_build(value: str, device: str) -> str:
    if value != "auto":
        return value
    return "cpu" if device == "cpu" else "cuda"


def load_schema(path: str | Path) -> dict:
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _fill_defaults(config: dict, schema: dict) -> dict:
    filled = dict(config)
    for key, spec in schema["properties"].items():
        filled.setdefault(key, spec["default"])
    for kind in ("optimizers", "losses"):
        if isinstance(filled[kind], dict):
            filled[kind] = {
                name: {"kwargs": {}, **entry} if isinstance(entry, dict) else entry
                for name, entry in filled[kind].items()
            }
    return filled


def _with_numbers(config: dict) -> dict:
    """Seeds, kwargs and `only` with command-line text read as numbers (see _coerce)."""
    config = dict(config)
    config["seeds"] = _coerce(config["seeds"])
    if isinstance(config["only"], dict):
        config["only"] = _coerce(config["only"])
    for kind in ("optimizers", "losses"):
        if isinstance(config[kind], dict):
            config[kind] = {
                name: {**entry, "kwargs": _coerce(entry["kwargs"])}
                if isinstance(entry, dict) and isinstance(entry.get("kwargs"), dict)
                else entry
                for name, entry in config[kind].items()
            }
    return config


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
            with open(path, encoding="utf-8") as handle:
                loaded = yaml.safe_load(handle)
        except (OSError, yaml.YAMLError) as error:
            detail = " ".join(str(error).split())
            problems.append(f"config file {path}: cannot be read ({detail}). Fix the file.")
            continue
        if loaded is None:
            loaded = {}
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


def validate(config: dict, schema_path: str | Path, check_torch: bool = True) -> Experiment:
    """The experiment described by ``config``, or a ConfigError listing every problem."""
    if not isinstance(config, dict):
        raise ConfigError("the configuration must be a mapping of keys to values.")
    # First, because every later step walks (and _coerce copies) the config.
    oversized = _size_problems(config)
    if oversized:
        raise ConfigError(oversized)
    schema = load_schema(schema_path)
    config = _with_numbers(_fill_defaults(config, schema))
    validator = jsonschema.Draft202012Validator(schema)
    schema_errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    problems = [_schema_message(e, schema) for e in schema_errors]
    # Later checks skip what the schema already refused, so no key is reported twice.
    refused = {tuple(e.absolute_path)[:2] for e in schema_errors}
    refused_keys = {path[0] for path in refused if path}

    catalog = torch_catalog.load() if check_torch else None
    components = {}
    for kind in ("optimizers", "losses"):
        if not isinstance(config[kind], dict):
            continue
        components[kind] = {}
        for name, entry in config[kind].items():
            if (kind, name) in refused or not isinstance(entry, dict):
                continue
            problems += _component_problems(kind, name, entry, catalog)
            components[kind][name] = Component(name, entry["class"], entry["kwargs"])

    # The selection is checked whenever the names it refers to are readable.
    if "only" not in refused_keys and all(
        isinstance(config[axis], dict | list) for axis in GRID_AXES
    ):
        axes = {axis: tuple(config[axis]) for axis in GRID_AXES}
        selected, selection_problems = _selection(axes, config["only"])
        problems += selection_problems
    if problems:
        raise ConfigError(problems)

    # JSON Schema counts 3.0 as an integer; paths need the int's own text.
    configured_seeds = tuple(int(seed) for seed in config["seeds"])
    return Experiment(
        seeds=tuple(int(seed) for seed in selected["seeds"]),
        steps=int(config["steps"]),
        dim=int(config["dim"]),
        device=config["device"],
        band=config["band"],
        # From every configured seed, so that `only` never changes how seeds are packed.
        seeds_per_job=_seeds_per_job(config["seeds_per_job"], configured_seeds),
        torch_build=_torch_build(config["torch_build"], config["device"]),
        optimizers={n: components["optimizers"][n] for n in selected["optimizers"]},
        losses={n: components["losses"][n] for n in selected["losses"]},
    )
