"""Where an optimizer entry's ``class:`` comes from, checked before any job runs.

Three sources, nothing else:

- ``Adam`` (a plain name): a ``torch.optim`` class, read from torch's source
  (``torch_catalog``), so a dry run that names only these imports no torch;
- ``module.Class`` with ``module`` an installed package or one of its
  modules: ``pytorch_optimizer.Lion``, ``torch.optim.Muon``. Checking it
  imports the module (``pytorch_optimizer`` with torch: about 3 s, once per
  snakemake invocation);
- ``module.Class`` with ``optimizers/<module>.py`` a file of this repository:
  a user's own optimizer (the template is ``optimizers/_template.py``). Its
  signature and its declared protocol are read from the source, never
  executed, at planning time.

No file paths, no attribute chains (``module.Class.attr``), no code: the name
must be dotted identifiers whose last part is a class of the module before
it. A file that has the name of an installed package is refused (which one
the job would load would depend on ``sys.path``).
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import inspect
import re
from dataclasses import dataclass
from pathlib import Path

from optbench.planning import torch_catalog

_PLAIN = re.compile(r"[A-Za-z_]\w*")
_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")
TORCH_OPTIM = "torch.optim"
# Import name -> what `pip install` takes, where they differ by more than _ for -.
PIP_NAMES = {
    "prodigyopt": "prodigyopt",
    "schedulefree": "schedulefree",
    "dadaptation": "dadaptation",
}
# What a user's file declares as a literal about its optimizer's protocol (the
# rest is read from the class: engines/optimizers.py), and the values each takes.
PROTOCOL_KEYS = {"create_graph": (True, False), "closure": ("none", "evaluates", "second_pass")}
# The __init__ keyword through which a wrapper takes its base optimizer's class
# (the SAM family: base_optimizer; Lookahead, OrthoGrad, TRAC: optimizer).
WRAPPER_KEYWORDS = ("base_optimizer", "optimizer")
# __init__ arguments no config can give (an object, not a value): GSAM and
# WSAM take the model itself.
UNSUPPLIABLE = {"model": "the model itself", "rho_scheduler": "a scheduler object"}


class SourceError(ValueError):
    """The class cannot be used; the message says why and the fix (no config key)."""


@dataclass(frozen=True)
class OptimizerSource:
    """Where ``class:`` points: ``origin`` is torch, package or file."""

    text: str  # as written in the config
    module: str
    name: str
    origin: str
    path: Path | None = None  # the file, for origin file

    @property
    def qualified(self) -> str:
        return f"{self.module}.{self.name}"


def pip_name(module: str) -> str:
    """The usual distribution name of a package (pytorch_optimizer: pytorch-optimizer)."""
    return module.split(".")[0].replace("_", "-")


def locate(text: str, optimizers_dir: Path | None) -> OptimizerSource:
    """The source of ``class:`` = ``text``, or SourceError."""
    if not isinstance(text, str):
        raise SourceError(f"{text!r} is not a class name. Fix: give a name such as Adam")
    if _PLAIN.fullmatch(text):
        return OptimizerSource(text, TORCH_OPTIM, text, "torch")
    if not _DOTTED.fullmatch(text):
        raise SourceError(
            f"{text!r} is neither a torch.optim class name nor module.Class (no paths, "
            "no code). Fix: write Adam, pytorch_optimizer.Lion, or myfile.MyOptimizer "
            "for a class in optimizers/myfile.py"
        )
    module, _, name = text.rpartition(".")
    if module == TORCH_OPTIM:
        return OptimizerSource(text, module, name, "torch")
    top = module.split(".")[0]
    if top.startswith("_"):
        raise SourceError(
            f"{text!r}: optimizers/{top}.py is a template (a file whose name starts with _ "
            f"is never loaded). Fix: copy it to optimizers/<name>.py and write <name>.{name}"
        )
    file = optimizers_dir / f"{top}.py" if optimizers_dir is not None else None
    if file is not None and file.is_file():
        if importlib.util.find_spec(top) is not None:
            raise SourceError(
                f"{file} has the name of the installed package {top!r}, so {text!r} is "
                f"ambiguous. Fix: rename the file (and write <new name>.{name})"
            )
        if "." in module:
            raise SourceError(
                f"{text!r}: a class of optimizers/{top}.py is written {top}.ClassName, "
                "one dot. Fix: write " + f"{top}.{name}"
            )
        return OptimizerSource(text, module, name, "file", file)
    try:
        found = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        found = None
    if found is None:
        if importlib.util.find_spec(top) is None:
            raise SourceError(
                f"{text!r}: no module {top!r} is installed and there is no "
                f"optimizers/{top}.py. Fix: pip install {pip_name(module)} (and add it to "
                "your requirements), or put your optimizer in optimizers/"
                f"{top}.py"
            )
        raise SourceError(
            f"{text!r}: {module!r} is not a module (attribute chains are not accepted). "
            f"Fix: write module.Class, the class as an attribute of its module (here "
            f"perhaps {module})"
        )
    return OptimizerSource(text, module, name, "package")


def file_digest(text: str, optimizers_dir: Path | None) -> str | None:
    """SHA-256 of the file a file optimizer's class is in; None for other sources."""
    source = locate(text, optimizers_dir)
    if source.origin != "file":
        return None
    return hashlib.sha256(source.path.read_bytes()).hexdigest()


