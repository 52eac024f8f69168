"""The one feature-extraction path shared by the evaluation tools.

A checkpoint written by the runner carries its resolved recipe, so the method is rebuilt from
the same registries and its weights loaded with ``torch.load(weights_only=True)`` (no pickled
code can run). Data sets come from the recipe's ``dataset`` node with the split replaced.
:func:`features_of` extracts backbone features or head embeddings (mixed precision on a GPU)
and caches them on disk (:mod:`swav_plugin.evaluation.cache`), so that a second tool on the
same checkpoint, data set, split and transform does not extract again.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from swav_plugin.evaluation.cache import FeatureCache, cache_key, file_digest
from swav_plugin.host.data import TransformedDataset
from swav_plugin.host.errors import ConfigError
from swav_plugin.host.plugins import load_plugins
from swav_plugin.host.recipe import build_component, resolve_component


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


def load_checkpoint(path: str | Path, random_init: bool = False, seed: int = 0) -> Pretrained:
    """Rebuild the method of a runner checkpoint; ``random_init`` skips loading its weights."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint '{path}' does not exist; train first or fix the path")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"checkpoint '{path}' cannot be loaded safely: {exc}") from None
    recipe = checkpoint.get("recipe") if isinstance(checkpoint, dict) else None
    if recipe is None or "state_dict" not in checkpoint:
        raise ConfigError(f"'{path}' is not a swav-train checkpoint (no recipe / state_dict)")
    load_plugins()
    pl.seed_everything(seed, verbose=False)
    method = build_component(recipe["method"], "method")
    if not random_init:
        method.load_state_dict(checkpoint["state_dict"])
    init = f"random:{seed}" if random_init else "trained"
    return Pretrained(method.eval(), recipe, path, init)


def dataset_from_recipe(recipe: dict[str, Any], split: str) -> Dataset:
    """The recipe's data set with its ``split`` replaced."""
    node = copy.deepcopy(recipe["data"]["dataset"])
    node["split"] = split
    return build_component(resolve_component(node, "dataset", "dataset"), "dataset")


def eval_transform_node(recipe: dict[str, Any]) -> dict[str, Any]:
    """The resolved ``center_crop`` node for a recipe: its largest crop size, its normalisation."""
    train = recipe["data"].get("transform") or {}
    crops = train.get("crops") or [{"size": 224}]
    size = max(int(c["size"]) for c in crops)
    node = {"name": "center_crop", "size": size, "crop_fraction": 0.875 if size >= 128 else 1.0}
    for key in ("mean", "std"):
        if key in train:
            node[key] = train[key]
    return resolve_component(node, "transform", "transform")


def eval_transform_from_recipe(recipe: dict[str, Any]) -> Any:
    """Centre-crop transform at the recipe's largest crop size with its normalisation."""
    return build_component(eval_transform_node(recipe), "transform")


@torch.no_grad()
def extract_features(
    model: nn.Module,
    dataset: Dataset,
    transform: Any,
    batch_size: int = 256,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    desc: str = "features",
) -> tuple[Tensor, Tensor]:
    """Run ``model`` over ``dataset`` in eval mode; return float32 features and labels."""
    loader = DataLoader(
        TransformedDataset(dataset, transform), batch_size=batch_size, num_workers=num_workers
    )
    device = torch.device(device)
    model = model.to(device).eval()
    features, labels = [], []
    # bf16 autocast on a GPU: the backbone's cost halves, the features are returned in fp32
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        for images, targets in tqdm(loader, desc=desc, leave=False):
            features.append(model(images.to(device, non_blocking=True)).float().cpu())
            labels.append(torch.as_tensor(targets))
    return torch.cat(features), torch.cat(labels)


def features_of(
    pretrained: Pretrained,
    split: str,
    output: Literal["backbone", "embeddings"] = "backbone",
    cache_dir: str | Path | None = None,
    batch_size: int = 256,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
) -> tuple[Tensor, Tensor]:
    """Backbone features or head embeddings of a recipe's split, through the on-disk cache.

    ``cache_dir=None`` extracts without caching.
    """
    recipe = pretrained.recipe
    dataset = dataset_from_recipe(recipe, split)
    transform_node = eval_transform_node(recipe)
    method = pretrained.method
    if output == "embeddings":
        if not hasattr(method, "head"):
            raise ConfigError(f"'{pretrained.checkpoint}' holds no head to embed with")
        model: nn.Module = Embedder(method.backbone, method.head)
    else:
        model = method.backbone
    desc = f"{output} {split} ({pretrained.init})"

    def extract() -> tuple[Tensor, Tensor]:
        transform = build_component(transform_node, "transform")
        return extract_features(model, dataset, transform, batch_size, num_workers, device, desc)

    if cache_dir is None:
        return extract()
    key = cache_key({"checkpoint": pretrained.digest(), "init": pretrained.init,
                     "dataset": recipe["data"]["dataset"], "split": split,
                     "transform": transform_node, "output": output, "samples": len(dataset)})
    cache = FeatureCache(cache_dir)
    cached = cache.load(key)
    if cached is not None:
        return cached
    features, labels = extract()
    cache.save(key, features, labels)
    return features, labels
