"""Optimizer classes: the one place where a config entry's class becomes a class,
and what each class needs from the training loop (its protocol).

Training (the per-run loop), the batched engine and the training job all
resolve an optimizer here. ``class:`` is a torch.optim class name, or
``module.Class`` for an installed package's class or for a class in the
repository's ``optimizers/<module>.py`` (planning.optimizer_sources checked it
before the job started).

Protocols: what a class needs from the training loop, described once
(``describe``: a ``Protocol``) and read by the loop (one step function per
closure kind, ``training.STEPS``), the engine choice and the batched engine
(``Protocol.loop_reason``) and the run-independence probe:

- closure, one of ``CLOSURE_KINDS``.
  ``none``: the loop computes the gradients, then calls ``step()``.
  ``evaluates``: ``step(closure)`` evaluates the loss itself, as often as it
  needs (L-BFGS, AliG); the loop passes a closure that re-evaluates the loss.
  ``second_pass``: the loop computes the gradients first, then
  ``step(closure)`` uses them and re-evaluates the loss where it needs
  (the SAM family: perturb along the gradients, re-evaluate there, update).
  A class needs a closure when its ``step``'s ``closure`` has no default, or
  when ``step`` refuses to run without one (``if closure is None: raise``,
  whatever the default says); it is ``second_pass`` when ``step`` calls a
  method of its own (``self.first_step()``) before it first calls the
  closure, else ``evaluates``. A user's file may declare the kind
  (``PROTOCOL = {"closure": "second_pass"}``). Each closure evaluation is
  counted: a step records how many it made.
- train/eval: the optimizer has ``train()`` and ``eval()`` (schedule-free
  optimizers): the loop calls ``train()`` before the first step and
  ``eval()`` after the last, so held-out metrics are taken at the evaluation
  point; each recorded training loss is the one of that step's forward pass,
  at the training point.
- second order: ``step`` takes a ``hessian`` (SophiaH, AdaHessian) or a
  user's file declares ``PROTOCOL = {"create_graph": True}``: the loop calls
  ``backward(create_graph=True)`` so that the optimizer can take
  Hessian-vector products.
- parameter roles: an entry's ``groups`` (``training.ROLES``): one parameter
  group per role, each with its own keyword arguments.
- wrapper: ``__init__`` takes a base optimizer class (through
  ``base_optimizer``: the SAM family; through ``optimizer``, the parameters
  given as ``params=``: Lookahead). The entry names the base with ``base:``;
  its one ``kwargs`` holds the wrapper's and the base's keyword arguments
  (the wrapper passes on what it does not take). A wrapper's protocol is its
  own, with the base's closure (where the wrapper needs none) and
  second-order backward (``Protocol.around``).
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import inspect
import sys
import textwrap
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from optbench.planning.optimizer_sources import WRAPPER_KEYWORDS

TORCH_OPTIM = "torch.optim"
# Users' optimizer files are loaded under this package name, never as a
# top-level module (which could shadow an installed one).
USER_PACKAGE = "optbench_user_optimizers"


class UnknownOptimizer(ValueError):
    """The name is not an optimizer class this pipeline can load."""


def _load_file(path: Path):
    name = f"{USER_PACKAGE}.{path.stem}"
    loaded = sys.modules.get(name)
    if loaded is not None and getattr(loaded, "__file__", None) == str(path):
        return loaded
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def resolve(name: str | type, optimizers_dir: str | Path | None = None) -> type:
    """The optimizer class a config's ``class:`` names; a class is returned as it is."""
    if isinstance(name, type):
        return name
    module_name, _, class_name = name.rpartition(".")
    if not module_name or module_name == TORCH_OPTIM:
        module, where = torch.optim, TORCH_OPTIM
    else:
        top = module_name.split(".")[0]
        path = Path(optimizers_dir, f"{top}.py") if optimizers_dir else None
        try:
            if path is not None and path.is_file() and "." not in module_name:
                module, where = _load_file(path.resolve()), str(path)
            else:
                module, where = importlib.import_module(module_name), module_name
        except ImportError as error:
            raise UnknownOptimizer(
                f"{name!r}: {module_name} cannot be imported ({error})"
            ) from None
    found = getattr(module, class_name, None)
    if not (
        isinstance(found, type)
        and issubclass(found, torch.optim.Optimizer)
        and found is not torch.optim.Optimizer
    ):
        raise UnknownOptimizer(f"{name!r} is not an optimizer class of {where}")
    return found


CLOSURE_KINDS = ("none", "evaluates", "second_pass")


@dataclass(frozen=True)
class Protocol:
    """What an optimizer class needs from the training loop (the module's docstring)."""

    closure: str = "none"  # one of CLOSURE_KINDS
    train_eval: bool = False
    create_graph: bool = False
    # A wrapper's __init__ keyword for its base optimizer class (None: not a wrapper),
    # and whether it takes the parameters as params= (Lookahead) or first (SAM).
    base_keyword: str | None = None
    params_by_keyword: bool = False

    @property
    def wrapper(self) -> bool:
        return self.base_keyword is not None

    def around(self, base: Protocol) -> Protocol:
        """The protocol of this wrapper around ``base``."""
        return replace(
            self,
            closure=self.closure if self.closure != "none" else base.closure,
            create_graph=self.create_graph or base.create_graph,
        )

    def loop_reason(self) -> str | None:
        """What only the per-run loop implements of this protocol (None: nothing)."""
        needs = [
            (self.closure == "evaluates", "a closure that re-evaluates the loss"),
            (
                self.closure == "second_pass",
                "a closure for a second pass (the gradients first, then step(closure))",
            ),
            (self.train_eval, "train() and eval() modes"),
            (self.create_graph, "backward(create_graph=True)"),
            (self.wrapper, "its base optimizer built inside it (a wrapper)"),
        ]
        return next((what for needed, what in needs if needed), None)


