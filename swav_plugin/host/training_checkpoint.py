"""Whether a loaded file is a swav-train checkpoint, and what it holds when it is not.

The evaluation tools and ``swav-export`` read weights of many origins; this is the test that
tells this package's training checkpoints (a state dict and the recipe that rebuilds its
model) from everything else, in words a user can act on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from swav_plugin.host.checkpoint_files import NotACheckpoint, read_checkpoint


def read_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by swav-train (see :func:`read_checkpoint`): a state dict and the
    recipe that rebuilds its model. :class:`NotACheckpoint` says what any other file holds."""
    checkpoint = read_checkpoint(path)
    what = foreign_content(checkpoint)
    if what:
        raise NotACheckpoint(f"'{path}' is {what}, not a swav-train checkpoint")
    return checkpoint


def _entries(state: dict[str, Any]) -> str:
    return f"{len(state)} entries, e.g. '{next(iter(state))}'" if state else "no entries"


def _named(node: Any) -> bool:
    return isinstance(node, dict) and "name" in node


def foreign_content(checkpoint: dict[str, Any]) -> str:
    """What a loaded file holds when it is not a swav-train checkpoint; '' when it is one."""
    state, recipe = checkpoint.get("state_dict"), checkpoint.get("recipe")
    if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return f"a bare state dict ({_entries(checkpoint)})"
    if not isinstance(state, dict):
        keys = ", ".join(map(str, list(checkpoint)[:10])) or "none"
        return f"a mapping without a state_dict (keys: {keys})"
    if recipe is None:
        return f"a Lightning checkpoint without a recipe (state_dict of {_entries(state)})"
    data = recipe.get("data") if isinstance(recipe, dict) else None
    if not (isinstance(data, dict) and _named(data.get("dataset"))
            and _named(recipe.get("method"))):
        return "a checkpoint whose recipe lacks a named 'method' or 'data.dataset'"
    return ""
