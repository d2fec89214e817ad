"""Checking a value from YAML against a type annotation: the recipe schema's fields and the
parameters of plugins alike, so that a wrong value fails before anything is built."""

from __future__ import annotations

import types
import typing
from typing import Any

from zoo.errors import ZooError, brief


def check_type(hint: Any, value: Any, where: str) -> Any:
    """`value` if it is of type `hint` (ints widened to float where a float is wanted, YAML's
    `1e-3` string read as a float); else a ZooError at `where` naming the type expected."""
    if hint is Any:
        return value
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return check_type(arg, value, where)
            except ZooError:
                continue
        raise ZooError(f"{where}: expected {type_name(hint)}, got {brief(value)}")
    if origin is list:
        if not isinstance(value, list):
            raise ZooError(f"{where}: expected a list, got {brief(value)}")
        (item,) = typing.get_args(hint)
        return [check_type(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads `1e-3` as a string
        try:
            return float(value)
        except ValueError:
            pass
    if hint in (int, float, str) and isinstance(value, bool):
        raise ZooError(f"{where}: expected {type_name(hint)}, got {brief(value)}")
    if isinstance(hint, type) and not isinstance(value, hint):
        raise ZooError(f"{where}: expected {type_name(hint)}, got {brief(value)}")
    return value


def type_name(hint: Any) -> str:
    """A type in words, as errors say it: `float or null`, `a list of str`."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if hint is bool:
        return "true or false"
    if typing.get_origin(hint) is list:
        return f"a list of {type_name(typing.get_args(hint)[0])}"
    return getattr(hint, "__name__", str(hint))