def _source_tree(function) -> ast.FunctionDef | None:
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError, SyntaxError):
        return None  # no source (a C function): described by its signature alone
    found = tree.body[0] if tree.body else None
    return found if isinstance(found, ast.FunctionDef | ast.AsyncFunctionDef) else None


def _is_closure(node) -> bool:
    return isinstance(node, ast.Name) and node.id == "closure"


def _tests_no_closure(test) -> bool:
    """``closure is None``, ``closure == None`` or ``not closure``."""
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        return _is_closure(test.operand)
    return (
        isinstance(test, ast.Compare)
        and _is_closure(test.left)
        and isinstance(test.ops[0], ast.Is | ast.Eq)
        and isinstance(test.comparators[0], ast.Constant)
        and test.comparators[0].value is None
    )


def _refuses_without_closure(function: ast.FunctionDef) -> bool:
    """``step`` raises when it is given no closure (``if closure is None: raise``, or
    ``assert closure is not None``), whatever its signature's default."""
    for node in ast.walk(function):
        if (
            isinstance(node, ast.If)
            and _tests_no_closure(node.test)
            and any(isinstance(statement, ast.Raise) for statement in node.body)
        ):
            return True
        if isinstance(node, ast.Assert) and any(_is_closure(n) for n in ast.walk(node.test)):
            return True
    return False


def _calls(statement, test) -> bool:
    return any(isinstance(n, ast.Call) and test(n.func) for n in ast.walk(statement))


def _own_method(func) -> bool:
    return (
        isinstance(func, ast.Attribute)
        and isinstance(func.value, ast.Name)
        and func.value.id == "self"
    )


def _gradients_first(function: ast.FunctionDef) -> bool:
    """``step`` calls a method of its own (SAM's ``first_step``, which reads the
    gradients) before it first calls the closure."""
    for statement in function.body:
        if _calls(statement, _is_closure):
            return False
        if _calls(statement, _own_method):
            return True
    return False


def _closure_kind(cls: type) -> str:
    declared_kind = declared(cls).get("closure")
    if declared_kind is not None:
        return declared_kind
    parameter = inspect.signature(cls.step).parameters.get("closure")
    if parameter is None:
        return "none"
    tree = _source_tree(cls.step)
    required = parameter.default is inspect.Parameter.empty
    if not required and not (tree is not None and _refuses_without_closure(tree)):
        return "none"
    return "second_pass" if tree is not None and _gradients_first(tree) else "evaluates"


@functools.cache
def describe(cls: type, base: type | None = None) -> Protocol:
    """The protocol of optimizer class ``cls`` (around ``base``, for a wrapper)."""
    init = inspect.signature(cls.__init__).parameters
    keyword = next((k for k in WRAPPER_KEYWORDS if k in init), None)
    create_graph = declared(cls).get("create_graph")
    if create_graph is None:
        create_graph = "hessian" in inspect.signature(cls.step).parameters
    found = Protocol(
        closure=_closure_kind(cls),
        train_eval=callable(getattr(cls, "train", None)) and callable(getattr(cls, "eval", None)),
        create_graph=bool(create_graph),
        base_keyword=keyword,
        params_by_keyword=keyword is not None and "params" not in init,
    )
    return found.around(describe(base)) if base is not None and found.wrapper else found


def of(optimizer) -> Protocol:
    """The protocol of a built optimizer (a wrapper's with its base's), a class or a
    class name (``resolve``)."""
    if isinstance(optimizer, type | str):
        return describe(resolve(optimizer))
    found = describe(type(optimizer))
    inner = getattr(optimizer, found.base_keyword, None) if found.wrapper else None
    # SAM keeps its base as self.base_optimizer, Lookahead as self.optimizer.
    return found.around(of(inner)) if isinstance(inner, torch.optim.Optimizer) else found


def construct(cls: type, params, kwargs: dict, base: type | None = None):
    """``cls`` built on ``params`` with ``kwargs``; a wrapper around ``base``."""
    keyword = describe(cls).base_keyword
    if base is None or keyword is None:
        return cls(params, **kwargs)
    if describe(cls).params_by_keyword:
        return cls(**{keyword: base}, params=params, **kwargs)
    return cls(params, **{keyword: base}, **kwargs)


def needs_closure(optimizer, optimizers_dir=None) -> bool:
    """Whether ``step`` must be given a closure (L-BFGS, the SAM family);
    ``optimizer`` is a class, a class name or an instance."""
    if isinstance(optimizer, str):
        optimizer = resolve(optimizer, optimizers_dir)
    return of(optimizer).closure != "none"


def has_train_eval(optimizer) -> bool:
    """Whether the optimizer switches between a training and an evaluation point."""
    return callable(getattr(optimizer, "train", None)) and callable(
        getattr(optimizer, "eval", None)
    )


def declared(cls: type) -> dict:
    """The ``PROTOCOL`` literal of the module that defines ``cls`` (a user's file), or {}."""
    module = sys.modules.get(cls.__module__)
    protocol = getattr(module, "PROTOCOL", None)
    return dict(protocol) if isinstance(protocol, dict) else {}


def needs_create_graph(optimizer) -> bool:
    """Whether ``backward`` must keep the graph for Hessian-vector products."""
    return of(optimizer).create_graph


def protocol(optimizer) -> dict:
    """The protocol of an optimizer as a dict (closure: whether it takes one)."""
    found = of(optimizer)
    return {
        "closure": found.closure != "none",
        "train_eval": found.train_eval,
        "create_graph": found.create_graph,
    }
