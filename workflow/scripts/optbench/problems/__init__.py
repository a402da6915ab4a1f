"""Problems: what a run trains, looked up by name; torch-free at import.

A problem is ONE Python file. Built-in problems live in ``builtin/`` beside
this file (``BUILTIN_DIR``); users put theirs in the repository's top-level
``problems/`` folder, which the caller passes in as ``user_dir``. A problem is
only ever found by its NAME (the file's stem) in those two folders: a dotted
module path or a file path written in the configuration is refused, so a
configuration cannot make a job import arbitrary code.

Planning (``snakemake -n``) must not import torch or execute user code, so a
problem file declares what planning needs as module-level literals that
``declaration()`` reads with ``ast.literal_eval``:

``KIND``
    ``"regression"``, ``"binary"``, ``"classification"`` or ``"objective"``;
    decides which losses fit (``LOSSES``) and how a step's loss is computed.
``PARAMETERS``
    ``{"name": default, ...}``: every keyword argument of ``build`` with its
    default. The default's type is the type check: an int default takes ints
    only, a float default ints or floats (ints become floats), a bool default
    bools only, a str default strings, a list default a list of numbers (ints
    only when every default element is an int). A bool never passes for a
    number, and non-finite numbers (``.nan``, ``.inf``) are refused.
``STOCHASTIC``
    True when the gradients are noisy (mini-batches, fresh samples per step).
``OPTIMUM``
    The minimum of the training loss (or objective) when the maths fixes it
    for every seed, every parameter value and every loss that fits the kind
    (e.g. 0.0 for an interpolation problem), else None. Values that depend on
    the draw or the loss are in the built instance's ``optima``.
``LIMITS`` (optional)
    ``{"name": [low, high], ...}``: inclusive bounds of a numeric parameter
    (each element of a list parameter), ``None`` for an open end; checked at
    planning time like the types.
``LOSSES`` (optional)
    ``("CrossEntropyLoss",)``: the loss classes of its kind's that fit this
    problem, where fewer than all do (a sequence model's logits suit
    CrossEntropyLoss but not MultiMarginLoss).
``CONSTRAINTS`` (optional)
    ``["samples >= dim", ...]``: comparisons between numeric parameters and
    numbers (``<``, ``<=``, ``>``, ``>=``, ``==``, ``!=``, chains allowed),
    for what one parameter's limits cannot say; checked at planning time on
    the defaults updated with the given values. They are parsed, never
    evaluated as Python.

A problem's *facts* (optional, ``Facts``) are what planning and reporting know
of it beyond how to build it; each one left out takes its reader's fallback:

``HELDOUT_TARGET``
    ``{"accuracy": 0.9}`` (held-out accuracy at least 0.9, at most 1) or
    ``{"loss": 2.5}`` (held-out loss at most 2.5, above 0): the default
    held-out target of every entry of this problem, for a problem whose
    instance has held-out data (config ``heldout_targets`` overrides it per
    problem/loss). Left out: no target unless the config names one.
``RUN_BYTES``
    Bytes a run of this problem keeps while it is trained together with
    others (model, gradients, optimizer state, data, activations), an int
    above 0; the dry run's memory estimate (``planning/cost.py``). Left out:
    ``cost.STATE_BYTES``.
``RUN_STEP_US``
    Microseconds per run-step at the default parameters, with Adam on one
    thread, by engine: ``{"loop": ..., "batched": ..., "lbfgs_loop": ...,
    "lbfgs_batched": ...}`` (the per-run loop; the batched engine at 100
    runs; L-BFGS with the strong-Wolfe line search in the loop; the batched
    L-BFGS at 100 runs). ``batched`` None: the estimate takes the loop's cost
    (engine auto trains the problem in the loop); ``lbfgs_batched`` None: its
    L-BFGS stays in the loop under every engine. The dry run's time estimate
    (``planning/cost.py``); each key left out takes ``cost.GUESSED_RUN_STEP_US``.
``SIZES`` and ``PARAMETER_COUNT``
    The model sizes a config entry can expand over (``sizes:``), each a
    mapping of the parameters that make it, and the trained-parameter count
    as arithmetic over the parameters (``optbench.problems.sizes``). Left out:
    the problem has no size axis.

The module docstring is required; its first paragraph says what the problem
stresses (it is the README's description). The file also defines
``build(seed: int, steps: int, **parameters) -> Instance`` (see
``instance.py``), which does every random draw on a CPU generator in an
order its docstring states, deterministically per seed. ``build`` runs only
in the training job, through ``load()`` or ``build()`` here.

How the training loop computes a step's loss (``instance.py`` has the rest)::

    inputs, targets = instance.batch(step)
    loss = instance.model() if kind == "objective" else criterion(instance.model(inputs), targets)
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from optbench.problems import sizes

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"

KINDS = ("regression", "binary", "classification", "objective")

# Which torch.nn loss classes fit which kind, given the target encodings that
# instance.py fixes: regression targets are float tensors shaped like the
# model's output; binary targets are floats in {0, 1} beside one logit per
# sample (so SoftMarginLoss, which wants -1/+1, does not fit); classification
# targets are int64 class indices beside raw logits (so NLLLoss, which wants
# log-probabilities, does not fit); an objective is minimised directly.
LOSSES: dict[str, tuple[str, ...]] = {
    "regression": ("MSELoss", "L1Loss", "HuberLoss", "SmoothL1Loss"),
    "binary": ("BCEWithLogitsLoss",),
    "classification": ("CrossEntropyLoss", "MultiMarginLoss"),
    "objective": (),
}

# A name is a file stem that is also a Python identifier, lower case so that
# case-insensitive file systems cannot hold two spellings of one problem.
NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")

_REQUIRED = ("KIND", "PARAMETERS", "STOCHASTIC", "OPTIMUM")
_OPTIONAL = ("LIMITS", "CONSTRAINTS", "LOSSES")
_FACTS = ("HELDOUT_TARGET", "RUN_BYTES", "RUN_STEP_US", "SIZES", "PARAMETER_COUNT")
# The engines RUN_STEP_US prices, and those that may be None (no figure: the
# estimate falls back to the loop's).
RUN_STEP_ENGINES = ("loop", "batched", "lbfgs_loop", "lbfgs_batched")
_OPTIONAL_ENGINES = ("batched", "lbfgs_batched")
HELDOUT_METRICS = ("loss", "accuracy")
# build()'s own arguments; a parameter of the same name would be ambiguous.
_RESERVED = {"seed", "steps"}


class ProblemError(ValueError):
    """A problem cannot be found, read or used; the message says where and how to fix it."""


@dataclass(frozen=True)
class Facts:
    """What a problem file declares for planning and reporting (module docstring):
    None or empty where the file leaves a fact out, so that each reader applies
    its own fallback."""

    heldout_target: dict | None = field(default=None, hash=False)  # {"accuracy": 0.9}
    run_bytes: int | None = None
    run_step_us: dict = field(default_factory=dict, hash=False)  # engine -> us or None
    # SIZES and PARAMETER_COUNT (optbench.problems.sizes): size name -> its
    # parameters, and the count's formula over the parameters.
    sizes: dict = field(default_factory=dict, hash=False)
    parameter_count: str | None = None

    def count_at(self, values: dict) -> int | None:
        """The declared parameter count at these parameter values (None: not declared)."""
        return sizes.parameter_count(self.parameter_count, values)


@dataclass(frozen=True)
class Declaration:
    """What a problem file declares, read without importing it."""

    name: str
    kind: str
    parameters: dict = field(hash=False)
    stochastic: bool
    optimum: float | None
    path: Path
    description: str
    limits: dict = field(default_factory=dict, hash=False)
    constraints: tuple[str, ...] = ()
    sha256: str = ""  # of the file's bytes
    declared_losses: tuple[str, ...] | None = None  # LOSSES, where the file narrows its kind's
    facts: Facts = field(default_factory=Facts)

    @property
    def losses(self) -> tuple[str, ...]:
        """The torch.nn loss classes that fit this problem: its kind's, or those it names."""
        return LOSSES[self.kind] if self.declared_losses is None else self.declared_losses


