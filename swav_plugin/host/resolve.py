"""Resolve a whole recipe: every section checked against what it maps onto, defaults filled.

The saved recipe of a run is the resolved one, so that it states every value the run used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from swav_plugin.host.data import DataModule
from swav_plugin.host.errors import ConfigError
from swav_plugin.host.quoting import shown
from swav_plugin.host.recipe import resolve_component, resolve_kwargs, unknown_key_message
from swav_plugin.host.recipe_file import SECTIONS, apply_overrides, read_recipe
from swav_plugin.host.sections import RUNNER_OWNED_DATA, RunOptions, check_trainer_section


def resolve(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """Check every section against the signatures it maps onto and fill in defaults."""
    unknown = [k for k in recipe if k not in SECTIONS]
    if unknown:
        raise ConfigError(unknown_key_message("recipe", unknown[0], SECTIONS))
    if "method" not in recipe:
        raise ConfigError("recipe has no 'method' section; add e.g. 'method: swav'")
    return {
        "method": resolve_component(recipe["method"], "method", "method"),
        "data": resolve_kwargs(DataModule, _section(recipe, "data"), "data", RUNNER_OWNED_DATA),
        "trainer": check_trainer_section(_section(recipe, "trainer")),
        "run": resolve_kwargs(RunOptions, _section(recipe, "run"), "run"),
        "callbacks": [
            resolve_component(node, "callback", f"callbacks[{i}]")
            for i, node in enumerate(_list_section(recipe, "callbacks"))
        ],
        "loggers": [
            resolve_component(node, "logger", f"loggers[{i}]")
            for i, node in enumerate(_list_section(recipe, "loggers"))
        ],
    }


def _list_section(recipe: Mapping[str, Any], name: str) -> list[Any]:
    value = recipe.get(name) or []
    if not isinstance(value, list):
        raise ConfigError(f"recipe section '{name}' must be a list of {name}, got {shown(value)}")
    return value


def _section(recipe: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = recipe.get(name) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"recipe section '{name}' must be a mapping, got {shown(value)}")
    return value


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Read, override and resolve a recipe: the single entry point used by the runner."""
    return resolve(apply_overrides(read_recipe(path), overrides))
