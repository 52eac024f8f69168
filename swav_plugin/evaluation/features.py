"""The one feature-extraction path shared by the evaluation tools.

A checkpoint written by the runner carries its resolved recipe, so the method is rebuilt from
the same registries and its weights loaded with ``torch.load(weights_only=True)`` (no pickled
code can run). Data sets come from the recipe's ``dataset`` node with the split replaced.
:func:`features_of` extracts backbone features, head embeddings or the raw pixels (the
evaluation transform's, flattened: the baseline a representation must beat; mixed precision on
a GPU) and caches them on disk (:mod:`swav_plugin.evaluation.cache`), so that a second tool on the
same checkpoint, data set, split and transform does not extract again.

Bad inputs (a file of another method or format, weights that do not fit the recipe, a split
the data set lacks, splits whose classes differ, labels that are not class indices) raise a
one-line :class:`ConfigError` before any feature is extracted or file written.
"""

from __future__ import annotations

import copy
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
import torch
import yaml
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from swav_plugin.evaluation.cache import FeatureCache, cache_key
from swav_plugin.evaluation.label_subsets import labels_of
from swav_plugin.evaluation.weights import read_tensors, weights_from
from swav_plugin.host.atomic import file_digest
from swav_plugin.host.checkpoint_files import NotACheckpoint
from swav_plugin.host.dataset_views import TransformedDataset
from swav_plugin.host.errors import ConfigError
from swav_plugin.host.plugins import load_plugins
from swav_plugin.host.recipe import (
    apply_overrides,
    build_component,
    read_recipe,
    resolve_component,
    type_hints,
)
from swav_plugin.host.registry import DATASETS
from swav_plugin.host.training_checkpoint import foreign_content
from swav_plugin.zoo.datasets import image_folder


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


#: The most memory the raw-pixel features of one split may take (float32).
PIXEL_FEATURES_LIMIT = 4 * 2**30


def raw_pixels(recipe: dict[str, Any]) -> RawPixels:
    """The raw-pixel "backbone" of a recipe: RGB at the evaluation transform's size."""
    size = eval_transform_node(recipe)["size"]
    return RawPixels(3 * size * size)


def rebuild(path: Path, checkpoint: dict[str, Any], random_init: bool, seed: int) -> Pretrained:
    """The method of a swav-train ``checkpoint`` (read from ``path``), from its recipe."""
    node = checkpoint["recipe"]["method"]
    load_plugins()
    pl.seed_everything(seed, verbose=False)
    try:
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
        check_weights_fit(path, node, method.state_dict(), checkpoint["state_dict"])
        method.load_state_dict(checkpoint["state_dict"])
    init = f"random:{seed}" if random_init else "trained"
    return Pretrained(method.eval(), copy.deepcopy(checkpoint["recipe"]), path, init)


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
        init = f"random:{seed}" if random_init else "trained"
        pretrained = Pretrained(method, {"method": node, "data": {}}, path, init)
    else:
        pretrained = rebuild(path, content, random_init, seed)
        backbone = pretrained.recipe["method"].get("backbone")
        name = backbone.get("name") if isinstance(backbone, dict) else backbone
        if arch is not None and arch != name:
            raise ConfigError(f"--arch {arch}: '{path}' is a swav-train checkpoint whose recipe "
                              f"names backbone '{name}'; leave --arch out")
    pretrained.recipe["data"] = evaluation_data(pretrained.recipe.get("data"), data, path)
    return pretrained


def evaluation_data(
    data: Mapping[str, Any] | None, items: Sequence[str], path: Path
) -> dict[str, Any]:
    """The data section to evaluate on: ``data`` (a checkpoint's), replaced by each YAML file
    in ``items`` (a recipe's ``data`` section, or the section itself) and changed by each
    ``key=value`` (keys within the section, as ``swav-train``'s ``data.KEY=VALUE``). Setting
    another ``dataset.name`` starts that data set's node afresh."""
    section: dict[str, Any] = copy.deepcopy(dict(data or {}))
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            loaded = read_recipe(item)
            section = copy.deepcopy(loaded["data"] if isinstance(loaded.get("data"), dict)
                                    else loaded)
            continue
        current = section.get("dataset")
        current = current.get("name") if isinstance(current, dict) else current
        if key == "dataset.name" and yaml.safe_load(value) != current:
            section["dataset"] = {}
        apply_overrides(section, [item])
    dataset = section.get("dataset")
    if not dataset:
        raise ConfigError(
            f"'{path}' names no data set to evaluate on; pass --data dataset.name=NAME ... "
            "(e.g. --data dataset.name=image_folder dataset.root=/data/imagenet) or a data YAML"
        )
    section["dataset"] = resolve_component(dataset, "dataset", "--data dataset")
    return section


def _shape(value: Any) -> str:
    return str(tuple(value.shape)) if isinstance(value, Tensor) else type(value).__name__