# ---------------------------------------------------------------- lookup


# Per folder: its modification time and what _problem_files found there. A job
# building 10^5 seeds looks its problem up once per seed; listing and resolving
# the folder each time was most of a reference run's cost (4 ms a seed).
_FOLDERS: dict[str, tuple[int, tuple[dict[str, Path], list[str]]]] = {}


def _problem_files(folder: Path | None) -> tuple[dict[str, Path], list[str]]:
    """Problem files of one folder by name, and the .py files skipped for their names
    (read again when the folder's modification time moves: a file added or removed)."""
    try:
        stamp = os.stat(folder).st_mtime_ns if folder is not None else None
    except OSError:
        stamp = None
    cached = _FOLDERS.get(str(folder))
    if stamp is not None and cached is not None and cached[0] == stamp:
        return dict(cached[1][0]), list(cached[1][1])
    found, skipped = _list_problem_files(folder)
    if stamp is not None:
        _FOLDERS[str(folder)] = (stamp, (dict(found), list(skipped)))
    return found, skipped


def _list_problem_files(folder: Path | None) -> tuple[dict[str, Path], list[str]]:
    found: dict[str, Path] = {}
    skipped: list[str] = []
    if folder is None or not Path(folder).is_dir():
        return found, skipped
    for path in sorted(Path(folder).glob("*.py")):
        if NAME.fullmatch(path.stem):
            found[path.stem] = path.resolve()
        else:
            skipped.append(path.name)
    return found, skipped


