"""The one feature-extraction path shared by the evaluation tools.

A checkpoint written by the runner carries its resolved recipe, so the method is rebuilt from
the same registries and its weights loaded with ``torch.load(weights_only=True)`` (no pickled
code can run). Data sets come from the recipe's ``dataset`` node with the split replaced.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from swav_plugin.host.data import TransformedDataset
from swav_plugin.host.errors import ConfigError
from swav_plugin.host.plugins import load_plugins
from swav_plugin.host.recipe import build_component, resolve_component


@dataclass
class Pretrained:
    """A method rebuilt from a checkpoint, with the recipe it was trained with."""

    method: nn.Module
    recipe: dict[str, Any]


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
    return Pretrained(method.eval(), recipe)


def dataset_from_recipe(recipe: dict[str, Any], split: str) -> Dataset:
    """The recipe's data set with its ``split`` replaced."""
    node = copy.deepcopy(recipe["data"]["dataset"])
    node["split"] = split
    return build_component(resolve_component(node, "dataset", "dataset"), "dataset")


def eval_transform_from_recipe(recipe: dict[str, Any]) -> Any:
    """Centre-crop transform at the recipe's largest crop size with its normalisation."""
    train = recipe["data"].get("transform") or {}
    crops = train.get("crops") or [{"size": 224}]
    size = max(int(c["size"]) for c in crops)
    node = {"name": "center_crop", "size": size, "crop_fraction": 0.875 if size >= 128 else 1.0}
    for key in ("mean", "std"):
        if key in train:
            node[key] = train[key]
    return build_component(resolve_component(node, "transform", "transform"), "transform")


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
    model = model.to(device).eval()
    features, labels = [], []
    for images, targets in tqdm(loader, desc=desc, leave=False):
        features.append(model(images.to(device)).float().cpu())
        labels.append(torch.as_tensor(targets))
    return torch.cat(features), torch.cat(labels)
