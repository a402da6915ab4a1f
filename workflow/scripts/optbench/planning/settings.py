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

import dataclasses
import difflib
import hashlib
import importlib.metadata
import json
from pathlib import Path
from typing import TYPE_CHECKING

from optbench import grid, problems, schedules
from optbench.planning import (
    batch_policy,
    cost,
    disk_cache,
    jobs,
    optimizer_sources,
    search,
    torch_catalog,
)

# The domain model and the file loading live beside this module; callers
# use them through settings, the one entry point of the configuration.
from optbench.planning.config_files import (
    ConfigError,
    _fill_defaults,
    _key_path,
    _size_problems,
    _with_numbers,
    load_config_files,  # noqa: F401 (callers' entry point)
    load_schema,
    numbers_from_text,
)
from optbench.planning.experiment import (
    GRID_AXES,
    OBJECTIVE,
    Cell,  # noqa: F401 (callers' entry point)
    Component,
    Experiment,
    Optimizer,
    Problem,
)
from optbench.reporting import analysis_context, outputs

if TYPE_CHECKING:
    import jsonschema

# Optimizers that work only with sparse gradients; every problem's model has
# dense ones, so such a class would fail in its first step.
_NEEDS_SPARSE_GRADIENTS = {"SparseAdam"}


def _shorten(text: str, limit: int = 240) -> str:
    """A message line of readable length, however large the offending value."""
    return text if len(text) <= limit else f"{text[: limit // 2]} ... {text[-limit // 3 :]}"


# Names other tools give to keys this pipeline spells otherwise: the fix names ours.
OTHER_TOOLS_NAMES = {
    "scheduler": "schedule",
    "lr_scheduler": "schedule",
    "param_groups": "groups",
}


def _unknown_key_fix(unknown: list[str], known: list[str]) -> str:
    """What to do about unknown keys: another tool's name for one of ours, else the spelling."""
    ours = {k: OTHER_TOOLS_NAMES[k] for k in unknown if OTHER_TOOLS_NAMES.get(k) in known}
    if ours:
        renames = ", ".join(f"{k!r} -> {v!r}" for k, v in ours.items())
        return f"Fix: this pipeline names the key differently ({renames}); see the schema."
    close = {k: difflib.get_close_matches(k, known, n=1, cutoff=0.6) for k in unknown}
    hints = [f"{k!r} -> {m[0]!r}" for k, m in close.items() if m]
    guess = f" (did you mean {', '.join(hints)}?)" if hints else ""
    return f"Fix the spelling{guess} or remove the key."


# The schema check's verdict on configs it passed, on disk (disk_cache): each
# snakemake start checks the same config again, and importing jsonschema alone
# costs about 0.04 s of CPU. The verdict is a function of the schema, the config
# and jsonschema's version, which make the key (as exact JSON: 1, 1.0 and true
# stay apart), so a kept verdict is used only where a check would find the
# same. A config the schema refuses is checked every time (its messages).
_PASSED_CACHE = "schema-passed.json"


