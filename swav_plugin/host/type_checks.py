"""Type checks of recipe values against a factory's type hints, before anything is built.

A recipe holds only plain YAML values, so a hint is checked as far as YAML can express it
(``int``, ``float``, ``str``, ``Literal``, lists, mappings, unions); other classes are left to
the factories, which convert or reject what they are given.
"""

from __future__ import annotations

import collections.abc
import inspect
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from swav_plugin.host.errors import ConfigError
from swav_plugin.host.quoting import shown

# Written so that no two parts can take the same digits: matching takes linear time.
_FLOAT = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")
_SEQUENCES = (list, tuple, collections.abc.Sequence)
_MAPPINGS = (dict, collections.abc.Mapping)


def check_type(value: Any, annotation: Any, path: str) -> None:
    """Raise a one-line :class:`ConfigError` if ``value`` does not fit ``annotation``."""
    if not _matches(value, annotation):
        raise ConfigError(
            f"{path}: expected {_type_name(annotation)}, got {shown(value)} "
            f"({type(value).__name__})"
        )


def coerce_number(value: Any, annotation: Any) -> Any:
    """``1e-6`` is a string to YAML 1.1; read it as the float the user meant."""
    if isinstance(value, str) and _FLOAT.match(value) and _matches(0.5, annotation):
        return float(value)
    return value


def is_plain(value: Any) -> bool:
    """Whether ``value`` is a plain YAML value (``None``, a bool, number or string, or lists
    and string-keyed mappings of them)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_plain(v) for k, v in value.items())
    return False


def to_plain(value: Any) -> Any:
    """A copy of the plain ``value`` with its tuples as lists, as YAML writes them."""
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    return value


def _matches(value: Any, tp: Any) -> bool:
    if tp is Any or tp is inspect.Parameter.empty:
        return True
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:  # its metadata (a registry, say) says nothing of the value's type
        return _matches(value, args[0])
    if origin in (Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if tp is type(None) or tp is None:
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if tp in (Path,) or (isinstance(tp, type) and issubclass(tp, Path)):
        return isinstance(value, str)
    if tp in _SEQUENCES or origin in _SEQUENCES:
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(map(_matches, value, args))
        return not args or all(_matches(v, args[0]) for v in value)
    if tp in _MAPPINGS or origin in _MAPPINGS:
        if not isinstance(value, dict):
            return False
        return not args or all(_matches(v, args[1]) for v in value.values())
    # Other classes (modules, accelerators, ...) cannot be written in YAML; their factories
    # convert or reject what they are given.
    return True


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        return _type_name(args[0])
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if tp is type(None):
        return "None"
    if origin in _SEQUENCES:
        inner = f" of {_type_name(args[0])}" if args and args[-1] is not Ellipsis else ""
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} ({', '.join(_type_name(a) for a in args)})"
        return f"a list{inner}"
    if origin in _MAPPINGS:
        return "a mapping"
    return getattr(tp, "__name__", str(tp))
