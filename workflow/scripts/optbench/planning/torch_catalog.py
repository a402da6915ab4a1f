"""What torch.optim and torch.nn offer, read from torch's source without importing it.

``import torch`` costs about 1.5 s, too much for every ``snakemake`` call (a
dry run included). Parsing the few source files that define the optimizers and
losses takes milliseconds and is enough to catch unknown classes and misspelt
keyword arguments before any job starts. The check is best effort: where torch
is not installed beside Snakemake (``--use-conda``) or its source looks
unfamiliar, it reports nothing and the training job does the authoritative
check when it builds the objects.

Default values are read too: where a keyword's default is a literal (a number,
a bool, a string, a tuple of those), a config value of another type is
refused, e.g. a list where SGD's ``dampening`` defaults to ``0``. A ``None``
default or one computed at run time says nothing about the type, so such
keywords are not type-checked.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib.util
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from optbench.planning import disk_cache


class _Unknown(Exception):
    """A default that is not a literal (a call, an attribute, ...)."""


@dataclass(frozen=True)
class Expected:
    """The type of value a keyword takes, as its default in torch's source tells.

    kind is one of bool, number (int or float; bool excluded), integer (the
    parameter is annotated ``int``), string, or sequence (items holds one
    Expected per position, or None for any length with unchecked items).
    """

    kind: str
    default: object
    items: tuple[Expected | None, ...] | None = None

    def describe(self) -> str:
        if self.kind == "sequence":
            if self.items is None:
                return "a list"
            if len({item.describe() if item else "a value" for item in self.items}) == 1:
                item = self.items[0].describe() if self.items[0] else "value"
                return f"a list of {len(self.items)} {_plural(item)}"
            return f"a list of {len(self.items)} values"
        return {
            "bool": "true or false",
            "number": "a number",
            "integer": "an integer",
            "string": "a string",
        }[self.kind]

    def accepts(self, value) -> bool:
        if self.kind == "bool":
            return isinstance(value, bool)
        if isinstance(value, bool):  # bool is an int subclass: True is no learning rate
            return False
        if self.kind == "number":
            return isinstance(value, int | float)
        if self.kind == "integer":
            return isinstance(value, int)
        if self.kind == "string":
            return isinstance(value, str)
        if not isinstance(value, list | tuple):
            return False
        if self.items is None:
            return True
        return len(value) == len(self.items) and all(
            item is None or item.accepts(v) for item, v in zip(self.items, value, strict=True)
        )


def _plural(description: str) -> str:
    words = description.split(" ", 1)
    return f"{words[1]}s" if words[0] in ("a", "an") and len(words) == 2 else description


def _expected(value, integer_annotation: bool = False) -> Expected | None:
    """What a literal default value tells about the parameter's type."""
    if isinstance(value, bool):
        return Expected("bool", value)
    if isinstance(value, int | float):
        # An int default alone does not make an integer parameter: SGD's
        # momentum is `momentum: float = 0` and takes 0.9. Only an `int`
        # annotation (LBFGS's history_size, CTCLoss's blank) does.
        return Expected("integer" if integer_annotation else "number", value)
    if isinstance(value, str):
        return Expected("string", value)
    if isinstance(value, tuple):
        items = tuple(_expected(v) for v in value) if value else None
        return Expected("sequence", value, items)
    return None  # None and anything else: no evidence about the type


@dataclass(frozen=True)
class Signature:
    """Keyword parameters of a class's ``__init__``, with what their defaults tell."""

    parameters: tuple[str, ...]
    accepts_any: bool  # true when __init__ takes **kwargs
    expected: dict[str, Expected] = field(default_factory=dict)

    def unknown(self, names) -> list[str]:
        if self.accepts_any:
            return []
        return [name for name in names if name not in self.parameters]

    def wrong_type(self, name: str, value) -> Expected | None:
        """What ``name`` expects, when ``value`` is not of that type; else None."""
        expected = self.expected.get(name)
        if expected is None or expected.accepts(value):
            return None
        return expected


@dataclass(frozen=True)
class Catalog:
    optimizers: dict[str, Signature]
    losses: dict[str, Signature]
    schedulers: dict[str, Signature] = field(default_factory=dict)


