"""torch.hub entry points: a backbone of this package, with weights from a file of yours.

    import torch
    backbone = torch.hub.load("PATH/TO/swav-plugin", "resnet50", source="local",
                              weights="runs/swav_imagenet/export/backbone.safetensors")

Every registered backbone is an entry point (``torch.hub.list``). ``weights`` is any file the
eval tools read (swav-export's safetensors or torchvision state dict, a swav-train checkpoint's
backbone, an official SwAV release, a torchvision / timm state dict); without it the backbone
is randomly initialised. The backbone returns pooled features (``num_features`` wide), in
eval mode. Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path as _Path

from torch import nn as _nn

# imported under private names: torch.hub lists every public callable as an entry point
from swav_plugin.evaluation.weights import load_weights as _load_weights
from swav_plugin.host.plugins import load_plugins as _load_plugins
from swav_plugin.host.recipe import build_component as _build
from swav_plugin.host.recipe import resolve_component as _resolve
from swav_plugin.host.registry import BACKBONES as _BACKBONES

dependencies = ["torch", "torchvision"]


def _entry(name: str):
    def entry(weights: str | _Path | None = None) -> _nn.Module:
        if weights is None:
            return _build(_resolve({"name": name}, "backbone", name), "backbone").eval()
        return _load_weights(weights, arch=name)[0].backbone

    entry.__name__ = name
    entry.__doc__ = f"The '{name}' backbone, with the weights in ``weights`` (a file path)."
    return entry


_load_plugins()
for _name in _BACKBONES.names():
    globals()[_name] = _entry(_name)
