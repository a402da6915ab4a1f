"""What torch.optim and torch.nn offer, read from torch's source without importing it.

``import torch`` costs about 1.5 s, too much for every ``snakemake`` call (a
dry run included). Parsing the few source files that define the optimizers and
losses takes milliseconds and is enough to catch unknown classes and misspelt
keyword arguments before any job starts. The check is best effort: where torch
is not installed beside Snakemake (``--use-conda``) or its source looks
unfamiliar, it reports nothing and the training job does the authoritative
check when it builds the objects.
"""

from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path


@dataclass(frozen=True)
class Signature:
    """Keyword parameters of a class's ``__init__``."""

    parameters: tuple[str, ...]
    accepts_any: bool  # true when __init__ takes **kwargs

    def unknown(self, names) -> list[str]:
        if self.accepts_any:
            return []
        return [name for name in names if name not in self.parameters]


@dataclass(frozen=True)
class Catalog:
    optimizers: dict[str, Signature]
    losses: dict[str, Signature]


def _torch_dir() -> Path | None:
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _init_signature(cls: ast.ClassDef) -> Signature | None:
    for node in cls.body:
        if isinstance(node, ast.FunctionDef) and node.name == "__init__":
            args = node.args
            names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
            return Signature(tuple(n for n in names if n != "self"), args.kwarg is not None)
    return None


def _base_names(cls: ast.ClassDef) -> list[str]:
    names = []
    for base in cls.bases:
        if isinstance(base, ast.Name):
            names.append(base.id)
        elif isinstance(base, ast.Attribute):
            names.append(base.attr)
    return names


class _Module:
    """The top-level classes of one torch source file, and the names it imports."""

    def __init__(self, path: Path, package: str):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        self.classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
        self.imports = {}
        for node in tree.body:
            if not isinstance(node, ast.ImportFrom):
                continue
            parts = package.split(".")
            base = parts[: len(parts) - node.level + 1] if node.level else []
            source = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                self.imports[alias.asname or alias.name] = (source, alias.name)


class _Resolver:
    """Follows base classes across torch's files to find lineage and __init__."""

    def __init__(self, torch_dir: Path):
        self.torch_dir = torch_dir
        self.modules: dict[str, _Module | None] = {}

    def module(self, dotted: str) -> _Module | None:
        if dotted not in self.modules:
            stem = self.torch_dir.parent.joinpath(*dotted.split("."))
            candidates = (stem.with_suffix(".py"), stem / "__init__.py")
            path = next((c for c in candidates if c.is_file()), None)
            package = dotted if path and path.name == "__init__.py" else dotted.rpartition(".")[0]
            self.modules[dotted] = _Module(path, package) if path else None
        return self.modules[dotted]

    def lookup(self, dotted: str, name: str, depth: int = 0):
        """(module, ClassDef) that ``name`` means inside module ``dotted``."""
        module = self.module(dotted)
        if module is None or depth > 8:
            return None
        if name in module.classes:
            return dotted, module.classes[name]
        if name in module.imports:
            source, original = module.imports[name]
            return self.lookup(source, original, depth + 1)
        return None

    def lineage(self, dotted: str, name: str, depth: int = 0):
        """Class names from ``name`` up its first-listed bases, with the first __init__ found."""
        found = self.lookup(dotted, name)
        if found is None or depth > 16:
            return [name], None
        where, cls = found
        signature = _init_signature(cls)
        names = [cls.name]
        for base in _base_names(cls):
            base_names, base_signature = self.lineage(where, base, depth + 1)
            names += base_names
            signature = signature or base_signature
        return names, signature


def _optimizers(torch_dir: Path) -> dict[str, Signature]:
    """Public torch.optim classes that derive from Optimizer, with their signatures."""
    resolver = _Resolver(torch_dir)
    found = {}
    for name in resolver.module("torch.optim").imports:
        lineage, signature = resolver.lineage("torch.optim", name)
        if name != "Optimizer" and "Optimizer" in lineage[1:] and signature:
            found[name] = signature
    return found


def _losses(torch_dir: Path) -> dict[str, Signature]:
    """Public classes of torch/nn/modules/loss.py that derive from its _Loss base."""
    resolver = _Resolver(torch_dir)
    found = {}
    for name in resolver.module("torch.nn.modules.loss").classes:
        lineage, signature = resolver.lineage("torch.nn.modules.loss", name)
        if not name.startswith("_") and "_Loss" in lineage and signature:
            found[name] = signature
    return found


@cache
def load() -> Catalog | None:
    """The catalogue of the torch importable here, or None when it cannot be read."""
    torch_dir = _torch_dir()
    if torch_dir is None:
        return None
    try:
        optimizers, losses = _optimizers(torch_dir), _losses(torch_dir)
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None
    if not optimizers or not losses:
        return None
    return Catalog(optimizers, losses)