def available(user_dir: Path | None = None) -> dict[str, Path]:
    """Every problem by name: built-ins and the user folder's, which may not share a name."""
    builtin, _ = _problem_files(BUILTIN_DIR)
    user, _ = _problem_files(user_dir)
    clashes = sorted(set(builtin) & set(user))
    if clashes:
        files = ", ".join(str(user[name]) for name in clashes)
        raise ProblemError(
            f"user problem file(s) {files} have the name of a built-in problem "
            f"({', '.join(clashes)}). Fix: rename the file(s) in {user_dir}; built-in "
            f"problems are: {', '.join(sorted(builtin))}."
        )
    return {**builtin, **user}


def path_of(name: str, user_dir: Path | None = None) -> Path:
    """The file of problem ``name``; refuses anything but a plain name."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ProblemError(
            f"problem name {name!r} is not a plain name. Problems are looked up by name "
            f"(lower-case letters, digits and _, starting with a letter; the file's stem) "
            f"in {BUILTIN_DIR} and {user_dir}; dotted module paths and file paths are not "
            f"accepted. Fix: put the problem's file in {user_dir} and use its stem."
        )
    problems = available(user_dir)
    if name not in problems:
        _, skipped = _problem_files(user_dir)
        hint = (
            f" Files skipped in {user_dir} because their stem is not a valid name: "
            f"{', '.join(skipped)}."
            if skipped
            else ""
        )
        raise ProblemError(
            f"unknown problem {name!r}. Known problems: {', '.join(sorted(problems))}. "
            f"Fix: use one of them, or add {name}.py to {user_dir}.{hint}"
        )
    return problems[name]


# ----------------------------------------------------------- declaration


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _literals(tree: ast.Module, path: Path) -> dict:
    """Module-level assignments of the declared names, read as literals."""
    values: dict = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        for target in targets:
            if not isinstance(target, ast.Name) or target.id not in _REQUIRED + _OPTIONAL + _FACTS:
                continue
            if target.id in values:
                raise ProblemError(
                    f"{path}: {target.id} is assigned more than once (line {node.lineno}). "
                    f"Fix: assign it once, as a literal."
                )
            try:
                values[target.id] = ast.literal_eval(value)
            except ValueError as error:
                raise ProblemError(
                    f"{path}, line {node.lineno}: {target.id} must be a literal (numbers, "
                    f"strings, True/False/None, lists and dicts of them), because planning "
                    f"reads it without running the file; found {ast.unparse(value)!r} "
                    f"({error}). Fix: write the value out."
                ) from error
    return values


def _check_parameters_literal(parameters, path: Path) -> None:
    if not isinstance(parameters, dict):
        raise ProblemError(
            f"{path}: PARAMETERS must be a dict of keyword argument -> default, got "
            f'{type(parameters).__name__}. Fix: e.g. PARAMETERS = {{"dim": 20}} (or {{}}).'
        )
    for key, default in parameters.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise ProblemError(f"{path}: PARAMETERS key {key!r} is not a Python identifier.")
        if key in _RESERVED:
            raise ProblemError(
                f"{path}: PARAMETERS may not contain {key!r}: build() receives seed and steps "
                f"itself. Fix: rename the parameter."
            )
        ok = isinstance(default, bool | int | float | str) or (
            isinstance(default, list) and all(_is_number(v) for v in default)
        )
        if not ok:
            raise ProblemError(
                f"{path}: PARAMETERS[{key!r}] has default {default!r}; a default must be an "
                f"int, float, bool, str or list of numbers, because its type is the type "
                f"check. Fix: give a typed default."
            )
        if _is_number(default) and not math.isfinite(default):
            raise ProblemError(f"{path}: PARAMETERS[{key!r}] default {default!r} is not finite.")


def _check_limits_literal(limits, parameters: dict, path: Path) -> None:
    if not isinstance(limits, dict):
        raise ProblemError(f"{path}: LIMITS must be a dict of name -> [low, high].")
    for key, bounds in limits.items():
        default = parameters.get(key)
        numeric = _is_number(default) or isinstance(default, list)
        if key not in parameters or not numeric:
            raise ProblemError(
                f"{path}: LIMITS[{key!r}] names no numeric entry of PARAMETERS. Fix: bound "
                f"only int, float or list parameters."
            )
        if not (
            isinstance(bounds, list)
            and len(bounds) == 2
            and all(b is None or _is_number(b) for b in bounds)
        ):
            raise ProblemError(
                f"{path}: LIMITS[{key!r}] must be [low, high], numbers or None, got {bounds!r}."
            )
        low, high = bounds
        if low is not None and high is not None and low > high:
            raise ProblemError(f"{path}: LIMITS[{key!r}] has low {low} above high {high}.")
        problem = _limit_error(key, default, bounds)
        if problem:
            raise ProblemError(f"{path}: the default of {problem}")


_COMPARE = {
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
}


def _constraint_tree(text, parameters: dict, path: Path) -> ast.Compare:
    """A CONSTRAINTS entry parsed to a comparison of parameter names and numbers."""
    try:
        tree = ast.parse(text, mode="eval").body if isinstance(text, str) else None
    except SyntaxError:
        tree = None
    operands = [] if not isinstance(tree, ast.Compare) else [tree.left, *tree.comparators]
    names = [o.id for o in operands if isinstance(o, ast.Name)]
    valid = (
        operands
        and all(type(op) in _COMPARE for op in tree.ops)
        and all(
            (isinstance(o, ast.Name) and _is_number(parameters.get(o.id)))
            or (isinstance(o, ast.Constant) and _is_number(o.value))
            for o in operands
        )
        and names
    )
    if not valid:
        raise ProblemError(
            f"{path}: CONSTRAINTS entry {text!r} is not a comparison of numeric parameters and "
            f'numbers. Fix: write e.g. "samples >= dim".'
        )
    return tree


def _constraint_holds(tree: ast.Compare, values: dict) -> bool:
    def value(node):
        return values[node.id] if isinstance(node, ast.Name) else node.value

    operands = [tree.left, *tree.comparators]
    return all(
        _COMPARE[type(op)](value(a), value(b))
        for op, a, b in zip(tree.ops, operands, operands[1:], strict=False)
    )


def _check_constraints_literal(constraints, parameters: dict, path: Path) -> None:
    if not isinstance(constraints, list):
        raise ProblemError(f'{path}: CONSTRAINTS must be a list of strings such as "a >= b".')
    for text in constraints:
        if not _constraint_holds(_constraint_tree(text, parameters, path), parameters):
            raise ProblemError(f"{path}: the defaults break CONSTRAINTS entry {text!r}.")


def _is_positive(value) -> bool:
    return _is_number(value) and math.isfinite(value) and value > 0


def _heldout_target_literal(target, path: Path) -> dict | None:
    if target is None:
        return None
    valid = isinstance(target, dict) and len(target) == 1
    if valid:
        ((metric, value),) = target.items()
        valid = metric in HELDOUT_METRICS and _is_positive(value)
        valid = valid and not (metric == "accuracy" and value > 1)
    if not valid:
        raise ProblemError(
            f"{path}: HELDOUT_TARGET must be one metric and its level, {{'accuracy': y}} "
            f"(0 < y <= 1) or {{'loss': x}} (x > 0), got {target!r}. Fix: e.g. "
            f'HELDOUT_TARGET = {{"accuracy": 0.9}}, or leave it out (no default target).'
        )
    return target


def _run_bytes_literal(run_bytes, path: Path) -> int | None:
    if run_bytes is None or (_is_positive(run_bytes) and isinstance(run_bytes, int)):
        return run_bytes
    raise ProblemError(
        f"{path}: RUN_BYTES must be a whole number of bytes above 0 (what a run keeps while "
        f"it is trained together with others), got {run_bytes!r}. Fix: write the number "
        f"out, e.g. RUN_BYTES = 4194304 for 4 MiB (planning reads it without evaluating "
        f"4 * 2**20), or leave it out."
    )


def _run_step_us_literal(costs, path: Path) -> dict:
    if not isinstance(costs, dict):
        wrong = [f"is {type(costs).__name__}, not a dict"]
    else:
        wrong = [
            f"key {key!r} is not one of {', '.join(RUN_STEP_ENGINES)}"
            for key in costs
            if key not in RUN_STEP_ENGINES
        ]
        for key, value in costs.items():
            none_ok = value is None and key in _OPTIONAL_ENGINES
            if key in RUN_STEP_ENGINES and not (none_ok or _is_positive(value)):
                wrong.append(
                    f"{key!r}: {value!r} is not a number of microseconds above 0"
                    + (" or None" if key in _OPTIONAL_ENGINES else "")
                )
    if wrong:
        raise ProblemError(
            f"{path}: RUN_STEP_US {'; '.join(wrong)}. Fix: a dict of microseconds per "
            f'run-step by engine, e.g. RUN_STEP_US = {{"loop": 300, "batched": 6.0, '
            f'"lbfgs_loop": 600, "lbfgs_batched": None}}; any key may be left out.'
        )
    return costs


def _facts(values: dict, path: Path) -> Facts:
    """The facts a file declares, each checked; an error names the file and the fix."""
    try:
        declared_sizes = sizes.check_literals(
            values.get("SIZES"), values.get("PARAMETER_COUNT"), values["PARAMETERS"], path
        )
    except sizes.SizeError as error:
        raise ProblemError(str(error)) from None
    return Facts(
        heldout_target=_heldout_target_literal(values.get("HELDOUT_TARGET"), path),
        run_bytes=_run_bytes_literal(values.get("RUN_BYTES"), path),
        run_step_us=_run_step_us_literal(values.get("RUN_STEP_US", {}), path),
        sizes=declared_sizes,
        parameter_count=values.get("PARAMETER_COUNT"),
    )


def _build_signature_errors(tree: ast.Module, parameters: dict, path: Path) -> None:
    builds = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "build"]
    if not builds:
        raise ProblemError(
            f"{path}: no top-level function build(seed, steps, **parameters). Fix: define "
            f"it; it returns an optbench.problems.instance.Instance."
        )
    args = builds[-1].args
    names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
    if names[:2] != ["seed", "steps"]:
        raise ProblemError(
            f"{path}: build must take seed and steps first, got ({', '.join(names)}). "
            f"Fix: def build(seed, steps, **parameters)."
        )
    if args.kwarg is None:
        missing = [key for key in parameters if key not in names]
        if missing:
            raise ProblemError(
                f"{path}: build() does not accept PARAMETERS {', '.join(missing)}. Fix: add "
                f"them to its signature or take **parameters."
            )


_DECLARATIONS: dict[Path, tuple[tuple[int, int], Declaration]] = {}


def declaration(name: str, user_dir: Path | None = None) -> Declaration:
    """What problem ``name`` declares, read from its file without importing it.

    Kept per file while the file's size and modification time stay the same,
    so a job that builds many seeds parses the file once.
    """
    path = path_of(name, user_dir)
    stat = path.stat()
    stamp = (stat.st_mtime_ns, stat.st_size)
    cached = _DECLARATIONS.get(path)
    if cached is None or cached[0] != stamp:
        cached = (stamp, read_declaration(path, name))
        _DECLARATIONS[path] = cached
    return cached[1]


def read_declaration(path: Path, name: str | None = None) -> Declaration:
    """The declaration of one problem file (no registry lookup)."""
    path = Path(path)
    try:
        source = path.read_bytes()
        tree = ast.parse(source.decode("utf-8"), filename=str(path))
    except (OSError, SyntaxError, UnicodeDecodeError) as error:
        raise ProblemError(f"{path}: cannot read the problem file: {error}") from error
    values = _literals(tree, path)
    missing = [key for key in _REQUIRED if key not in values]
    if missing:
        raise ProblemError(
            f"{path}: missing module-level literal(s) {', '.join(missing)}. Fix: declare "
            f'KIND = one of {", ".join(KINDS)}; PARAMETERS = {{"name": default, ...}}; '
            f"STOCHASTIC = True/False; OPTIMUM = a number or None."
        )
    kind = values["KIND"]
    if kind not in KINDS:
        raise ProblemError(f"{path}: KIND is {kind!r}. Fix: use one of {', '.join(KINDS)}.")
    parameters = values["PARAMETERS"]
    _check_parameters_literal(parameters, path)
    if not isinstance(values["STOCHASTIC"], bool):
        raise ProblemError(f"{path}: STOCHASTIC must be True or False.")
    optimum = values["OPTIMUM"]
    if optimum is not None and not (_is_number(optimum) and math.isfinite(optimum)):
        raise ProblemError(f"{path}: OPTIMUM must be a finite number or None, got {optimum!r}.")
    limits = values.get("LIMITS", {})
    _check_limits_literal(limits, parameters, path)
    constraints = values.get("CONSTRAINTS", [])
    _check_constraints_literal(constraints, parameters, path)
    declared_losses = values.get("LOSSES")
    if declared_losses is not None and (
        not isinstance(declared_losses, tuple | list)
        or not declared_losses
        or not set(declared_losses) <= set(LOSSES[kind])
    ):
        raise ProblemError(
            f"{path}: LOSSES must be a non-empty tuple of loss classes that fit KIND {kind!r} "
            f"({', '.join(LOSSES[kind]) or 'none'}), got {declared_losses!r}."
        )
    facts = _facts(values, path)
    _build_signature_errors(tree, parameters, path)
    docstring = ast.get_docstring(tree)
    if not docstring or not docstring.strip():
        raise ProblemError(
            f"{path}: no module docstring. Fix: start the file with a docstring whose first "
            f"paragraph says what the problem stresses."
        )
    description = " ".join(docstring.strip().split("\n\n", 1)[0].split())
    return Declaration(
        name=name or path.stem,
        kind=kind,
        parameters=parameters,
        stochastic=values["STOCHASTIC"],
        optimum=None if optimum is None else float(optimum),
        path=path.resolve(),
        description=description,
        limits=limits,
        constraints=tuple(constraints),
        sha256=hashlib.sha256(source).hexdigest(),
        declared_losses=None if declared_losses is None else tuple(declared_losses),
        facts=facts,
    )


def is_builtin(path: Path) -> bool:
    """Whether a problem file is one of the package's own."""
    return Path(path).resolve().parent == BUILTIN_DIR.resolve()


