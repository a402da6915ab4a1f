"""Optimizer classes: the one place where a config entry's class becomes a class,
and what each class needs from the training loop (its protocol).

Training (the per-run loop), the batched engine and the training job all
resolve an optimizer here. ``class:`` is a torch.optim class name, or
``module.Class`` for an installed package's class or for a class in the
repository's ``optimizers/<module>.py`` (planning.optimizer_sources checked it
before the job started).

Protocols, read from the class:

- closure: ``step`` has a ``closure`` without a default (L-BFGS): the loop
  passes one that re-evaluates the loss, and counts the evaluations;
- train/eval: the optimizer has ``train()`` and ``eval()`` (schedule-free
  optimizers): the loop calls ``train()`` before the first step and
  ``eval()`` after the last, so held-out metrics are taken at the evaluation
  point; each recorded training loss is the one of that step's forward pass,
  at the training point;
- second order: ``step`` takes a ``hessian`` (SophiaH, AdaHessian) or a
  user's file declares ``PROTOCOL = {"create_graph": True}``: the loop calls
  ``backward(create_graph=True)`` so that the optimizer can take
  Hessian-vector products.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path

import torch

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


def _class_of(optimizer, optimizers_dir=None) -> type:
    if isinstance(optimizer, type | str):
        return resolve(optimizer, optimizers_dir)
    return type(optimizer)


def needs_closure(optimizer, optimizers_dir=None) -> bool:
    """Whether ``step`` must be given a closure (its ``closure`` has no default, as
    L-BFGS); ``optimizer`` is a class, a class name or an instance."""
    cls = _class_of(optimizer, optimizers_dir)
    parameter = inspect.signature(cls.step).parameters.get("closure")
    return parameter is not None and parameter.default is inspect.Parameter.empty


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
    cls = _class_of(optimizer)
    if "create_graph" in declared(cls):
        return bool(declared(cls)["create_graph"])
    return "hessian" in inspect.signature(cls.step).parameters


def protocol(optimizer) -> dict:
    """The protocol of an optimizer, as recorded in each run's sidecar."""
    return {
        "closure": needs_closure(optimizer),
        "train_eval": has_train_eval(optimizer),
        "create_graph": needs_create_graph(optimizer),
    }
