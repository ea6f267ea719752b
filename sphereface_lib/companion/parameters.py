"""Notebook parameters checked against their declared types, by the runner and inside the notebook itself.

A notebook declares its parameters in the cell tagged ``parameters``, one annotated line each, as papermill's
``--help-notebook`` reads them::

    iterations: int = 500  # training iterations per model
    seeds: list[int] = [0, 1, 2]  # one model per seed
    data: "Optional[str]" = None  # a packed dataset from data_prep/ (None: synthetic faces)

Types: ``int``, ``float`` (an int is accepted), ``bool``, ``str``, ``None``, ``list[T]``, ``tuple[T, ...]``,
``dict[K, V]``, ``Optional[T]``, ``Union[A, B]``, ``A | B`` and ``Any``; write a type that needs an import
(``Optional``) in quotes. The first cell after the parameters calls ``check_parameters(globals())``, so that
``papermill -p unknown 1`` or ``-p iterations abc`` fails there, naming the parameter.
"""

from __future__ import annotations

import ast
from typing import Any, Mapping

from ..errors import UserError

_SCALARS: dict[str, type | tuple[type, ...]] = {"int": int, "float": (int, float), "bool": bool, "str": str}


class ParameterError(UserError):
    """A notebook parameter with an undeclared name or a value of the wrong type."""


def _matches(value: Any, node: ast.expr) -> bool:
    if isinstance(node, ast.Constant) and node.value is None or isinstance(node, ast.Name) and node.id in ("None", "NoneType"):
        return value is None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):  # a quoted annotation inside a type
        return _matches(value, ast.parse(node.value, mode="eval").body)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _matches(value, node.left) or _matches(value, node.right)
    name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", None)
    if name == "Any":
        return True
    if name in _SCALARS:
        return isinstance(value, _SCALARS[name]) and (name == "bool" or not isinstance(value, bool))
    if name in ("list", "List", "tuple", "Tuple", "dict", "Dict"):
        container = {"list": list, "tuple": (list, tuple), "dict": dict}[name.lower()]
        return isinstance(value, container)
    if isinstance(node, ast.Subscript):
        outer = node.value.attr if isinstance(node.value, ast.Attribute) else getattr(node.value, "id", None)
        args = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
        if outer in ("Optional", "Union"):
            return (outer == "Optional" and value is None) or any(_matches(value, a) for a in args)
        if outer in ("list", "List"):
            return isinstance(value, list) and all(_matches(v, args[0]) for v in value)
        if outer in ("tuple", "Tuple"):
            if not isinstance(value, (list, tuple)):
                return False
            if len(args) == 2 and isinstance(args[1], ast.Constant) and args[1].value is Ellipsis:
                return all(_matches(v, args[0]) for v in value)
            return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
        if outer in ("dict", "Dict") and len(args) == 2:
            return isinstance(value, dict) and all(_matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items())
    raise ParameterError(f"type {ast.unparse(node)!r} is not supported; use int, float, bool, str, None, list[T], "
                         "tuple[T, ...], dict[K, V], Optional[T] or A | B")


def type_name(annotation: Any) -> str:
    """An annotation (a type, a typing form or a string) as the text :func:`matches` reads."""
    if isinstance(annotation, str):
        return annotation
    if isinstance(annotation, type) and not getattr(annotation, "__args__", None):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def matches(value: Any, annotation: Any) -> bool:
    """Whether ``value`` has the declared type (list elements included; an int passes as a float)."""
    text = type_name(annotation)
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError:
        raise ParameterError(f"type {text!r} is not a Python type expression") from None
    return _matches(value, node)


def injected_names(history: list[str]) -> list[str]:
    """Names that papermill's injected cell (it starts with ``# Parameters``) assigns, in IPython's ``In``."""
    names: list[str] = []
    for source in history:
        if source.lstrip().startswith("# Parameters"):
            for stmt in ast.parse(source).body:
                names += [t.id for t in getattr(stmt, "targets", []) if isinstance(t, ast.Name)]
    return names


def check_parameters(namespace: Mapping[str, Any]) -> None:
    """Reject injected parameters the notebook does not declare and values of the wrong type, by name.

    Call as ``check_parameters(globals())`` in the cell after the parameters cell; the declared types are
    the parameters cell's annotations (``__annotations__``), the injected names come from IPython's ``In``.
    """
    declared = dict(namespace.get("__annotations__", {}))
    if not declared:
        raise ParameterError("the parameters cell declares no types: write each parameter as 'name: type = value'")
    problems = [
        f"unknown parameter {name!r}; this notebook declares: {', '.join(sorted(declared))}"
        for name in injected_names(list(namespace.get("In", []))) if name not in declared
    ]
    problems += [
        f"parameter {name!r} = {namespace[name]!r} ({type(namespace[name]).__name__}) does not match its declared type {type_name(kind)}"
        for name, kind in declared.items() if name in namespace and not matches(namespace[name], kind)
    ]
    if problems:
        raise ParameterError("; ".join(problems))
