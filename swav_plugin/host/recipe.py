"""Recipes: YAML files that name components and their keyword arguments.

A recipe has four sections::

    method:  {name: swav, backbone: {name: resnet18_cifar}, head: {...}, ...}   # or just: swav
    data:    {dataset: {name: digits}, transform: {...}, batch_size: 128, ...}
    trainer: {max_epochs: 20, accelerator: auto, precision: 32}                  # pl.Trainer kwargs
    run:     {output_dir: runs/demo, seed: 0}

A *component node* is a registered name or a mapping ``{name: ..., **kwargs}``. A parameter
annotated with a registry, ``backbone: Annotated[nn.Module, BACKBONES]``, takes a component
node of that registry's kind, which is built before the factory is called. Every key is
checked against the factory's signature and type hints before anything is built, and
:func:`swav_plugin.host.resolve.resolve` fills in the defaults so that the saved recipe states
every value the run used. A factory with a classmethod ``derive_kwargs(kwargs, path)`` then
fills in what it derives from its other arguments (e.g. a head's input width from its
backbone), so that those are stated too.
"""

from __future__ import annotations

import collections.abc
import difflib
import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml

from swav_plugin.host.errors import ConfigError
from swav_plugin.host.registry import REGISTRIES, Registry

SECTIONS = ("method", "data", "trainer", "run", "callbacks", "loggers")


def _refuse_duplicate_keys(node: yaml.Node) -> None:
    """Raise on a key given twice in any mapping of a composed YAML document.

    Plain YAML keeps the last of two equal keys, so a second ``data:`` section or a repeated
    ``batch_size`` would silently replace the first.
    """
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                    )
                seen.add(key_node.value)
            _refuse_duplicate_keys(value_node)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _refuse_duplicate_keys(item)


def read_recipe(path: str | Path) -> dict[str, Any]:
    """Read a recipe file as plain YAML: no Python object tags, no key given twice."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe file '{path}' does not exist; pass the path of a YAML recipe")
    try:
        text = path.read_text()
        document = yaml.compose(text, Loader=yaml.SafeLoader)  # syntax only: builds no object
        if document is not None:
            _refuse_duplicate_keys(document)
        recipe = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_error_message(path, exc)) from None
    if not isinstance(recipe, dict):
        raise ConfigError(f"recipe '{path}' must be a mapping with sections {', '.join(SECTIONS)}")
    return recipe


def _yaml_error_message(path: Path, exc: yaml.YAMLError) -> str:
    where = getattr(exc, "problem_mark", None)
    at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    tag = re.search(r"constructor for the tag '([^']*)'", problem)
    if tag:
        name = tag.group(1).replace("tag:yaml.org,2002:", "!!")
        problem = (
            f"the tag '{name}' is not allowed; a recipe holds plain YAML values only "
            "(mappings, lists, strings, numbers, booleans, null)"
        )
    elif problem.startswith("duplicate key"):
        problem += " (YAML would silently keep the last one); keep one"
    else:
        problem += "; fix the YAML syntax there"
    return f"recipe '{path}' is not valid YAML{at}: {problem}"


def apply_overrides(recipe: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply dotted ``key=value`` overrides; values are parsed as YAML (``5``, ``[1, 2]``)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override '{item}' must look like section.key=value")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"override '{item}': the value is not valid YAML") from None
        node = recipe
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if isinstance(child, str):  # a bare component name grows into a mapping
                child = {"name": child}
            elif child is None:
                child = {}
            elif not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise ConfigError(f"override '{item}': '{where}' is {child!r}, not a mapping")
            node[part] = child
            node = child
        node[parts[-1]] = value
    return recipe


def resolve_component(node: Any, kind: str, path: str) -> dict[str, Any]:
    """Resolve a component node of ``kind`` into ``{name: ..., **all_kwargs}``."""
    if isinstance(node, str):
        node = {"name": node}
    if not isinstance(node, dict) or "name" not in node:
        raise ConfigError(
            f"{path}: expected a {kind} name or a mapping with a 'name' key, got {node!r}; "
            f"registered {kind}s: {', '.join(REGISTRIES[kind].names())}"
        )
    name = node["name"]
    factory = _lookup(kind, name, path)
    kwargs = {k: v for k, v in node.items() if k != "name"}
    return {"name": name, **resolve_kwargs(factory, kwargs, path)}


def resolve_kwargs(factory: Callable[..., Any], kwargs: Mapping[str, Any], path: str) -> dict:
    """Check ``kwargs`` against ``factory``'s signature; return them with defaults filled in."""
    params = _parameters(factory)
    hints = type_hints(factory)
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    resolved: dict[str, Any] = {}
    kinds = component_kinds(factory)
    for key, value in kwargs.items():
        if key not in params and not accepts_any:
            raise ConfigError(unknown_key_message(path, key, list(params), _describe(factory)))
        if key in kinds and value is not None:
            resolved[key] = resolve_component(value, kinds[key], f"{path}.{key}")
        else:
            value = _coerce_number(value, hints.get(key, Any))
            check_type(value, hints.get(key, Any), f"{path}.{key}")
            resolved[key] = value
    for key, param in params.items():
        if key in resolved or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        if param.default is param.empty:
            raise ConfigError(f"{path}: missing required key '{key}' of {_describe(factory)}")
        if key in kinds and param.default is not None:
            resolved[key] = resolve_component(param.default, kinds[key], f"{path}.{key}")
        elif _is_plain(param.default):
            resolved[key] = _to_plain(param.default)
    derive = getattr(factory, "derive_kwargs", None)
    return derive(resolved, path) if callable(derive) else resolved


