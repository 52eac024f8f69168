"""The generic host layer: registries, plugin discovery, recipes and the runner.

Nothing here knows about SwAV; methods enter only through the registries, normally from a
plugin's entry point (see :mod:`swav_plugin.host.plugins`).
"""

from swav_plugin.host.build import build
from swav_plugin.host.device_reads import DeviceReadCounter
from swav_plugin.host.errors import ConfigError
from swav_plugin.host.plugins import load_plugins
from swav_plugin.host.recipe import build_component
from swav_plugin.host.registry import (
    BACKBONES,
    CALLBACKS,
    COLLATES,
    DATASETS,
    HEADS,
    LOSSES,
    METHODS,
    QUEUES,
    REGISTRIES,
    TRANSFORMS,
    Registry,
)
from swav_plugin.host.resolve import load_recipe, resolve
from swav_plugin.host.runner import main, run

__all__ = [
    "BACKBONES",
    "CALLBACKS",
    "COLLATES",
    "DATASETS",
    "HEADS",
    "LOSSES",
    "METHODS",
    "QUEUES",
    "REGISTRIES",
    "TRANSFORMS",
    "ConfigError",
    "DeviceReadCounter",
    "Registry",
    "build",
    "build_component",
    "load_plugins",
    "load_recipe",
    "main",
    "resolve",
    "run",
]
