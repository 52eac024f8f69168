"""Component nodes: how a recipe names the components it is built from.

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

import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Union

from swav_plugin.host.errors import ConfigError
from swav_plugin.host.quoting import close_match_hint, shown
from swav_plugin.host.registry import REGISTRIES, Registry
from swav_plugin.host.type_checks import check_type, coerce_number, is_plain, to_plain


def resolve_component(node: Any, kind: str, path: str) -> dict[str, Any]:
    """Resolve a component node of ``kind`` into ``{name: ..., **all_kwargs}``."""
    if isinstance(node, str):
        node = {"name": node}
    if not isinstance(node, dict) or "name" not in node:
        raise ConfigError(
            f"{path}: expected a {kind} name or a mapping with a 'name' key, got {shown(node)}; "
            f"registered {kind}s: {', '.join(REGISTRIES[kind].names())}"
        )
    name = node["name"]
    factory = _lookup(kind, name, path)
    kwargs = {k: v for k, v in node.items() if k != "name"}
    return {"name": name, **resolve_kwargs(factory, kwargs, path)}


def resolve_kwargs(factory: Callable[..., Any], kwargs: Mapping[str, Any], path: str,
                   owned: Mapping[str, str] | None = None) -> dict:
    """Check ``kwargs`` against ``factory``'s signature; return them with defaults filled in.

    ``owned`` maps the parameters the runner sets itself to why: a recipe that sets one is
    refused, and they are left out of the result.
    """
    owned = owned or {}
    for key, why in owned.items():
        if key in kwargs:
            raise ConfigError(f"{path}.{key} cannot be set in a recipe (got "
                              f"{shown(kwargs[key])}): {why}")
    params = _parameters(factory)
    hints = type_hints(factory)
    kinds = _kinds_in(hints)
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    resolved: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key not in params and not accepts_any:
            valid = [k for k in params if k not in owned]  # a recipe sets none of them
            raise ConfigError(unknown_key_message(path, key, valid, _describe(factory)))
        if key in kinds and value is not None:
            resolved[key] = resolve_component(value, kinds[key], f"{path}.{key}")
        else:
            value = coerce_number(value, hints.get(key, Any))
            check_type(value, hints.get(key, Any), f"{path}.{key}")
            resolved[key] = value
    for key, param in params.items():
        if key in resolved or key in owned or param.kind in (param.VAR_KEYWORD,
                                                             param.VAR_POSITIONAL):
            continue
        if param.default is param.empty:
            raise ConfigError(f"{path}: missing required key '{key}' of {_describe(factory)}")
        if key in kinds and param.default is not None:
            resolved[key] = resolve_component(param.default, kinds[key], f"{path}.{key}")
        elif is_plain(param.default):
            resolved[key] = to_plain(param.default)
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


def type_hints(factory: Callable[..., Any]) -> dict[str, Any]:
    """The resolved type hints of a component's constructor, ``Annotated`` metadata kept
    (``{}`` when they cannot be resolved)."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        return typing.get_type_hints(target, include_extras=True)
    except (NameError, TypeError):  # unresolvable forward references: check nothing, not guess
        return {}


def component_kinds(factory: Callable[..., Any]) -> dict[str, str]:
    """The parameters of ``factory`` annotated with a registry (``Annotated[T, REGISTRY]``,
    optional or not), each with its registry's kind."""
    return _kinds_in(type_hints(factory))


def _kinds_in(hints: Mapping[str, Any]) -> dict[str, str]:
    """:func:`component_kinds` of the factory whose :func:`type_hints` are ``hints``."""
    kinds = {}
    for key, hint in hints.items():
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


def unknown_key_message(path: str, key: Any, valid: Sequence[str], owner: str = "") -> str:
    """``PATH: unknown key 'KEY'; did you mean ...? valid keys of OWNER: ...``."""
    hint = close_match_hint(key, valid)
    of = f" of {owner}" if owner else ""
    return f"{path}: unknown key {shown(key)}{hint} valid keys{of}: {', '.join(valid)}"