def build_component(node: Mapping[str, Any], kind: str, path: str | None = None) -> Any:
    """Build a resolved component node (nested component nodes are built first)."""
    path = path or kind
    factory = _lookup(kind, node["name"], path)
    kwargs = {k: v for k, v in node.items() if k != "name"}
    return call_with_kwargs(factory, kwargs, path)


def call_with_kwargs(factory: Callable[..., Any], kwargs: Mapping[str, Any], path: str) -> Any:
    """Call ``factory`` with resolved kwargs, building nested component nodes first."""
    kinds = component_kinds(factory)
    built = {
        key: build_component(value, kinds[key], f"{path}.{key}")
        if key in kinds and isinstance(value, Mapping)
        else value
        for key, value in kwargs.items()
    }
    try:
        return factory(**built)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def _lookup(kind: str, name: Any, path: str) -> Callable[..., Any]:
    try:
        return REGISTRIES[kind].get(name)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _parameters(factory: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    target = factory.__init__ if inspect.isclass(factory) else factory
    params = dict(inspect.signature(target).parameters)
    params.pop("self", None)
    return {k: p for k, p in params.items() if p.kind is not p.VAR_POSITIONAL}


def type_hints(factory: Callable[..., Any], extras: bool = False) -> dict[str, Any]:
    """The resolved type hints of a component's constructor (``{}`` when they cannot be);
    with ``extras``, ``Annotated`` hints keep their metadata."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        return typing.get_type_hints(target, include_extras=extras)
    except (NameError, TypeError):  # unresolvable forward references: check nothing, not guess
        return {}


def component_kinds(factory: Callable[..., Any]) -> dict[str, str]:
    """The parameters of ``factory`` annotated with a registry (``Annotated[T, REGISTRY]``,
    optional or not), each with its registry's kind."""
    kinds = {}
    for key, hint in type_hints(factory, extras=True).items():
        registry = _registry_in(hint)
        if registry is not None:
            kinds[key] = registry.kind
    return kinds


def _registry_in(hint: Any) -> Registry | None:
    if typing.get_origin(hint) is Annotated:
        return next((m for m in hint.__metadata__ if isinstance(m, Registry)), None)
    if typing.get_origin(hint) in (Union, types.UnionType):
        return next(filter(None, map(_registry_in, typing.get_args(hint))), None)
    return None


def _describe(factory: Callable[..., Any]) -> str:
    return f"{factory.__module__}.{factory.__qualname__}"


def unknown_key_message(path: str, key: str, valid: Sequence[str], owner: str = "") -> str:
    close = difflib.get_close_matches(key, list(valid), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    of = f" of {owner}" if owner else ""
    return f"{path}: unknown key '{key}'{hint} valid keys{of}: {', '.join(valid)}"


def _is_plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def _to_plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    return value


_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _coerce_number(value: Any, annotation: Any) -> Any:
    """``1e-6`` is a string to YAML 1.1; read it as the float the user meant."""
    if isinstance(value, str) and _FLOAT.match(value) and _matches(0.5, annotation):
        return float(value)
    return value


def check_type(value: Any, annotation: Any, path: str) -> None:
    """Raise a one-line :class:`ConfigError` if ``value`` does not fit ``annotation``."""
    if not _matches(value, annotation):
        raise ConfigError(
            f"{path}: expected {_type_name(annotation)}, got {value!r} ({type(value).__name__})"
        )


_SEQUENCES = (list, tuple, collections.abc.Sequence)
_MAPPINGS = (dict, collections.abc.Mapping)


def _matches(value: Any, tp: Any) -> bool:
    if tp is Any or tp is inspect.Parameter.empty:
        return True
    origin, args = typing.get_origin(tp), typing.get_args(tp)
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