# ----------------------------------------------------------- signatures


def signature_of(source: OptimizerSource, catalog) -> torch_catalog.Signature | None:
    """The keyword parameters of the class's __init__, or None where they cannot be
    read (torch's source unreadable). Raises SourceError for a missing class or a
    class that is not an optimizer."""
    if source.origin == "torch":
        if catalog is None:
            return None
        if source.name not in catalog.optimizers:
            close = [k for k in catalog.optimizers if k.lower() == source.name.lower()]
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise SourceError(
                f"{source.name!r} is not an optimizer class in torch.optim.{hint} Fix: use "
                f"one of {', '.join(sorted(catalog.optimizers))}, or module.Class for "
                "another package's"
            )
        return catalog.optimizers[source.name]
    if source.origin == "file":
        return _file_signature(source)
    return _package_signature(source)


def _package_signature(source: OptimizerSource) -> torch_catalog.Signature:
    try:
        module = importlib.import_module(source.module)
    except Exception as error:  # a package that fails to import says why
        raise SourceError(
            f"importing {source.module!r} failed ({type(error).__name__}: {error}). "
            f"Fix: reinstall it (pip install {pip_name(source.module)})"
        ) from None
    cls = getattr(module, source.name, None)
    import torch

    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        what = (
            f"{source.module} has no attribute {source.name!r}"
            if cls is None
            else f"{source.qualified} is not an optimizer class (not a subclass of "
            "torch.optim.Optimizer)"
        )
        raise SourceError(f"{what}. Fix: name an optimizer class of {source.module}")
    parameters, expected, accepts_any = [], {}, False
    for parameter in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            # Such packages forward **kwargs nowhere useful; names are checked
            # against the named parameters all the same.
            continue
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        parameters.append(parameter.name)
        if parameter.default is not inspect.Parameter.empty:
            found = torch_catalog.expected_of(parameter.default, parameter.annotation is int)
            if found is not None:
                expected[parameter.name] = found
    return torch_catalog.Signature(tuple(parameters), accepts_any, expected)


def _file_tree(source: OptimizerSource) -> ast.Module:
    try:
        return ast.parse(source.path.read_text(encoding="utf-8"), filename=str(source.path))
    except (OSError, SyntaxError, UnicodeDecodeError) as error:
        raise SourceError(f"{source.path}: cannot read the optimizer file: {error}") from None


def _file_signature(source: OptimizerSource) -> torch_catalog.Signature:
    tree = _file_tree(source)
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    if source.name not in classes:
        raise SourceError(
            f"{source.path} defines no class {source.name!r} (it has: "
            f"{', '.join(classes) or 'none'}). Fix: name one of its classes"
        )
    signature = torch_catalog.init_signature(classes[source.name], {})
    if signature is None:
        raise SourceError(
            f"{source.path}: class {source.name} has no __init__ of its own. Fix: define "
            "__init__(self, params, lr=..., ...) as in optimizers/_template.py"
        )
    return signature


def has_train_eval(source: OptimizerSource) -> bool:
    """Whether the class switches between training and evaluation points
    (schedule-free): a package's class is imported (signature_of did), a
    file's is read; torch.optim has none."""
    if source.origin == "package":
        cls = getattr(importlib.import_module(source.module), source.name)
        return callable(getattr(cls, "train", None)) and callable(getattr(cls, "eval", None))
    if source.origin == "file":
        for node in _file_tree(source).body:
            if isinstance(node, ast.ClassDef) and node.name == source.name:
                methods = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
                return {"train", "eval"} <= methods
    return False


def declared_protocol(source: OptimizerSource) -> dict:
    """A file optimizer's PROTOCOL literal (read, not executed); {} elsewhere."""
    if source.origin != "file":
        return {}
    for node in _file_tree(source).body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id == "PROTOCOL"
        ):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                raise SourceError(f"{source.path}: PROTOCOL must be a literal dict") from None
            allowed = "; ".join(
                f"{key}: {' or '.join(map(str, values))}" for key, values in PROTOCOL_KEYS.items()
            )
            if not isinstance(value, dict) or any(
                key not in PROTOCOL_KEYS or value[key] not in PROTOCOL_KEYS[key] for key in value
            ):
                raise SourceError(
                    f"{source.path}: PROTOCOL must be a dict with the keys and values "
                    f"{allowed} (got {value!r}). Fix: declare only those"
                )
            return value
    return {}


def wrapper_keyword(signature: torch_catalog.Signature) -> str | None:
    """The keyword through which a class takes its base optimizer, or None (not a wrapper)."""
    return next((k for k in WRAPPER_KEYWORDS if k in signature.parameters), None)


def wrapped_signature(
    wrapper: torch_catalog.Signature, base: torch_catalog.Signature
) -> torch_catalog.Signature:
    """The keyword arguments an entry with ``base:`` takes: the wrapper's own and the
    base's (the wrapper passes on what it does not take), never the base keyword."""
    keyword = wrapper_keyword(wrapper)
    names = dict.fromkeys(p for p in (*wrapper.parameters, *base.parameters) if p != keyword)
    return torch_catalog.Signature(
        tuple(names),
        wrapper.accepts_any and base.accepts_any,
        {**base.expected, **wrapper.expected},
    )
