"""A problem's model sizes and its parameter count, as its file declares them.

Two optional module-level literals of a problem file (read without running
it, like its other facts; ``optbench.problems``):

``SIZES``
    ``{"s": {"width": 16, "layers": 1}, "m": {...}, ...}``: each size's name
    (lower-case letters, digits and ``_``) and the parameters that make it,
    from the smallest model to the largest. A config entry's ``sizes:``
    picks some or all of them; each size is then its own problem entry.
``PARAMETER_COUNT``
    ``"75 * hidden + 10"``: the number of trained parameters as arithmetic
    (``+ - * // **``, parentheses) over integer parameters and integers; it is
    parsed, never evaluated as Python, so planning knows every size's count
    without building a model (``tests/test_scaling_axes.py`` checks the
    built-in files' formulas against the models built).

Standard library only.
"""

from __future__ import annotations

import ast
import operator
import re
from pathlib import Path

SIZE_NAME = re.compile(r"[a-z0-9][a-z0-9_]{0,15}")
_OPERATORS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.Pow: operator.pow,
}


class SizeError(ValueError):
    """A SIZES or PARAMETER_COUNT declaration that cannot be used; says the fix."""


def _formula_tree(text, path) -> ast.expr:
    try:
        tree = ast.parse(text, mode="eval").body if isinstance(text, str) else None
    except SyntaxError:
        tree = None
    if tree is None:
        raise SizeError(
            f"{path}: PARAMETER_COUNT must be a string of arithmetic over integer parameters, "
            f'got {text!r}. Fix: e.g. PARAMETER_COUNT = "75 * hidden + 10".'
        )
    return tree


def _evaluate(node: ast.expr, values: dict, text: str, path) -> int:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.Name):
        value = values.get(node.id)
        if type(value) is not int:
            raise SizeError(
                f"{path}: PARAMETER_COUNT {text!r} names {node.id!r}, which is not an integer "
                f"parameter (PARAMETERS). Fix: use integer parameters and integers only."
            )
        return value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left = _evaluate(node.left, values, text, path)
        right = _evaluate(node.right, values, text, path)
        return _OPERATORS[type(node.op)](left, right)
    raise SizeError(
        f"{path}: PARAMETER_COUNT {text!r} holds {ast.unparse(node)!r}, which is not "
        f"+, -, *, //, ** of integer parameters and integers. Fix: write the count as such "
        f"arithmetic (it is parsed, never run)."
    )


def parameter_count(text: str | None, values: dict, path: Path | str = "?") -> int | None:
    """The count ``text`` gives at the parameter ``values`` (None: no formula declared)."""
    if text is None:
        return None
    count = _evaluate(_formula_tree(text, path), values, text, path)
    if count < 1:
        raise SizeError(
            f"{path}: PARAMETER_COUNT {text!r} gives {count} at {values}; a model has at "
            "least one parameter. Fix: the formula."
        )
    return count


def check_literals(sizes, formula, parameters: dict, path: Path) -> dict:
    """SIZES checked (names, parameter names) and PARAMETER_COUNT checked at the
    defaults and at every size; returns SIZES ({} when the file declares none)."""
    if sizes is None:
        sizes = {}
    if not isinstance(sizes, dict) or not all(isinstance(v, dict) for v in sizes.values()):
        raise SizeError(
            f"{path}: SIZES must map each size's name to the parameters that make it, got "
            f'{sizes!r}. Fix: e.g. SIZES = {{"s": {{"width": 16}}, "l": {{"width": 64}}}}.'
        )
    for name, size in sizes.items():
        if not isinstance(name, str) or not SIZE_NAME.fullmatch(name):
            raise SizeError(
                f"{path}: SIZES name {name!r} is not 1-16 lower-case letters, digits and _ "
                "(it becomes part of file names). Fix: rename it."
            )
        unknown = [key for key in size if key not in parameters]
        if unknown or not size:
            raise SizeError(
                f"{path}: SIZES[{name!r}] sets {', '.join(map(repr, unknown)) or 'nothing'}, "
                f"which {'are' if len(unknown) > 1 else 'is'} not in PARAMETERS. Fix: set "
                f"parameters among {', '.join(parameters)}."
            )
    if sizes and formula is None:
        raise SizeError(
            f"{path}: SIZES without PARAMETER_COUNT: a size family needs each size's "
            'parameter count. Fix: declare e.g. PARAMETER_COUNT = "75 * hidden + 10".'
        )
    if formula is not None:
        parameter_count(formula, parameters, path)
        for size in sizes.values():
            parameter_count(formula, {**parameters, **size}, path)
    return sizes