# ------------------------------------------------------------ parameters


def _type_error(key: str, default, value) -> str | None:
    """Why ``value`` cannot stand for a parameter whose default is ``default``."""
    if isinstance(default, bool):
        ok, wanted = isinstance(value, bool), "a bool (true or false)"
    elif isinstance(default, int):
        ok, wanted = _is_number(value) and isinstance(value, int), "an int"
    elif isinstance(default, float):
        ok, wanted = _is_number(value), "a float (or an int)"
    elif isinstance(default, str):
        ok, wanted = isinstance(value, str), "a string"
    else:
        ints = bool(default) and all(isinstance(v, int) for v in default)
        element = (lambda v: _is_number(v) and isinstance(v, int)) if ints else _is_number
        ok = isinstance(value, list | tuple) and all(element(v) for v in value)
        wanted = "a list of ints" if ints else "a list of numbers"
    if not ok:
        return (
            f"{key}: {value!r} ({type(value).__name__}) is not {wanted}; its default is {default!r}"
        )
    numbers = value if isinstance(value, list | tuple) else [value]
    if any(_is_number(v) and not math.isfinite(v) for v in numbers):
        return f"{key}: {value!r} is not finite"
    return None


def _limit_error(key: str, value, bounds) -> str | None:
    low, high = bounds
    for number in value if isinstance(value, list | tuple) else [value]:
        if (low is not None and number < low) or (high is not None and number > high):
            span = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
            return f"{key}: {value!r} is outside its limits {span}"
    return None


