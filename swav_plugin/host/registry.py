"""Named registries in the detectron2 / timm style.

A registry maps a name to a factory (a class or a function with a typed keyword signature)::

    @BACKBONES.register("resnet18")
    def resnet18(zero_init_residual: bool = False) -> nn.Module: ...

    model = BACKBONES.create("resnet18")

Lookups of unknown names raise a :class:`ConfigError` that lists the registered names and
suggests the closest one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from swav_plugin.host.errors import ConfigError
from swav_plugin.host.quoting import close_match_hint, shown

F = TypeVar("F", bound=Callable[..., Any])


class Registry:
    """A named collection of component factories of one kind (e.g. ``"backbone"``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., Any]] = {}

    def register(self, name: str | None = None) -> Callable[[F], F]:
        """Decorator registering a factory under ``name`` (default: its ``__name__``)."""

        def decorator(factory: F) -> F:
            key = name or factory.__name__
            if key in self._factories:
                first = _origin(self._factories[key])
                raise ConfigError(
                    f"{self.kind} '{key}' is already registered by {first}; "
                    f"pick another name for {_origin(factory)}"
                )
            self._factories[key] = factory
            return factory

        return decorator

    def unregister(self, name: str) -> None:
        """Remove ``name``; used by tests and by plugins that re-register on reload."""
        self.get(name)
        del self._factories[name]

    def get(self, name: str) -> Callable[..., Any]:
        """Return the factory registered as ``name``."""
        if not isinstance(name, str):
            raise ConfigError(f"a {self.kind} name must be a string, got {shown(name)}")
        try:
            return self._factories[name]
        except KeyError:
            raise ConfigError(self._unknown_message(name)) from None

    def create(self, name: str, **kwargs: Any) -> Any:
        """Build the component registered as ``name`` with keyword arguments."""
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._factories)

    def _unknown_message(self, name: str) -> str:
        valid = ", ".join(self.names()) or "(none registered)"
        hint = close_match_hint(name, self.names())
        return f"unknown {self.kind} {shown(name)}{hint} registered {self.kind}s: {valid}"

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._factories)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.names()})"


def _origin(factory: Callable[..., Any]) -> str:
    return f"{factory.__module__}.{getattr(factory, '__qualname__', repr(factory))}"


METHODS = Registry("method")
BACKBONES = Registry("backbone")
HEADS = Registry("head")
LOSSES = Registry("loss")
QUEUES = Registry("queue")
TRANSFORMS = Registry("transform")
COLLATES = Registry("collate")
DATASETS = Registry("dataset")
CALLBACKS = Registry("callback")  # Lightning callbacks a recipe lists under `callbacks`
LOGGERS = Registry("logger")  # experiment trackers a recipe lists under `loggers`

#: Registries by kind. A constructor parameter annotated with one of them,
#: ``Annotated[nn.Module, BACKBONES]``, takes a component node (``{name: ..., **kwargs}`` or
#: just a name) that is built from that registry (see :mod:`.recipe`).
REGISTRIES: dict[str, Registry] = {
    r.kind: r
    for r in (METHODS, BACKBONES, HEADS, LOSSES, QUEUES, TRANSFORMS, COLLATES, DATASETS, CALLBACKS,
              LOGGERS)
}
