"""Weights of any origin for the evaluation tools, recognised by their keys, not their name.

- a swav-train checkpoint: the recipe inside rebuilds the method
  (:func:`~swav_plugin.evaluation.pretrained.load_pretrained`);
- swav-export's ``backbone.safetensors``: its metadata names the backbone;
- a bare state dict (``torch.save``, read with ``weights_only=True``, or safetensors), also
  when held under a ``state_dict`` or ``model`` key:

  - an official SwAV release (``swav_800ep_pretrain.pth.tar``, ``swav_RN50w2_400ep_...``):
    every key prefixed ``module.``, the backbone in torchvision's ResNet layout beside the
    ``projection_head.*`` and ``prototypes.*`` of facebookresearch/swav ``src/resnet50.py``,
    which become this package's SwAV head (``eval/prototypes.py`` can inspect them);
  - a torchvision or timm ResNet (the classifier, ``fc.*``, is dropped);
  - the backbone of this package (``backbone.*`` keys, from a method's state dict).

A file without a recipe names no architecture: ``--arch`` gives it (a registered backbone).
Weights that do not fit it are refused in one line naming the first missing, unexpected or
mismatched key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor, nn

from swav_plugin.host.checkpoint_files import is_safetensors, read_checkpoint
from swav_plugin.host.errors import ConfigError
from swav_plugin.host.plugins import load_plugins
from swav_plugin.host.recipe import build_component, resolve_component
from swav_plugin.host.registry import BACKBONES
from swav_plugin.host.rng import seeded
from swav_plugin.swav.head import SwAVHead

#: Keys under which training scripts of other frameworks keep the state dict.
_WRAPPERS = ("state_dict", "model")
_CLASSIFIERS = ("fc.weight", "fc.bias")
_OFFICIAL_HEAD = ("projection_head.", "prototypes.")


class Weights(nn.Module):
    """A backbone and, when its file has one, SwAV's head, as the eval tools use a method."""

    def __init__(self, backbone: nn.Module, head: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        if head is not None:
            self.head = head


def read_tensors(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """What a weights file holds (tensors or a checkpoint mapping) and its metadata
    (safetensors only), read without running pickled code."""
    if path.is_file() and is_safetensors(path):  # else the reader names what is wrong
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
        return load_file(str(path)), metadata
    return read_checkpoint(path), {}


def unwrap(content: Mapping[str, Any]) -> dict[str, Tensor]:
    """The state dict in ``content``: itself, or the one held under a wrapper key."""
    for key in _WRAPPERS:
        inner = content.get(key)
        if isinstance(inner, Mapping) and inner and all(
            isinstance(v, Tensor) for v in inner.values()
        ):
            return dict(inner)
    tensors = {k: v for k, v in content.items() if isinstance(v, Tensor)}
    if not tensors:
        keys = ", ".join(map(str, list(content)[:10])) or "none"
        raise ConfigError(f"holds no tensors (keys: {keys}); pass a checkpoint or a state dict")
    return tensors


def split_official(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """An official SwAV state dict as (backbone, head) in this package's key layout.

    ``module.`` is removed (DistributedDataParallel's prefix); ``projection_head.*`` becomes
    :class:`~swav_plugin.swav.head.SwAVHead`'s ``projection.*`` and ``prototypes.weight``
    (or ``prototypes.prototypes{i}.weight`` of several sets) its ``prototypes.{i}.weight``.
    """
    backbone, head = {}, {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.startswith("projection_head."):
            head["projection." + key.removeprefix("projection_head.")] = value
        elif key == "prototypes.weight":
            head["prototypes.0.weight"] = value
        elif key.startswith("prototypes.prototypes"):
            index = key.removeprefix("prototypes.prototypes").split(".")[0]
            head[f"prototypes.{index}.weight"] = value
        else:
            backbone[key] = value
    return backbone, head


def official_head(head: Mapping[str, Tensor]) -> SwAVHead:
    """The SwAV head whose shapes ``head`` (keys of :func:`split_official`) has."""
    if "projection.0.weight" in head:
        hidden, input_dim = head["projection.0.weight"].shape
        output_dim = head["projection.3.weight"].shape[0]
    else:
        output_dim, input_dim = head["projection.weight"].shape
        hidden = 0
    counts = [head[f"prototypes.{i}.weight"].shape[0]
              for i in range(sum(k.startswith("prototypes.") for k in head))]
    return SwAVHead(input_dim, hidden, output_dim, counts or 1, freeze_prototypes_iters=0)


def _shape(value: Any) -> str:
    return str(tuple(value.shape)) if isinstance(value, Tensor) else type(value).__name__


def misfit(expected: Mapping[str, Tensor], found: Mapping[str, Any]) -> str | None:
    """How the state dict ``found`` fails to fit ``expected`` (a module's), counted in one
    phrase naming the first bad key (a strict ``load_state_dict`` lists every key on a line of
    its own); ``None`` when it fits."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    # an empty buffer is one a module sizes when it loads (the SwAV queue): any shape fits it
    mismatched = [k for k in expected if k in found and expected[k].numel()
                  and _shape(found[k]) != _shape(expected[k])]
    if not (missing or unexpected or mismatched):
        return None
    first = (f"'{mismatched[0]}' is {_shape(found[mismatched[0]])} in the file, "
             f"{_shape(expected[mismatched[0]])} in the model" if mismatched else
             f"'{missing[0]}' is missing" if missing else f"'{unexpected[0]}' is unexpected")
    return (f"{len(missing)} missing, {len(unexpected)} unexpected and {len(mismatched)} "
            f"mismatched keys (e.g. {first})")


def load_into(module: nn.Module, state: Mapping[str, Tensor], what: str) -> None:
    """``module.load_state_dict(state)``, refused in one line naming the first bad key."""
    problem = misfit(module.state_dict(), state)
    if problem:
        raise ConfigError(f"the weights do not fit {what}: {problem}; check --arch")
    module.load_state_dict(state)


def backbone_node(arch: str | None, metadata: Mapping[str, str], path: Path) -> dict[str, Any]:
    """The resolved backbone node: ``--arch``, else the one the file's metadata names."""
    load_plugins()
    if arch is None and "backbone" in metadata:
        node = json.loads(metadata["backbone"])
    elif arch is None:
        raise ConfigError(
            f"'{path}' carries no recipe naming its architecture; pass --arch NAME (registered "
            f"backbones: {', '.join(BACKBONES.names())})"
        )
    else:
        node = {"name": arch}
    return resolve_component(node, "backbone", "--arch")


def backbone_and_head(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """A state dict as (backbone, SwAV head) in this package's key layout, whichever layout
    it has: official (``module.``, ``projection_head``, ``prototypes``), a method's
    (``backbone.*``, ``head.*``) or a bare backbone; a classifier (``fc.*``) is dropped."""
    keys = list(state)
    if any(k.startswith("module.") or k.startswith(_OFFICIAL_HEAD) for k in keys):
        backbone, head = split_official(state)
    elif any(k.startswith("backbone.") for k in keys):
        backbone = {k.removeprefix("backbone."): v for k, v in state.items()
                    if k.startswith("backbone.")}
        head = {k.removeprefix("head."): v for k, v in state.items() if k.startswith("head.")}
    else:
        backbone, head = dict(state), {}
    return {k: v for k, v in backbone.items() if k not in _CLASSIFIERS}, head


def weights_from(
    content: Mapping[str, Any],
    metadata: Mapping[str, str],
    path: Path,
    arch: str | None = None,
    random_init: bool = False,
    seed: int = 0,
) -> tuple[Weights, dict[str, Any]]:
    """The backbone (and SwAV head) in a file's ``content`` (:func:`read_tensors`), and the
    method node that rebuilds it: ``{"name": "weights", "backbone": ...}``."""
    try:
        state = unwrap(content)
    except ConfigError as exc:
        raise ConfigError(f"'{path}' {exc}") from None
    backbone_state, head_state = backbone_and_head(state)
    node = backbone_node(arch, metadata, path)
    with seeded(seed):  # the random initialisation of a baseline, repeatable
        backbone = build_component(node, "backbone")
    head = official_head(head_state) if head_state else None
    if not random_init:
        load_into(backbone, backbone_state, f"backbone '{node['name']}' ('{path}')")
        if head is not None:
            load_into(head, head_state, f"the SwAV head of '{path}'")
    return Weights(backbone, head).eval(), {"name": "weights", "backbone": node}


def load_weights(
    path: str | Path, arch: str | None = None, random_init: bool = False, seed: int = 0
) -> tuple[Weights, dict[str, Any]]:
    """:func:`weights_from` the file in ``path``."""
    path = Path(path)
    return weights_from(*read_tensors(path), path, arch, random_init, seed)