def check_parameters(decl: Declaration, given: dict | None, key: str | None = None) -> list[str]:
    """Every error in the keyword arguments ``given`` for problem ``decl`` (empty: all fine).

    Meant for planning time. Each message starts with the config key
    (``key``, by default ``problems.<name>``) and says how to fix it.
    """
    prefix = key or f"problems.{decl.name}"
    if given is None:
        given = {}
    if not isinstance(given, dict):
        return [
            f"{prefix}: problem keyword arguments must be a mapping of name -> value, got "
            f"{type(given).__name__}. Accepted: {_accepted(decl)}."
        ]
    errors = []
    for name in given:
        if name not in decl.parameters:
            errors.append(
                f"{prefix}.{name}: unknown parameter of problem {decl.name!r}. Fix: use one "
                f"of {_accepted(decl)} (defaults in {decl.path})."
            )
    for name, value in given.items():
        if name not in decl.parameters:
            continue
        problem = _type_error(name, decl.parameters[name], value)
        if problem:
            errors.append(f"{prefix}.{problem}. Fix: give a value of the default's type.")
        elif name in decl.limits:
            problem = _limit_error(name, value, decl.limits[name])
            if problem:
                errors.append(f"{prefix}.{problem}. Fix: give a value within the limits.")
    if errors:
        return errors  # constraints compare values only once each value is usable
    values = {**decl.parameters, **given}
    for text in decl.constraints:
        if not _constraint_holds(_constraint_tree(text, decl.parameters, decl.path), values):
            involved = sorted({n.id for n in ast.walk(ast.parse(text)) if isinstance(n, ast.Name)})
            shown = ", ".join(f"{name}={values[name]!r}" for name in involved)
            errors.append(
                f"{prefix}: problem {decl.name!r} needs {text}, got {shown}. Fix: change "
                f"{' or '.join(involved)}."
            )
    return errors