def _torch_dir() -> Path | None:
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _literal(node: ast.expr, constants: dict):
    """The value of a literal default; module-level constants such as EPS resolve."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Tuple | ast.List):
        return tuple(_literal(item, constants) for item in node.elts)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _literal(node.operand, constants)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Name) and node.id in constants:
        return constants[node.id]
    raise _Unknown(ast.dump(node))


def _is_int_annotation(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Name) and node.id == "int"


def _init_signature(cls: ast.ClassDef, constants: dict) -> Signature | None:
    for node in cls.body:
        if isinstance(node, ast.FunctionDef) and node.name == "__init__":
            args = node.args
            positional = args.posonlyargs + args.args
            names = [a.arg for a in positional + args.kwonlyargs]
            # Defaults align with the last positional parameters; keyword-only
            # ones have one entry each, None where there is no default.
            pairs = list(
                zip(positional[len(positional) - len(args.defaults) :], args.defaults, strict=True)
            )
            pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)]
            pairs = [(a, d) for a, d in pairs if d is not None]
            expected = {}
            for arg, default in pairs:
                try:
                    value = _literal(default, constants)
                except _Unknown:
                    continue
                found = _expected(value, _is_int_annotation(arg.annotation))
                if found is not None:
                    expected[arg.arg] = found
            return Signature(
                tuple(n for n in names if n != "self"), args.kwarg is not None, expected
            )
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

    def __init__(self, path: Path, package: str, source: bytes | None = None):
        source = path.read_bytes() if source is None else source
        tree = ast.parse(source.decode("utf-8"), filename=str(path))
        self.classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
        self.constants = {}  # NAME = literal at top level, for defaults such as eps=EPS
        for node in tree.body:
            if (
                isinstance(node, ast.Assign)
                and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
            ):
                with contextlib.suppress(_Unknown):
                    self.constants[node.targets[0].id] = _literal(node.value, {})
        self.imports = {}
        for node in tree.body:
            if not isinstance(node, ast.ImportFrom):
                continue
            parts = package.split(".")
            base = parts[: len(parts) - node.level + 1] if node.level else []
            source = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                self.imports[alias.asname or alias.name] = (source, alias.name)


def _source_file(torch_dir: Path, dotted: str) -> Path | None:
    """The file that defines module ``dotted`` of torch's source, or None."""
    stem = torch_dir.parent.joinpath(*dotted.split("."))
    candidates = (stem.with_suffix(".py"), stem / "__init__.py")
    return next((c for c in candidates if c.is_file()), None)


class _Resolver:
    """Follows base classes across torch's files to find lineage and __init__.

    ``consulted`` (module name -> its file and the digest of the bytes parsed,
    or None) records every module it looked up: the catalogue is a function of
    these files alone (the disk cache of ``load`` checks them)."""

    def __init__(self, torch_dir: Path, consulted: dict[str, str | None] | None = None):
        self.torch_dir = torch_dir
        self.modules: dict[str, _Module | None] = {}
        self.consulted = {} if consulted is None else consulted

    def module(self, dotted: str) -> _Module | None:
        if dotted not in self.modules:
            path = _source_file(self.torch_dir, dotted)
            source = path.read_bytes() if path else b""
            self.consulted[dotted] = _file_print(self.torch_dir, path, source)
            package = dotted if path and path.name == "__init__.py" else dotted.rpartition(".")[0]
            self.modules[dotted] = _Module(path, package, source) if path else None
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
        signature = _init_signature(cls, self.module(where).constants)
        names = [cls.name]
        for base in _base_names(cls):
            base_names, base_signature = self.lineage(where, base, depth + 1)
            names += base_names
            signature = signature or base_signature
        return names, signature


def _optimizers(torch_dir: Path, consulted: dict | None = None) -> dict[str, Signature]:
    """Public torch.optim classes that derive from Optimizer, with their signatures."""
    resolver = _Resolver(torch_dir, consulted)
    found = {}
    for name in resolver.module("torch.optim").imports:
        lineage, signature = resolver.lineage("torch.optim", name)
        if name != "Optimizer" and "Optimizer" in lineage[1:] and signature:
            found[name] = signature
    return found


def _public_subclasses(
    torch_dir: Path, module: str, base: str, consulted: dict | None = None
) -> dict[str, Signature]:
    """Public classes defined in ``module`` that derive from ``base``, with signatures."""
    resolver = _Resolver(torch_dir, consulted)
    found = {}
    for name in resolver.module(module).classes:
        lineage, signature = resolver.lineage(module, name)
        if not name.startswith("_") and base in lineage and signature:
            found[name] = signature
    return found


def _schedulers(torch_dir: Path, consulted: dict | None = None) -> dict[str, Signature]:
    """Classes of torch/optim/lr_scheduler.py that derive from LRScheduler."""
    return _public_subclasses(torch_dir, "torch.optim.lr_scheduler", "LRScheduler", consulted)


