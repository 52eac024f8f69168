"""The data an evaluation runs on: the recipe's data set at a split, checked, and its transform.

The data section comes from the checkpoint's recipe, replaced or changed by the tools'
``--data``; a split is the recipe's ``dataset`` node with its ``split`` replaced. A split the
data set lacks, splits whose classes differ and labels that are not class indices raise a
one-line :class:`ConfigError` before any feature is extracted.
"""

from __future__ import annotations

import copy
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from torch.utils.data import Dataset

from swav_plugin.evaluation.label_subsets import labels_of
from swav_plugin.host.errors import ConfigError
from swav_plugin.host.recipe import build_component, resolve_component, type_hints
from swav_plugin.host.recipe_file import apply_overrides, read_recipe
from swav_plugin.host.registry import DATASETS
from swav_plugin.zoo.datasets import image_folder


def evaluation_data(
    data: Mapping[str, Any] | None, items: Sequence[str], path: Path
) -> dict[str, Any]:
    """The data section to evaluate on: ``data`` (a checkpoint's), replaced by each YAML file
    in ``items`` (a recipe's ``data`` section, or the section itself) and changed by each
    ``key=value`` (keys within the section, as ``swav-train``'s ``data.KEY=VALUE``). Setting
    another ``dataset.name`` starts that data set's node afresh."""
    section: dict[str, Any] = copy.deepcopy(dict(data or {}))
    for item in items:
        key, sep, _ = item.partition("=")
        if not sep:
            loaded = read_recipe(item)
            section = copy.deepcopy(loaded["data"] if isinstance(loaded.get("data"), dict)
                                    else loaded)
            continue
        before = _dataset_name(section)
        apply_overrides(section, [item])
        after = _dataset_name(section)
        if key == "dataset.name" and after != before:
            section["dataset"] = {"name": after}  # the old data set's settings do not apply
    dataset = section.get("dataset")
    if not dataset:
        raise ConfigError(
            f"'{path}' names no data set to evaluate on; pass --data dataset.name=NAME ... "
            "(e.g. --data dataset.name=image_folder dataset.root=/data/imagenet) or a data YAML"
        )
    section["dataset"] = resolve_component(dataset, "dataset", "--data dataset")
    return section


def _dataset_name(section: Mapping[str, Any]) -> Any:
    dataset = section.get("dataset")
    return dataset.get("name") if isinstance(dataset, dict) else dataset


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
    for split in splits:  # every name before any build: building a large image folder is slow
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