def _accepted(decl: Declaration) -> str:
    if not decl.parameters:
        return "(none: this problem takes no parameters)"
    return ", ".join(f"{k} (default {v!r})" for k, v in decl.parameters.items())


def resolve_parameters(decl: Declaration, given: dict | None, key: str | None = None) -> dict:
    """The defaults updated with ``given``, ints turned into floats where the default is a float.

    Raises ProblemError listing every error of ``check_parameters``.
    """
    errors = check_parameters(decl, given, key)
    if errors:
        raise ProblemError("\n".join(errors))
    resolved = dict(decl.parameters)
    for name, value in (given or {}).items():
        default = decl.parameters[name]
        if isinstance(default, float):
            value = float(value)
        elif isinstance(default, list):
            floats = not (default and all(isinstance(v, int) for v in default))
            value = [float(v) if floats else v for v in value]
        resolved[name] = value
    return resolved


# ---------------------------------------------------------------- losses


def loss_error(decl: Declaration, loss_class: str) -> str | None:
    """Why torch.nn loss class ``loss_class`` cannot train problem ``decl``, or None if it fits.

    The message names the problem and the loss class; callers prefix the
    config key(s) they hold.
    """
    fits = decl.losses
    if loss_class in fits:
        return None
    if not fits:
        return (
            f"problem {decl.name!r} is an objective (its model returns the value to minimise) "
            f"and takes no loss, but loss class {loss_class!r} was paired with it. Fix: pair "
            f"it with no loss."
        )
    return (
        f"loss class {loss_class!r} does not fit problem {decl.name!r}, a {decl.kind} "
        f"problem. Fix: pair it with one of {', '.join(fits)}."
    )


