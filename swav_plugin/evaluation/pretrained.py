"""The weights an evaluation runs on, rebuilt from any file the eval tools read.

A checkpoint written by the runner carries its resolved recipe, so the method is rebuilt from
the same registries and its weights loaded with ``torch.load(weights_only=True)`` (no pickled
code can run); other files (swav-export's safetensors, official releases, torchvision / timm
state dicts) are read by :mod:`swav_plugin.evaluation.weights`. A file of another method or
format, or weights that do not fit the recipe, raise a one-line :class:`ConfigError` before any
feature is extracted or file written.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from swav_plugin.evaluation.eval_data import eval_transform_node, evaluation_data
from swav_plugin.evaluation.weights import misfit, read_tensors, weights_from
from swav_plugin.host.atomic import file_digest
from swav_plugin.host.checkpoint_files import NotACheckpoint
from swav_plugin.host.errors import ConfigError
from swav_plugin.host.plugins import load_plugins
from swav_plugin.host.recipe import build_component
from swav_plugin.host.rng import seeded
from swav_plugin.host.training_checkpoint import foreign_content


@dataclass
class Pretrained:
    """A method rebuilt from a checkpoint, with the recipe it was trained with."""

    method: nn.Module
    recipe: dict[str, Any]
    checkpoint: Path
    init: str  # "trained", or "random:SEED" for the random-initialisation baseline
    _digest: str = field(default="", repr=False)

    def digest(self) -> str:
        """SHA-256 of the checkpoint file (computed once)."""
        if not self._digest:
            self._digest = file_digest(self.checkpoint)
        return self._digest


class Embedder(nn.Module):
    """Backbone → head projection: the unit-norm embeddings that meet the prototypes."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.backbone(images))[0]


class RawPixels(nn.Module):
    """The images themselves, flattened: the baseline a learned representation must beat."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, images: Tensor) -> Tensor:
        return images.flatten(1)


def raw_pixels(recipe: dict[str, Any]) -> RawPixels:
    """The raw-pixel "backbone" of a recipe: RGB at the evaluation transform's size."""
    size = eval_transform_node(recipe)["size"]
    return RawPixels(3 * size * size)


def backbone_name(method_node: Mapping[str, Any]) -> Any:
    """The backbone a method node names (its ``backbone``: a name or a node)."""
    backbone = method_node.get("backbone")
    return backbone.get("name") if isinstance(backbone, dict) else backbone


def rebuild(path: Path, checkpoint: dict[str, Any], random_init: bool, seed: int) -> nn.Module:
    """The method of a swav-train ``checkpoint`` (read from ``path``), from its recipe, with
    its weights unless ``random_init`` (then initialised from ``seed``)."""
    node = checkpoint["recipe"]["method"]
    load_plugins()
    try:
        with seeded(seed):  # the random initialisation of a baseline, repeatable
            method = build_component(node, "method")
    except ConfigError as exc:
        raise ConfigError(
            f"checkpoint '{path}' was trained with method '{node['name']}', which cannot be "
            f"rebuilt here ({exc}); the eval tools need a swav-train checkpoint of a registered "
            "method (install the plugin that provides it)"
        ) from None
    if not isinstance(getattr(method, "backbone", None), nn.Module):
        raise ConfigError(f"checkpoint '{path}': method '{node['name']}' has no backbone to "
                          "evaluate; the eval tools need a method with a 'backbone'")
    if not random_init:
        problem = misfit(method.state_dict(), checkpoint["state_dict"])
        if problem:
            raise ConfigError(
                f"checkpoint '{path}': its weights do not fit the architecture its recipe names "
                f"(method '{node['name']}', backbone '{backbone_name(node)}'): {problem}; the "
                "recipe inside the checkpoint was edited or the weights come from another "
                "model: use the checkpoint as swav-train wrote it"
            )
        method.load_state_dict(checkpoint["state_dict"])
    return method.eval()


#: What the eval tools read, said when a file is none of it.
READABLE = ("the eval tools read swav-train checkpoints, swav-export's safetensors, the official "
            "SwAV releases and torchvision / timm state dicts (naming the backbone with --arch)")


def load_pretrained(
    path: str | Path,
    arch: str | None = None,
    data: Sequence[str] = (),
    random_init: bool = False,
    seed: int = 0,
) -> Pretrained:
    """The weights in ``path``, of any origin (:mod:`.weights`), with the recipe that
    evaluates them: a swav-train checkpoint's own, or for other files ``{"method": {"name":
    "weights", "backbone": ...}}``; its data section then set by ``data``
    (:func:`evaluation_data`)."""
    path = Path(path)
    try:
        content, metadata = read_tensors(path)
    except NotACheckpoint as exc:
        raise ConfigError(f"{exc.problem}; {READABLE}") from None
    if foreign_content(content):
        method, node = weights_from(content, metadata, path, arch, random_init, seed)
        recipe = {"method": node, "data": {}}
    else:
        method = rebuild(path, content, random_init, seed)
        recipe = copy.deepcopy(content["recipe"])
        name = backbone_name(recipe["method"])
        if arch is not None and arch != name:
            raise ConfigError(f"--arch {arch}: '{path}' is a swav-train checkpoint whose recipe "
                              f"names backbone '{name}'; leave --arch out")
    recipe["data"] = evaluation_data(recipe.get("data"), data, path)
    return Pretrained(method, recipe, path, f"random:{seed}" if random_init else "trained")
