"""The one feature-extraction path shared by the evaluation tools.

:func:`features_of` extracts backbone features, head embeddings or the raw pixels (the
evaluation transform's, flattened: the baseline a representation must beat) of a split, in
mixed precision on a GPU, and caches them on disk (:mod:`swav_plugin.evaluation.cache`), so
that a second tool on the same checkpoint, data set, split and transform does not extract
again.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from swav_plugin.evaluation.cache import FeatureCache, cache_key
from swav_plugin.evaluation.eval_data import dataset_from_recipe, eval_transform_node
from swav_plugin.evaluation.pretrained import Embedder, Pretrained, raw_pixels
from swav_plugin.host.dataset_views import TransformedDataset
from swav_plugin.host.errors import ConfigError, storage_problem
from swav_plugin.host.recipe import build_component

#: The most memory the raw-pixel features of one split may take (float32).
PIXEL_FEATURES_LIMIT = 4 * 2**30


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
    loader = DataLoader(  # its own generator: extraction leaves the global ones untouched
        TransformedDataset(dataset, transform), batch_size=batch_size, num_workers=num_workers,
        generator=torch.Generator(),
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
    output: Literal["backbone", "embeddings", "pixels"] = "backbone",
    cache_dir: str | Path | None = None,
    batch_size: int = 256,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    dataset: Dataset | None = None,
) -> tuple[Tensor, Tensor]:
    """Backbone features, head embeddings or raw pixels of a recipe's split, through the
    on-disk cache.

    ``cache_dir=None`` extracts without caching (as does a cache that cannot be written: a
    warning says why); ``dataset`` is the split's data set when the
    caller has built it already (:func:`labelled_splits`). Raw pixels depend on the recipe's
    data and transform only, not on the weights; a split whose pixels would take more than
    :data:`PIXEL_FEATURES_LIMIT` is refused before anything is read.
    """
    recipe = pretrained.recipe
    if dataset is None:
        dataset = dataset_from_recipe(recipe, split)
    transform_node = eval_transform_node(recipe)
    method = pretrained.method
    init = pretrained.init
    if output == "pixels":
        model: nn.Module = raw_pixels(recipe)
        size = len(dataset) * model.num_features * 4
        if size > PIXEL_FEATURES_LIMIT:
            raise ConfigError(
                f"the raw pixels of split '{split}' would take {size / 2**30:.1f} GiB as "
                f"features ({len(dataset)} images x {model.num_features} values); leave the "
                "pixel baseline out (no --compare-pixels / --baselines) for a data set this large"
            )
        init = "pixels"
    elif output == "embeddings":
        if not hasattr(method, "head"):
            raise ConfigError(f"'{pretrained.checkpoint}' holds no head to embed with")
        model = Embedder(method.backbone, method.head)
    else:
        model = method.backbone
    desc = f"{output} {split} ({init})"

    def extract() -> tuple[Tensor, Tensor]:
        transform = build_component(transform_node, "transform")
        return extract_features(model, dataset, transform, batch_size, num_workers, device, desc)

    if cache_dir is None:
        return extract()
    weights = None if output == "pixels" else pretrained.digest()
    key = cache_key({"checkpoint": weights, "init": init,
                     "dataset": recipe["data"]["dataset"], "split": split,
                     "transform": transform_node, "output": output, "samples": len(dataset)})
    cache = FeatureCache(cache_dir)
    cached = cache.load(key)
    if cached is not None:
        return cached
    features, labels = extract()
    try:
        cache.save(key, features, labels)
    except OSError as exc:  # the features are in memory: the evaluation need not be lost
        warnings.warn(f"features not cached: {storage_problem(exc, cache.path(key))}; the "
                      "evaluation goes on without the cache", stacklevel=2)
    return features, labels