def check_loss(decl: Declaration, loss_class: str) -> None:
    """Raise ProblemError when ``loss_class`` cannot train problem ``decl``."""
    message = loss_error(decl, loss_class)
    if message:
        raise ProblemError(message)


# ------------------------------------------------------------ importing


_LOADED: dict[Path, object] = {}


def load(name: str, user_dir: Path | None = None):
    """The module of problem ``name``, imported from its file (training jobs only)."""
    path = path_of(name, user_dir)
    if path in _LOADED:
        return _LOADED[path]
    origin = "builtin" if path.parent == BUILTIN_DIR else "user"
    module_name = f"optbench_problem_{origin}_{name}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ProblemError(f"{path}: cannot be imported as a Python module.")
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs, as a normal import would, so dataclasses and
    # pickling inside the file can find their module.
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    if not callable(getattr(module, "build", None)):
        raise ProblemError(f"{path}: build is not a function after import.")
    _LOADED[path] = module
    return module


def build(
    name: str,
    seed: int,
    steps: int,
    parameters: dict | None = None,
    user_dir: Path | None = None,
):
    """Check ``parameters``, import problem ``name`` and build its instance for ``seed``."""
    from optbench.problems.instance import Instance  # torch: only when building

    decl = declaration(name, user_dir)
    resolved = resolve_parameters(decl, parameters)
    instance = load(name, user_dir).build(seed, steps, **resolved)
    if not isinstance(instance, Instance):
        raise ProblemError(
            f"{decl.path}: build() returned {type(instance).__name__}, not an "
            f"optbench.problems.instance.Instance."
        )
    if instance.kind != decl.kind:
        raise ProblemError(
            f"{decl.path}: build() returned an instance of kind {instance.kind!r} but KIND is "
            f"{decl.kind!r}. Fix: make them agree."
        )
    instance.check(steps)
    return instance
