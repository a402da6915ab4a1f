"""Checks the workflow configuration and turns it into the experiment grid.

Runs inside every ``snakemake`` invocation, so it stays torch-free and cheap.
Every problem is reported as a ``ConfigError`` whose text names the config key
and says how to fix it; nothing is scheduled until the configuration is clean.
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


class ConfigError(ValueError):
    """The configuration cannot be used; the message says where and how to fix it."""


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
    if validator == "uniqueItems":
        return f"config key {key}: {error.message}. Fix: list each value once."
    fix = f" Fix: {description}" if description else ""
    return f"config key {key}: {error.message}.{fix}"


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


def _check_component(kind: str, name: str, entry: dict, catalog) -> None:
    """Class and keyword checks against the torch source, where it can be read."""
    cls, kwargs = entry["class"], entry["kwargs"]
    key = f"{kind}.{name}"
    module = "torch.optim" if kind == "optimizers" else "torch.nn"
    if kind == "optimizers" and cls in _NEEDS_CLOSURE:
        raise ConfigError(
            f"config key {key}.class: {module}.{cls} needs a closure that re-evaluates "
            "the model at every step, which the reference training loop does not use. "
            "Fix: choose another optimizer class."
        )
    if catalog is None:
        return
    known = catalog.optimizers if kind == "optimizers" else catalog.losses
    what = "an optimizer" if kind == "optimizers" else "a loss"
    if cls not in known:
        close = [k for k in known if k.lower() == cls.lower()]
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"config key {key}.class: {cls!r} is not {what} class in {module}.{hint} "
            f"Fix: use one of {', '.join(sorted(known))}."
        )
    if kind == "optimizers" and "params" in kwargs:
        raise ConfigError(
            f"config key {key}.kwargs: 'params' is supplied by the pipeline (the model's "
            "weights). Fix: remove it from kwargs."
        )
    unknown = known[cls].unknown(kwargs)
    if unknown:
        accepted = [p for p in known[cls].parameters if p != "params"]
        raise ConfigError(
            f"config key {key}.kwargs: {module}.{cls} does not accept "
            f"{', '.join(map(repr, unknown))}. Fix: use only {', '.join(accepted)}."
        )


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
        filled[kind] = {
            name: {"kwargs": {}, **entry} if isinstance(entry, dict) else entry
            for name, entry in (filled[kind] or {}).items()
        }
    return filled


def validate(config: dict, schema_path: str | Path, check_torch: bool = True) -> Experiment:
    """The experiment described by ``config``, or a ConfigError naming the problem."""
    if not isinstance(config, dict):
        raise ConfigError("the configuration must be a mapping of keys to values.")
    schema = load_schema(schema_path)
    config = _fill_defaults(config, schema)
    if isinstance(config["seeds"], list):
        config["seeds"] = _coerce(config["seeds"])
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError("\n".join(_schema_message(e, schema) for e in errors))

    catalog = torch_catalog.load() if check_torch else None
    components = {}
    for kind in ("optimizers", "losses"):
        components[kind] = {}
        for name, entry in config[kind].items():
            entry = {"class": entry["class"], "kwargs": _coerce(entry["kwargs"])}
            _check_component(kind, name, entry, catalog)
            components[kind][name] = Component(name, entry["class"], entry["kwargs"])

    # JSON Schema counts 3.0 as an integer; paths need the int's own text.
    seeds = tuple(int(seed) for seed in config["seeds"])
    return Experiment(
        seeds=seeds,
        steps=int(config["steps"]),
        dim=int(config["dim"]),
        device=config["device"],
        band=config["band"],
        seeds_per_job=_seeds_per_job(config["seeds_per_job"], seeds),
        torch_build=_torch_build(config["torch_build"], config["device"]),
        optimizers=components["optimizers"],
        losses=components["losses"],
    )
