"""Plugin discovery through the ``swav_plugin.plugins`` entry point group.

A plugin is any installed distribution that declares, in its ``pyproject.toml``::

    [project.entry-points."swav_plugin.plugins"]
    my_method = "my_package.my_module"

Loading the entry point imports the module, whose ``@REGISTRY.register(...)`` decorators add
its components. If the entry point names a callable instead, it is called with no arguments.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from swav_plugin.host.errors import ConfigError

GROUP = "swav_plugin.plugins"
_loaded: set[str] = set()


def load_plugins() -> list[str]:
    """Import every plugin of the entry point group once; return the names loaded so far."""
    for ep in entry_points(group=GROUP):
        if ep.name in _loaded:
            continue
        try:
            target = ep.load()
        except ImportError as exc:
            raise ConfigError(
                f"plugin '{ep.name}' ({ep.value}) failed to import: {exc}; "
                "install its dependencies or uninstall the plugin"
            ) from exc
        if callable(target):
            target()
        _loaded.add(ep.name)
    return sorted(_loaded)