def check_weights_fit(
    path: Path, node: dict[str, Any], expected: Mapping[str, Tensor], found: Mapping[str, Any]
) -> None:
    """Refuse weights that do not fit the method ``node`` builds, counted in one line (a strict
    ``load_state_dict`` lists every key on a line of its own)."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    # an empty buffer is one a module sizes when it loads (the SwAV queue): any shape fits it
    mismatched = [k for k in expected if k in found and expected[k].numel()
                  and _shape(found[k]) != _shape(expected[k])]
    if not (missing or unexpected or mismatched):
        return
    examples = ([f"'{k}' is {_shape(found[k])} in the file, {_shape(expected[k])} in the model"
                 for k in mismatched[:1]]
                + [f"'{k}' is missing" for k in missing[:1]]
                + [f"'{k}' is unexpected" for k in unexpected[:1]])
    backbone = node.get("backbone")
    backbone = backbone.get("name") if isinstance(backbone, dict) else backbone
    raise ConfigError(
        f"checkpoint '{path}': its weights do not fit the architecture its recipe names (method "
        f"'{node['name']}', backbone '{backbone}'): {len(missing)} missing, "
        f"{len(unexpected)} unexpected and {len(mismatched)} mismatched keys (e.g. "
        f"{examples[0]}); the recipe inside the checkpoint was edited or the weights come from "
        "another model: use the checkpoint as swav-train wrote it"
    )


def dataset_from_recipe(recipe: dict[str, Any], split: str) -> Dataset:
    """The recipe's data set with its ``split`` replaced."""
    check_split(recipe, split)
    node = copy.deepcopy(recipe["data"]["dataset"])
    node["split"] = split
    return build_component(resolve_component(node, "dataset", "dataset"), "dataset")


def _where(node: Mapping[str, Any]) -> str:
    root = node.get("root")
    return f"data set '{node['name']}'" + (f" at '{root}'" if root else "")


def _names(names: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit]) or "none"
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def check_split(recipe: dict[str, Any], split: str) -> None:
    """Refuse a split the recipe's data set does not have, listing the ones it has.

    The splits are the data set's ``Literal`` choices, or for an image folder (given a split
    and an existing root) the folders under its root; otherwise the data set reports itself.
    """
    node = recipe["data"]["dataset"]
    factory = DATASETS.get(node["name"])
    hint = type_hints(factory).get("split")
    root = node.get("root")
    if typing.get_origin(hint) is Literal:
        splits = [str(s) for s in typing.get_args(hint)]
    elif factory is image_folder and split and root and Path(root).is_dir():
        splits = sorted(p.name for p in Path(root).iterdir() if p.is_dir())
    else:
        return
    if split not in splits:
        raise ConfigError(f"split '{split}' does not exist in {_where(node)}; "
                          f"valid splits: {_names(splits)}")


def labelled_splits(recipe: dict[str, Any], splits: Sequence[str]) -> list[Dataset]:
    """The recipe's data set at each of ``splits``, checked before anything is extracted.

    Every split must exist, its labels must index its classes (no unlabelled -1), and all the
    splits must list the same classes: label ``i`` then means one class in each.
    """
    for split in splits:  # every name before any build: a large image folder takes minutes
        check_split(recipe, split)
    datasets = [dataset_from_recipe(recipe, split) for split in splits]
    where = _where(recipe["data"]["dataset"])
    for split, dataset in zip(splits, datasets, strict=True):
        _check_labels(dataset, split, where)
    first = getattr(datasets[0], "classes", None)
    for split, dataset in zip(splits[1:], datasets[1:], strict=True):
        classes = getattr(dataset, "classes", None)
        if first is None or classes is None or list(classes) == list(first):
            continue
        extra = ([(c, splits[0]) for c in first if c not in classes]
                 + [(c, split) for c in classes if c not in first])
        detail = f"'{extra[0][0]}' only in '{extra[0][1]}'" if extra else "in another order"
        raise ConfigError(
            f"splits '{splits[0]}' and '{split}' of {where} have different classes ({len(first)} "
            f"and {len(classes)}; {detail}), so a label would mean different classes in each; "
            "give every split the same class folders"
        )
    return datasets


def _check_labels(dataset: Dataset, split: str, where: str) -> None:
    """Refuse labels that are not class indices, where the data set lists them (``targets`` of
    an image folder, ``labels`` of an in-memory one): STL-10's unlabelled images carry -1."""
    labels = labels_of(dataset)
    if labels is None:
        return
    classes = getattr(dataset, "classes", None)
    bad = labels < 0
    if classes is not None:
        bad |= labels >= len(classes)
    if bad.any():
        valid = f"0..{len(classes) - 1}" if classes is not None else "0 or more"
        raise ConfigError(
            f"split '{split}' of {where}: {int(bad.sum())} of {len(labels)} labels are not class "
            f"indices {valid} (e.g. {int(labels[bad][0])}; unlabelled images carry -1); "
            "evaluate on a labelled split"
        )


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

    ``cache_dir=None`` extracts without caching; ``dataset`` is the split's data set when the
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
    cache.save(key, features, labels)
    return features, labels