def _exact_json(value) -> bool:
    """Whether JSON text holds ``value`` exactly (no tuples, keys all strings)."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _exact_json(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_exact_json(item) for item in value)
    return value is None or isinstance(value, str | int | float)


def _passed_key(schema: dict, config: dict) -> str | None:
    """The key of (schema, config, jsonschema's version), or None where there is none."""
    try:
        version = importlib.metadata.version("jsonschema")
    except importlib.metadata.PackageNotFoundError:
        return None
    if not (_exact_json(schema) and _exact_json(config)):
        return None
    text = json.dumps([version, schema, config], sort_keys=True, allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _schema_errors(schema: dict, config: dict) -> list:
    """jsonschema's errors for ``config`` (Draft 2020-12), by path; none, without
    importing jsonschema, where this schema passed this config before."""
    key = _passed_key(schema, config)
    if key is not None and disk_cache.read(_PASSED_CACHE).get(key) is True:
        return []
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if not errors and key is not None:
        disk_cache.add(_PASSED_CACHE, {key: True})
    return errors


def _schema_message(error: jsonschema.ValidationError, schema: dict) -> str:
    """One readable sentence for a schema violation, with the fix taken from the schema."""
    key = _key_path(error.absolute_path)
    # The failing sub-schema's own description, else that of the top-level key.
    top = schema["properties"].get(error.absolute_path[0], {}) if error.absolute_path else {}
    description = " ".join(str(error.schema.get("description", top.get("description", ""))).split())
    validator = error.validator
    if validator == "additionalProperties":
        known = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(known))
        where, listed = (
            ("unknown config key(s)", "Known keys")
            if error.schema is schema
            else (f"config key {key}: unknown key(s)", "Allowed keys there")
        )
        return (
            f"{where} {', '.join(map(repr, unknown))}. {listed}: {', '.join(known)}. "
            f"{_unknown_key_fix(unknown, known)}"
        )
    if error.validator == "pattern" and "propertyNames" in list(error.absolute_schema_path):
        return (
            f"config key {key}: name {error.instance!r} is not a safe file-name token. "
            f"Fix: rename it; {description}"
        )
    message = _shorten(error.message)
    path = list(error.absolute_path)
    if (
        validator == "type"
        and len(path) == 4
        and path[0] == "optimizers"
        and path[2] == "sweep"
        and isinstance(error.instance, dict)
    ):
        return (
            f"config key {key}: a sweep lists the values to try; got a mapping "
            f"({_shorten(repr(error.instance), 80)}). Fix: give a list, e.g. "
            f"{path[3]}: [0.001, 0.01, 0.1], or draw values from a range with search: "
            f"{{trials: 16, space: {{{path[3]}: {{scale: log, low: 0.001, high: 1.0}}}}}}."
        )
    if validator == "contains" and "const" in error.schema["contains"]:
        required = error.schema["contains"]["const"]
        return f"config key {key}: {_what(error.instance)} lacks {required!r}. Fix: {description}"
    if validator == "uniqueItems":
        return f"config key {key}: {message}. Fix: list each value once."
    fix = f" Fix: {description}" if description else ""
    return f"config key {key}: {message}.{fix}"


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


def _component_errors(
    kind: str, name: str, entry: dict, catalog, optimizers_dir: Path | None = None
) -> list[str]:
    """Class, keyword and keyword-type checks against the class's signature: torch's
    source, where it can be read, for torch classes; for optimizers also a package's
    class (imported) or a file's of optimizers_dir (read) (optimizer_sources)."""
    cls, kwargs = entry["class"], entry["kwargs"]
    key = f"{kind}.{name}"
    module = "torch.optim" if kind == "optimizers" else "torch.nn"
    if kind == "optimizers" and cls in _NEEDS_SPARSE_GRADIENTS:
        return [
            f"config key {key}.class: {module}.{cls} works only with sparse gradients, and "
            "every problem's model has dense ones. Fix: choose another optimizer class "
            "(Adam is the dense counterpart of SparseAdam)."
        ]
    if kind == "optimizers":
        try:
            source = optimizer_sources.locate(cls, optimizers_dir)
            signature = optimizer_sources.signature_of(source, catalog)
            optimizer_sources.declared_protocol(source)
        except optimizer_sources.SourceError as error:
            return [f"config key {key}.class: {error}."]
        if signature is None and entry.get("base") is None:
            return []
        wrapper_errors, signature = _wrapper_errors(
            key, entry, source, signature, catalog, optimizers_dir
        )
        if wrapper_errors or signature is None:
            return wrapper_errors
        module, cls = source.module, source.name
        if entry.get("base") is not None:
            cls += f" around {entry['base']}"  # kwargs go to the wrapper and its base
    else:
        if catalog is None:
            return []
        if cls not in catalog.losses:
            close = [k for k in catalog.losses if k.lower() == cls.lower()]
            hint = f" Did you mean {close[0]!r}?" if close else ""
            return [
                f"config key {key}.class: {cls!r} is not a loss class in {module}.{hint} "
                f"Fix: use one of {', '.join(sorted(catalog.losses))}."
            ]
        signature = catalog.losses[cls]
    errors = []
    if kind == "optimizers" and "params" in kwargs:
        errors.append(
            f"config key {key}.kwargs: 'params' is supplied by the pipeline (the model's "
            "weights). Fix: remove it from kwargs."
        )
    unknown = [arg for arg in signature.unknown(kwargs) if arg != "params"]
    if unknown:
        accepted = [p for p in signature.parameters if p != "params"]
        errors.append(
            f"config key {key}.kwargs: {module}.{cls} does not accept "
            f"{', '.join(map(repr, unknown))}. Fix: use only {', '.join(accepted)}."
        )
    errors += _type_errors(f"{key}.kwargs", module, cls, signature, kwargs)
    sweep = {
        arg: values
        for arg, values in (entry.get("sweep") or {}).items()
        if not arg.startswith(grid.SCHEDULE_PREFIX)
    }
    unknown = [arg for arg in signature.unknown(sweep) if arg != "params"]
    if unknown or "params" in sweep:
        accepted = [p for p in signature.parameters if p != "params"]
        errors.append(
            f"config key {key}.sweep: {module}.{cls} does not accept "
            f"{', '.join(map(repr, unknown or ['params']))}. Fix: sweep only "
            f"{', '.join(accepted)}."
        )
    for arg, values in sweep.items():
        errors += _type_errors(
            f"{key}.sweep", module, cls, signature, {f"{arg}.{i}": v for i, v in enumerate(values)}
        )
    if kind == "optimizers" and entry.get("search"):
        errors += _search_errors(key, module, cls, signature, entry)
    if kind == "optimizers":
        errors += _schedule_errors(key, entry, catalog, source)
    return errors


def _wrapper_errors(key: str, entry: dict, source, signature, catalog, optimizers_dir):
    """(errors, the signature kwargs are checked against) of an entry's ``base:``:
    given exactly where the class is a wrapper, a plain optimizer the loop can
    drive inside it; kwargs then go to the wrapper and the base together."""
    base = entry.get("base")
    keyword = signature and optimizer_sources.wrapper_keyword(signature)
    unsuppliable = [
        f"{name} ({what})"
        for name, what in optimizer_sources.UNSUPPLIABLE.items()
        if signature is not None and name in signature.parameters
    ]
    if unsuppliable:
        return [
            f"config key {key}.class: {source.qualified} needs {unsuppliable[0]} as an argument, "
            "which a config cannot give. Fix: use another class (pytorch_optimizer.SAM for "
            "sharpness-aware minimisation)."
        ], None
    if base is None:
        if keyword is None:
            return [], signature
        return [
            f"config key {key}: {source.qualified} wraps a base optimizer (its {keyword} "
            "argument), and the entry names none. Fix: add base: with the class it wraps, e.g. "
            "base: AdamW (its kwargs go in the same kwargs)."
        ], None
    if signature is not None and keyword is None:
        return [
            f"config key {key}.base: {source.qualified} takes no base optimizer (it is not a "
            f"wrapper: its __init__ has no {' or '.join(optimizer_sources.WRAPPER_KEYWORDS)} "
            "argument). Fix: remove base, or use a wrapper class such as "
            "pytorch_optimizer.Lookahead or pytorch_optimizer.SAM."
        ], None
    try:
        base_source = optimizer_sources.locate(base, optimizers_dir)
        base_signature = optimizer_sources.signature_of(base_source, catalog)
    except optimizer_sources.SourceError as error:
        return [f"config key {key}.base: {error}."], None
    if base_signature is None or signature is None:
        return [], None  # torch's source unreadable: the job checks
    refused = _base_refusal(base_source, base_signature)
    if refused:
        return [
            f"config key {key}.base: {base_source.qualified} cannot be the base of "
            f"{source.qualified}: it {refused}. Fix: wrap an optimizer that steps on the "
            "gradients it is given (AdamW, SGD, pytorch_optimizer.Lion)."
        ], None
    if keyword in entry["kwargs"]:
        return [
            f"config key {key}.kwargs: {keyword!r} is supplied by the pipeline (the base "
            f"optimizer's class, from base:). Fix: remove it from kwargs."
        ], None
    return [], optimizer_sources.wrapped_signature(signature, base_signature)


def _base_refusal(source, signature) -> str | None:
    """Why a class cannot be a wrapper's base (None: it can)."""
    if optimizer_sources.wrapper_keyword(signature):
        return "is itself a wrapper"
    if optimizer_sources.has_train_eval(source):
        return "has train() and eval() modes (schedule-free), which a wrapper does not switch"
    if source.origin == "torch" and source.name == "LBFGS":
        return "evaluates the loss itself (a closure)"
    if source.origin == "package":
        from optbench.engines import optimizers  # the package's import brought torch

        found = optimizers.describe(optimizers.resolve(source.qualified))
        if found.closure != "none":
            return "needs a closure"
    elif optimizer_sources.declared_protocol(source).get("closure", "none") != "none":
        return "needs a closure"
    return None


def _schedule_errors(key: str, entry: dict, catalog, source) -> list[str]:
    """The entry's schedule, and the schedule parameters its sweep or search varies."""
    schedule = entry.get("schedule")
    varied = [
        name
        for name in [*(entry.get("sweep") or {}), *((entry.get("search") or {}).get("space", {}))]
        if name.startswith(grid.SCHEDULE_PREFIX)
    ]
    if schedule is None:
        return [
            f"config key {key}: {name} varies a schedule parameter, but the entry has no "
            "schedule. Fix: add schedule: {family: warmup_cosine} (or another family)."
            for name in varied
        ]
    key = f"{key}.schedule"
    found = schedules.shape_problems(key, schedule)
    if found:
        return found
    if "family" in schedule:
        found = schedules.family_problems(key, schedule)
        taken = schedules.FAMILIES.get(schedule["family"], {})
    else:
        found, taken = _scheduler_class_errors(key, schedule, catalog)
    for name in varied:
        parameter = name.removeprefix(grid.SCHEDULE_PREFIX)
        if taken is not None and parameter not in taken:
            found.append(
                f"config key {key}: {name} is varied, but the schedule takes no "
                f"{parameter!r}. Fix: vary one of {', '.join(taken) or 'nothing'}."
            )
    if schedule.get("family") not in schedules.WARMUP_ONLY and optimizer_sources.has_train_eval(
        source
    ):
        found.append(
            f"config key {key}: {source.qualified} averages its own iterates (train()/eval() "
            "modes: schedule-free), so it takes a warm-up only. Fix: use family: warmup, or "
            "no schedule."
        )
    return found


def _scheduler_class_errors(key: str, schedule: dict, catalog):
    """(errors, parameters it takes or None when unknown) of a
    torch.optim.lr_scheduler class and its keyword arguments."""
    name = schedule["class"]
    if catalog is None:
        return [], None
    usable = {
        n: signature
        for n, signature in catalog.schedulers.items()
        if n not in schedules.UNSUPPORTED_CLASSES
    }
    if name not in usable:
        return [
            f"config key {key}.class: {name!r} is not a torch.optim.lr_scheduler class. "
            f"Fix: use one of {', '.join(sorted(usable))}, or family: a built-in schedule."
        ], None
    signature = usable[name]
    kwargs = {k: v for k, v in schedule.items() if k != "class"}
    taken = [p for p in signature.parameters if p not in schedules.SUPPLIED]
    unknown = [k for k in signature.unknown(kwargs) if k not in schedules.SUPPLIED]
    unknown += [k for k in kwargs if k in schedules.SUPPLIED]
    found = []
    if unknown:
        found.append(
            f"config key {key}: torch.optim.lr_scheduler.{name} does not take "
            f"{', '.join(map(repr, unknown))} (the optimizer is supplied by the pipeline). "
            f"Fix: use only {', '.join(taken)}."
        )
    found += _type_errors(key, "torch.optim.lr_scheduler", name, signature, kwargs)
    return found, taken


def _search_errors(key: str, module: str, cls: str, signature, entry: dict) -> list[str]:
    """A search's ranges, and that each names an argument the class takes, of its kind."""
    if entry.get("sweep"):
        return [
            f"config key {key}: both sweep and search. Fix: keep one (a search draws its "
            "values; a sweep lists them)."
        ]
    errors = []
    space_key = f"{key}.search.space"
    for name, spec in entry["search"]["space"].items():
        found = search.range_problems(space_key, name, spec)
        if found:
            errors += found
            continue
        if name.startswith(grid.SCHEDULE_PREFIX):
            continue  # a schedule parameter (_schedule_errors)
        argument, index = search.argument_of(name)
        if signature.unknown([argument]) or argument == "params":
            accepted = [p for p in signature.parameters if p != "params"]
            errors.append(
                f"config key {space_key}.{name}: {module}.{cls} does not accept {argument!r}. "
                f"Fix: search only {', '.join(accepted)}."
            )
            continue
        given = entry["kwargs"].get(argument)
        if index is not None and not (isinstance(given, list) and index < len(given)):
            errors.append(
                f"config key {space_key}.{name}: searches element {index} of {argument}, but "
                f"kwargs gives no {argument} with that element. Fix: give the whole tuple in "
                f"kwargs, e.g. {argument}: [0.9, 0.999]."
            )
            continue
        expected = signature.expected.get(argument)
        if expected is not None and expected.kind == "sequence" and index is not None:
            items = expected.items or ()
            expected = items[index] if index < len(items) else None
        if spec["scale"] == "integer" and expected is not None and expected.kind == "number":
            errors.append(
                f"config key {space_key}.{name}: an integer range, but {module}.{cls}'s "
                f"{name} is a float (not annotated int; its default is {expected.default}). "
                "Fix: use scale log or linear."
            )
    return errors


def _type_errors(key: str, module: str, cls: str, signature, kwargs: dict) -> list[str]:
    """Keyword values whose type differs from what torch's default tells.

    Keys may carry a list position (``lr.2`` for the third swept value); the
    argument is the part before the dot.
    """
    errors = []
    for label, value in kwargs.items():
        arg = label.split(".")[0]
        expected = signature.wrong_type(arg, value)
        if expected is not None:
            errors.append(
                f"config key {key}.{label}: {module}.{cls} takes {expected.describe()} "
                f"here (its default is {_yaml_text(expected.default)}), not {_what(value)}. "
                f"Fix: give {expected.describe()}, e.g. {arg}: {_yaml_text(expected.default)}."
            )
    return errors


def _variants(entry: dict) -> list[grid.Variant]:
    """The entry's variants: its search's trials, or its sweep's combinations."""
    if entry.get("search"):
        return search.expand_search(entry["kwargs"], entry["search"], entry.get("schedule"))
    return grid.expand_sweep(entry["kwargs"], entry.get("sweep") or {}, entry.get("schedule"))


def _variant_errors(name: str, entry: dict) -> list[str]:
    """Sweep values that cannot name a variant (file-name-safe, distinct), and
    varied schedule parameters out of their range."""
    schedule = entry.get("schedule")
    if schedule and "family" in schedule:
        found = dict.fromkeys(
            problem
            for variant in _variants(entry)
            for problem in schedules.family_problems(
                f"optimizers.{name}.schedule", variant.schedule
            )
        )
        if found:
            return [f"{problem} (in a swept or searched variant)" for problem in found]
    if entry.get("search"):
        return []  # drawn values: numbers, named by search.trial_name; checked above
    try:
        variants = _variants(entry)
    except TypeError as error:
        return [
            f"config key optimizers.{name}.sweep: {error}. Fix: sweep numbers, bools, "
            "short strings or lists of numbers."
        ]
    names = [variant.name for variant in variants]
    bad = [n for n in names if not grid.SAFE_NAME.fullmatch(n)]
    if bad:
        return [
            f"config key optimizers.{name}.sweep: the variant name(s) {', '.join(map(repr, bad))} "
            "made from the swept values are not safe file names. Fix: sweep numbers, bools "
            "or strings of letters, digits, '.', '_' and '-'."
        ]
    return []


def _size_axis(name: str, entry: dict, declaration) -> tuple[list[str], dict]:
    """The entry's sizes (size name -> its parameters; {None: {}} without a size
    axis), or why they cannot be used."""
    key = f"problems.{name}"
    wanted = entry.get("sizes")
    if wanted is None:
        return [], {None: {}}
    declared = declaration.facts.sizes
    if not declared:
        return [
            f"config key {key}.sizes: problem {declaration.name!r} declares no sizes (SIZES in "
            f"{declaration.path}). Fix: remove sizes, or declare SIZES and PARAMETER_COUNT "
            "there (docs/problems.md#sizes)."
        ], {}
    names = list(declared) if wanted == "all" else wanted
    unknown = [size for size in names if size not in declared]
    if unknown:
        return [
            f"config key {key}.sizes: {', '.join(map(repr, unknown))} not among the sizes of "
            f"problem {declaration.name!r}. Fix: choose from {', '.join(declared)}, or all."
        ], {}
    given = entry.get("kwargs") or {}
    found = []
    for size in names:
        clash = sorted(set(declared[size]) & set(given))
        if clash:
            found.append(
                f"config key {key}.kwargs: {', '.join(clash)} {'is' if len(clash) == 1 else 'are'}"
                f" set by size {size!r} too. Fix: leave {', '.join(clash)} to the sizes, or "
                "remove sizes."
            )
    # In the file's order (smallest first), whatever the order of the list.
    return found, {size: declared[size] for size in declared if size in names}


def _tune_at_errors(key: str, entry: dict, axis: dict) -> list[str]:
    """tune_at: names sizes and budgets of the entry's own axes."""
    tune_at = entry.get("tune_at")
    if tune_at is None:
        return []
    found = []
    if "sizes" in tune_at:
        unknown = [size for size in tune_at["sizes"] if size not in axis]
        if unknown:
            sizes = ", ".join(s for s in axis if s is not None) or "none"
            found.append(
                f"config key {key}.tune_at.sizes: {', '.join(map(str, unknown))} not among the "
                f"entry's sizes. Fix: choose from its sizes: ({sizes})."
            )
    if "budgets" in tune_at:
        budgets = entry.get("budgets") or []
        unknown = [b for b in tune_at["budgets"] if b not in budgets]
        if unknown:
            found.append(
                f"config key {key}.tune_at.budgets: {', '.join(map(str, unknown))} not among the "
                f"entry's budgets. Fix: choose from its budgets: "
                f"({', '.join(map(str, budgets)) or 'none'})."
            )
    return found


def _tuned_here(entry: dict, size: str | None, budget: int | None) -> bool:
    tune_at = entry.get("tune_at") or {}
    return (size is None or size in tune_at.get("sizes", [size])) and (
        budget is None or budget in tune_at.get("budgets", [budget])
    )


def expanded_name(entry: str, size: str | None, budget: int | None) -> str:
    """The problem name of one (size, budget) of an entry: <entry>[-<size>][-b<steps>]."""
    return (
        entry
        + (f"-{size}" if size is not None else "")
        + (f"-b{budget}" if budget is not None else "")
    )


def _checked_problem_entry(
    name: str, entry: dict, losses: dict, user_dir
) -> tuple[list[str], list[Problem]]:
    """A problem entry's errors (registered name, parameters, losses), and its
    problems: the entry itself, or one per (size, budget) where it has sizes:
    or budgets: (docs/configuration.md#sizes-and-budgets)."""
    key = f"problems.{name}"
    registered = entry.get("problem", name)
    try:
        declaration = problems.declaration(registered, user_dir)
    except problems.ProblemError as error:
        return [f"config key {key}.problem: {error}"], []
    found, axis = _size_axis(name, entry, declaration)
    found += _tune_at_errors(key, entry, axis)
    if "budgets" in entry and "steps" in entry:
        found.append(
            f"config key {key}: both steps and budgets. Fix: give budgets (each its own run "
            "length) or steps, not both."
        )
    for size, size_kwargs in axis.items():
        where = f"{key}.kwargs" if size is None else f"{key}.sizes.{size}"
        found += [
            f"config key {problem}"
            for problem in problems.check_parameters(
                declaration, {**(entry.get("kwargs") or {}), **size_kwargs}, key=where
            )
        ]
    listed = entry.get("losses")
    if declaration.kind == "objective":
        if listed:
            found.append(
                f"config key {key}.losses: problem {registered!r} is an objective, minimised "
                "directly, so no loss applies. Fix: remove the losses of this entry."
            )
        chosen: tuple[str, ...] = (OBJECTIVE,)
    elif listed is None:
        chosen = tuple(
            loss for loss, component in losses.items() if component.cls in declaration.losses
        )
        if not chosen:
            found.append(
                f"config key {key}: no configured loss fits problem {registered!r} "
                f"(a {declaration.kind} problem). Fix: add a loss of class "
                f"{' or '.join(declaration.losses)} under losses."
            )
    else:
        chosen = tuple(listed)
        for loss in listed:
            if loss not in losses:
                found.append(
                    f"config key {key}.losses: {loss!r} is not a configured loss. "
                    f"Fix: choose from {', '.join(losses)}."
                )
                continue
            mismatch = problems.loss_error(declaration, losses[loss].cls)
            if mismatch:
                found.append(f"config key {key}.losses: {loss!r}: {mismatch}")
    if found:
        return found, []
    source = None if problems.is_builtin(declaration.path) else declaration.sha256
    budgets = entry.get("budgets")
    on_axis = budgets is not None or entry.get("sizes") is not None
    made = []
    for size, size_kwargs in axis.items():
        resolved = problems.resolve_parameters(
            declaration, {**(entry.get("kwargs") or {}), **size_kwargs}
        )
        count = declaration.facts.count_at(resolved)
        default_count = declaration.facts.count_at(declaration.parameters)
        factor = max(1.0, count / default_count) if count and default_count else 1.0
        for budget in sorted(budgets) if budgets is not None else [None]:
            made.append(
                Problem(
                    expanded_name(name, size, budget) if on_axis else name,
                    registered,
                    declaration.kind,
                    resolved,
                    chosen,
                    int(entry["steps"] if budget is None else budget),
                    source,
                    declaration.facts,
                    family=name if on_axis else None,
                    size=size,
                    parameter_count=count,
                    tuned=_tuned_here(entry, size, budget),
                    step_cost_factor=factor,
                )
            )
    return [], made


def _selection(axes: dict[str, tuple], only: dict) -> tuple[dict[str, tuple], list[str]]:
    """The part of the grid that ``only`` keeps, axis by axis, in configured order."""
    selected, errors = {}, []
    for axis, values in axes.items():
        wanted = only.get(axis)
        if wanted is None:
            selected[axis] = values
            continue
        missing = [value for value in wanted if value not in values]
        if missing:
            errors.append(
                f"config key only.{axis}: {', '.join(map(repr, missing))} "
                f"{'is' if len(missing) == 1 else 'are'} not in the configured grid. "
                f"Fix: choose from {', '.join(map(str, values))}."
            )
        selected[axis] = tuple(value for value in values if value in wanted)
    return selected, errors


def _checkpoint_every(value: dict) -> tuple[int, float]:
    """(steps, seconds) of config key checkpoint_every; a key left out takes its default."""
    return int(value.get("steps", 0)), float(value.get("seconds", 120))


def _seeds_per_job(value, seeds: tuple[int, ...]) -> int:
    """Range size K of the seed packing; "all" is one range spanning every seed."""
    if value == "all":
        return max(seeds) + 1
    return int(value)


def _engine_errors(experiment: Experiment, optimizers_dir: Path | None) -> list[str]:
    """engine: batched promises that every cell trains batched; say which cannot, before any job.

    Asks batch_policy.choose_engine as the job does; a class from a package or a
    file is probed here (engines/probe.py, which imports torch and the class)
    with every variant's kwargs, as the job would probe it: the refusal comes
    before any job, in the job's words."""
    if experiment.engine != "batched":
        return []
    refused = {}
    verdicts = {}  # optimizer name -> (ok, reason): one probe per entry
    for cell in experiment.cells():
        problem = experiment.problems[cell.problem]
        optimizer = experiment.optimizers[cell.optimizer]
        loss = None if cell.loss == OBJECTIVE else experiment.losses[cell.loss]

        def probe(cell=cell):
            if cell.optimizer not in verdicts:
                verdicts[cell.optimizer] = _probe_verdict(experiment, cell, optimizers_dir)
            return verdicts[cell.optimizer]

        choice = batch_policy.choose_engine(
            "batched",
            optimizer.cls,
            problem.kind,
            loss and loss.cls,
            loss and loss.kwargs,
            grouped=bool(optimizer.groups),
            probe=probe,
        )
        if not choice.batched:
            refused.setdefault(choice.reason, []).append(
                f"{cell.problem}/{cell.loss}/{cell.optimizer}"
            )
    return [batch_policy.batched_refusal(cells, reason) for reason, cells in refused.items()]


def _probe_verdict(experiment: Experiment, cell: Cell, optimizers_dir) -> tuple[bool, str]:
    """The training job's verdict on a package's or a file's class, at plan time."""
    from optbench.engines import probe, training  # torch: only for such a class

    entries = [
        experiment.run_spec(dataclasses.replace(cell, variant=variant))["optimizer"]
        for variant in experiment.optimizers[cell.optimizer].variants
    ]
    kwargs = [training.optimizer_kwargs(entry) for entry in entries]
    try:
        return probe.class_verdict(entries[0], optimizers_dir, kwargs)
    except training.RunError as error:
        return False, str(error)


def _job_size_errors(experiment: Experiment) -> list[str]:
    """A job whose argument would not fit on a command line (jobs.MAX_ARGUMENT)."""
    if experiment.job_scope == "cell":
        return []  # one cell's argument is a few hundred bytes
    for job in experiment.training_jobs():
        size = len(jobs.argument(experiment, job.cells, job.seeds, "", ""))
        if size > jobs.MAX_ARGUMENT:
            return [
                f"config key job_scope: {experiment.job_scope!r} makes a training job of "
                f"{len(job.cells)} cells ({'/'.join(job.key)}) whose description takes "
                f"{size} bytes, over the {jobs.MAX_ARGUMENT} a command line can carry. "
                "Fix: a finer job_scope (optimizer or cell)."
            ]
    return []


def _run_files_errors(experiment: Experiment) -> list[str]:
    """run_files per_job writes one file per packed job; one run a job has none to pack."""
    if experiment.run_files != "per_job":
        return []
    if experiment.job_scope == "cell" and experiment.seeds_per_job == 1:
        return [
            "config key run_files: per_job writes one run file per training job, but "
            "job_scope cell with seeds_per_job 1 makes a job of each run. Fix: "
            "run_files: per_run, or pack runs (seeds_per_job above 1 or job_scope loss)."
        ]
    return []


def _torch_build(value: str, device: str) -> str:
    if value != "auto":
        return value
    return "cpu" if device == "cpu" else "cuda"


def _moved_key_errors(config: dict) -> list[str]:
    """Keys of earlier versions that have a new place, with where to put them."""
    if "dim" in config:
        return [
            "config key dim: the model width is now a parameter of the problem. Fix: remove "
            "dim and set problems.linear.kwargs.dim (e.g. problems: {linear: {kwargs: "
            "{dim: 20}}})."
        ]
    return []


def _seed_role_errors(config: dict) -> list[str]:
    """Tuning and evaluation seeds must be disjoint, and a sweep needs tuning seeds."""
    found = []
    seeds, tuning = config["seeds"], config["tuning_seeds"]
    if isinstance(seeds, list) and isinstance(tuning, list):
        shared = sorted(set(seeds) & set(tuning), key=str)
        if shared:
            found.append(
                f"config keys seeds and tuning_seeds share {', '.join(map(str, shared))}: a seed "
                "used to pick the variants would also report the comparison. Fix: keep the two "
                "lists disjoint, e.g. tuning_seeds: [100, 101, 102, 103, 104]."
            )
    if isinstance(config["optimizers"], dict) and isinstance(tuning, list) and not tuning:
        swept = [
            name
            for name, entry in config["optimizers"].items()
            if isinstance(entry, dict) and (entry.get("sweep") or entry.get("search"))
        ]
        if swept:
            found.append(
                f"config key tuning_seeds is empty, but optimizers {', '.join(swept)} sweep "
                "or search hyper-parameters, and variants are picked on tuning seeds only. "
                "Fix: set tuning_seeds to seeds not in seeds, e.g. "
                "tuning_seeds: [100, 101, 102, 103, 104]."
            )
    return found


def validate(
    config: dict,
    schema_path: str | Path,
    check_torch: bool = True,
    problems_dir: str | Path | None = None,
    command_line: dict | None = None,
    memory_bytes: int | str | None = "machine",
    optimizers_dir: str | Path | None = None,
) -> Experiment:
    """The experiment described by ``config``, or a ConfigError listing every problem.

    ``problems_dir`` is the user folder of problem files (the repository's
    ``problems/``), searched beside the built-in problems; ``optimizers_dir``
    the folder of users' optimizer files (``optimizers/``), for
    ``class: module.Class``. ``command_line``:
    the values given with ``snakemake --config`` (already merged into
    ``config``), whose keys' text is read as numbers where it says one.
    ``memory_bytes``: the memory the largest training job must fit in
    (optbench.planning.cost): "machine" (this machine's), a number, or None (not
    checked: jobs that run elsewhere, e.g. on a cluster's nodes).
    """
    if not isinstance(config, dict):
        raise ConfigError("the configuration must be a mapping of keys to values.")
    # First, because every later step walks (and _coerce_text copies) the config.
    oversized = _size_problems(config)
    if oversized:
        raise ConfigError(oversized)
    moved = _moved_key_errors(config) + analysis_context.band_problems(config)
    config = {key: value for key, value in config.items() if key != "dim"}
    if analysis_context.band_problems(config):
        config.pop("band")  # reported above with the new values; the schema adds the default
    schema = load_schema(schema_path)
    # The workflow gets the config as Snakemake read it (YAML 1.1: 1e-4 is text).
    config = numbers_from_text(config)
    config = _with_numbers(_fill_defaults(config, schema), set(command_line or ()))
    schema_errors = _schema_errors(schema, config)
    found = moved + [_schema_message(e, schema) for e in schema_errors]
    # Later checks skip what the schema already refused, so no key is reported twice.
    refused = {tuple(e.absolute_path)[:2] for e in schema_errors}
    refused_keys = {path[0] for path in refused if path}

    catalog = torch_catalog.load() if check_torch else None
    optimizers_dir = Path(optimizers_dir) if optimizers_dir is not None else None
    losses: dict[str, Component] = {}
    optimizers: dict[str, Optimizer] = {}
    if isinstance(config["losses"], dict):
        for name, entry in config["losses"].items():
            if ("losses", name) in refused or not isinstance(entry, dict):
                continue
            if name == OBJECTIVE:
                found.append(
                    f"config key losses.{name}: the name {OBJECTIVE!r} stands for the value "
                    "that an objective problem minimises directly. Fix: rename this loss."
                )
                continue
            found += _component_errors("losses", name, entry, catalog)
            losses[name] = Component(name, entry["class"], entry["kwargs"])
    if isinstance(config["optimizers"], dict):
        for name, entry in config["optimizers"].items():
            if ("optimizers", name) in refused or not isinstance(entry, dict):
                continue
            entry_errors = _component_errors("optimizers", name, entry, catalog, optimizers_dir)
            if not entry_errors:  # variants are drawn only from a search space that checks out
                entry_errors += _variant_errors(name, entry)
            found += entry_errors
            if not entry_errors:
                sweep = entry.get("sweep") or {}
                variants = _variants(entry)
                # torch.optim.X is X: the same runs, files and batching.
                cls = entry["class"].removeprefix(f"{optimizer_sources.TORCH_OPTIM}.")
                base = entry.get("base")
                base = base and base.removeprefix(f"{optimizer_sources.TORCH_OPTIM}.")
                optimizers[name] = Optimizer(
                    name,
                    cls,
                    entry["kwargs"],
                    sweep,
                    {v.name: v for v in variants},
                    entry.get("groups") or None,
                    optimizer_sources.file_digest(entry["class"], optimizers_dir),
                    base,
                    base and optimizer_sources.file_digest(base, optimizers_dir),
                )
    found += _seed_role_errors(config)
    found += analysis_context.candidate_count_problems(
        {name: len(o.variants) - 1 for name, o in optimizers.items()}
    )

    # Config entry -> its problems (several where it has sizes: or budgets:).
    entry_problems_of: dict[str, list[Problem]] = {}
    if isinstance(config["problems"], dict) and "losses" not in refused_keys:
        for name, entry in config["problems"].items():
            if ("problems", name) in refused or not isinstance(entry, dict):
                continue
            entry_errors, made = _checked_problem_entry(name, entry, losses, problems_dir)
            found += entry_errors
            if made:
                entry_problems_of[name] = made
    problem_entries = {p.name: p for made in entry_problems_of.values() for p in made}
    made_names = [p.name for made in entry_problems_of.values() for p in made]
    clashes = sorted({name for name in made_names if made_names.count(name) > 1})
    if clashes:
        found.append(
            f"config key problems: {', '.join(clashes)}: each names both an entry and a size or "
            "budget of another entry. Fix: rename the entry."
        )

    if "thresholds" not in refused_keys:
        pairs = [(name, loss) for name, p in problem_entries.items() for loss in p.losses]
        found += analysis_context.threshold_problems(config["thresholds"], pairs)
    if "baseline" not in refused_keys:
        found += analysis_context.baseline_problems(config["baseline"], config["optimizers"])
    if "ranking_metric" not in refused_keys:
        found += analysis_context.ranking_metric_problems(
            config["ranking_metric"],
            {n: (p.problem, p.source_sha256 is None) for n, p in problem_entries.items()},
        )
    if "heldout_targets" not in refused_keys:
        pairs = [(name, loss) for name, p in problem_entries.items() for loss in p.losses]
        found += analysis_context.heldout_target_problems(config["heldout_targets"], pairs)

    # The selection is checked whenever the names it refers to are readable.
    selected = {}
    if "only" not in refused_keys and all(
        isinstance(config[axis], dict | list) for axis in GRID_AXES
    ):
        axes = {axis: tuple(config[axis]) for axis in GRID_AXES}
        axes["seeds"] = tuple(config["seeds"]) + tuple(config["tuning_seeds"])
        selected, selection_problems = _selection(axes, config["only"])
        found += selection_problems
    if found:
        raise ConfigError(found)

    # JSON Schema counts 3.0 as an integer; paths need the int's own text.
    kept_seeds = {int(seed) for seed in selected["seeds"]}
    all_seeds = tuple(int(seed) for seed in config["seeds"]) + tuple(
        int(seed) for seed in config["tuning_seeds"]
    )
    kept_losses = set(selected["losses"])
    kept_problems = {}
    for name in selected["problems"]:  # config entries: an entry keeps all its sizes and budgets
        for problem in entry_problems_of[name]:
            chosen = tuple(
                loss for loss in problem.losses if loss in kept_losses or loss == OBJECTIVE
            )
            if chosen:
                kept_problems[problem.name] = dataclasses.replace(problem, losses=chosen)
    experiment = Experiment(
        seeds=tuple(int(seed) for seed in config["seeds"] if int(seed) in kept_seeds),
        tuning_seeds=tuple(int(seed) for seed in config["tuning_seeds"] if int(seed) in kept_seeds),
        device=config["device"],
        band=config["band"],
        thresholds=config["thresholds"],
        # From every configured seed, so that `only` never changes how seeds are packed.
        seeds_per_job=_seeds_per_job(config["seeds_per_job"], all_seeds),
        torch_build=_torch_build(config["torch_build"], config["device"]),
        problems=kept_problems,
        optimizers={n: optimizers[n] for n in selected["optimizers"]},
        losses={n: losses[n] for n in selected["losses"]},
        engine=config["engine"],
        job_scope=config["job_scope"],
        numerics=config["numerics"],
        eval_every=config["eval_every"],
        checkpoint_every=_checkpoint_every(config["checkpoint_every"]),
        heldout_targets=config["heldout_targets"],
        baseline=config["baseline"],
        ranking_metric=config["ranking_metric"],
        run_files=config["run_files"],
        # In one order whatever the config's, so that the plot jobs' params stay the same.
        figure_formats=tuple(f for f in outputs.FIGURE_FORMATS if f in config["figure_formats"]),
    )
    found = (
        _engine_errors(experiment, optimizers_dir)
        + _job_size_errors(experiment)
        + _run_files_errors(experiment)
    )
    if not found:
        limit = cost.machine_bytes() if memory_bytes == "machine" else memory_bytes
        too_large = cost.too_large(cost.plan_for(experiment), limit)
        found += [f"config key steps: {too_large}."] if too_large else []
    if found:
        raise ConfigError(found)
    return experiment