def _losses(torch_dir: Path, consulted: dict | None = None) -> dict[str, Signature]:
    """Classes of torch/nn/modules/loss.py that derive from its _Loss base."""
    return _public_subclasses(torch_dir, "torch.nn.modules.loss", "_Loss", consulted)


def _read(torch_dir: Path, consulted: dict) -> Catalog | None:
    """The catalogue read from torch's source in ``torch_dir``; ``consulted``
    gets every module looked up, with its file."""
    try:
        optimizers, losses = _optimizers(torch_dir, consulted), _losses(torch_dir, consulted)
        schedulers = _schedulers(torch_dir, consulted)
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None
    if not optimizers or not losses:
        return None
    return Catalog(optimizers, losses, schedulers)


# The catalogue on disk (disk_cache), per torch folder: every snakemake start
# reads it, and parsing torch's source costs about 0.15 s of CPU. An entry holds
# each module the reading looked up, with the SHA-256 of its file (None: no
# file). The reading depends on nothing else, so where every module still
# resolves to the same file with the same bytes it would give the same
# catalogue: the entry is used only then (checking costs milliseconds).
_CATALOG_CACHE = "torch-catalog.json"


def _file_print(torch_dir: Path, path: Path | None, source: bytes) -> str | None:
    """A module's file (relative to ``torch_dir``'s parent) and its bytes' digest."""
    if path is None:
        return None
    return f"{path.relative_to(torch_dir.parent)}:{hashlib.sha256(source).hexdigest()}"


def _fingerprint(torch_dir: Path, modules) -> dict[str, str | None]:
    """Each of ``modules`` as _Resolver records it, read from the files now."""
    found = {}
    for dotted in modules:
        path = _source_file(torch_dir, dotted)
        found[dotted] = _file_print(torch_dir, path, path.read_bytes() if path else b"")
    return found


def _cached(torch_dir: Path) -> Catalog | None:
    entry = disk_cache.read(_CATALOG_CACHE).get(str(torch_dir))
    try:
        if entry["sources"] == _fingerprint(torch_dir, entry["sources"]):
            return _decode_catalog(entry["catalog"])
    except (OSError, KeyError, TypeError, ValueError, AttributeError):
        pass  # no entry, or one this code cannot read: read the source
    return None


@cache
def load() -> Catalog | None:
    """The catalogue of the torch importable here, or None when it cannot be read."""
    torch_dir = _torch_dir()
    if torch_dir is None:
        return None
    found = _cached(torch_dir)
    if found is not None:
        return found
    consulted: dict[str, str | None] = {}
    found = _read(torch_dir, consulted)
    if found is not None:
        entry = {"sources": consulted, "catalog": _encode_catalog(found)}
        disk_cache.add(_CATALOG_CACHE, {str(torch_dir): entry})
    return found


# The catalogue as JSON and back, exactly: a tuple stays a tuple (JSON has only
# lists), an int an int, a float a float (written as its repr, read back equal).
def _encode_value(value):
    if isinstance(value, tuple):
        return {"tuple": [_encode_value(v) for v in value]}
    return value


def _decode_value(value):
    if isinstance(value, dict):
        return tuple(_decode_value(v) for v in value["tuple"])
    if isinstance(value, list):
        raise ValueError("a list where the catalogue holds tuples")
    return value


def _encode_expected(expected: Expected | None):
    if expected is None:
        return None
    items = None if expected.items is None else [_encode_expected(i) for i in expected.items]
    return [expected.kind, _encode_value(expected.default), items]


def _decode_expected(encoded) -> Expected | None:
    if encoded is None:
        return None
    kind, default, items = encoded
    items = None if items is None else tuple(_decode_expected(i) for i in items)
    return Expected(kind, _decode_value(default), items)


def _encode_catalog(catalog: Catalog) -> dict:
    return {
        part: {
            name: [
                list(signature.parameters),
                signature.accepts_any,
                {k: _encode_expected(e) for k, e in signature.expected.items()},
            ]
            for name, signature in getattr(catalog, part).items()
        }
        for part in ("optimizers", "losses", "schedulers")
    }


def _decode_catalog(encoded: dict) -> Catalog:
    parts = {
        part: {
            name: Signature(
                tuple(parameters),
                bool(accepts_any),
                {k: _decode_expected(e) for k, e in expected.items()},
            )
            for name, (parameters, accepts_any, expected) in encoded[part].items()
        }
        for part in ("optimizers", "losses", "schedulers")
    }
    return Catalog(parts["optimizers"], parts["losses"], parts["schedulers"])


# Public names for the checks of classes from other sources (optimizer_sources).
expected_of = _expected
init_signature = _init_signature
