"""The labelled images of a training split for semi-supervised evaluation.

ImageNet's 1 % and 10 % subsets are the lists SimCLR published (``imagenet_subsets/1percent.txt``
and ``10percent.txt``), which the official SwAV ``eval_semisup.py`` reads: one file name per
line, e.g. ``n01440764_10026.JPEG``, whose class folder is the part before the first ``_``.
They are given by path (:func:`subset_by_names`; nothing is downloaded). A line may also be
``CLASS/FILE`` for a folder whose file names do not start with their class. Other data sets take
a seeded class-balanced fraction (:func:`balanced_subset`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from swav_plugin.host.errors import ConfigError


def labels_of(dataset: Dataset) -> Tensor | None:
    """The labels a data set lists (``targets`` of an image folder, ``labels`` of an in-memory
    one), or None when it lists none."""
    labels = getattr(dataset, "targets", None)
    labels = getattr(dataset, "labels", None) if labels is None else labels
    if labels is None:
        return None
    return torch.from_numpy(np.array(labels, dtype=np.int64))  # a copy: memmaps are read-only


def read_subset_file(path: str | Path) -> list[str]:
    """The image names listed in ``path``, one per line (blank lines ignored)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"subset file '{path}' does not exist; give the path of a list such as "
                          "SimCLR's imagenet_subsets/10percent.txt")
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise ConfigError(f"subset file '{path}' cannot be read ({exc.strerror or exc}); give a "
                          "readable list of file names") from None
    names = [line.strip() for line in text.splitlines()]
    names = [name for name in names if name]
    if not names:
        raise ConfigError(f"subset file '{path}' lists no image; give one file name per line")
    return names


def _key(name: str) -> tuple[str, str]:
    """(class folder, file name) of a listed image: ``CLASS/FILE``, or SimCLR's ``CLASS_N.JPEG``."""
    parts = Path(name).parts
    if len(parts) >= 2:
        return parts[-2], parts[-1]
    return name.split("_")[0], name


def subset_by_names(dataset: Dataset, names: Sequence[str], source: str) -> list[int]:
    """Indices of the images ``names`` lists (from ``source``, for the errors), in its order.

    ``dataset`` must be an image folder (its ``samples`` are ``(path, label)``); every listed
    image must be in it.
    """
    samples = getattr(dataset, "samples", None)
    if samples is None:
        raise ConfigError(f"'{source}' selects images by file name, and a data set of type "
                          f"{type(dataset).__name__} has no files; leave the subset file out to "
                          "take a seeded class-balanced fraction")
    index = {(Path(path).parent.name, Path(path).name): i for i, (path, _) in enumerate(samples)}
    missing = [name for name in names if _key(name) not in index]
    if missing:
        folder, file = _key(missing[0])
        raise ConfigError(
            f"{len(missing)} of {len(names)} images listed in '{source}' are not in the training "
            f"split (e.g. '{missing[0]}', looked for as {folder}/{file}); point --data at the "
            "data set the list was made for"
        )
    return [index[_key(name)] for name in names]


def balanced_subset(labels: Tensor, fraction: float, seed: int) -> list[int]:
    """A seeded ``fraction`` of each class (at least one image each), as sorted indices."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"the labelled fraction must be in (0, 1], got {fraction}")
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in torch.unique(labels).tolist():
        members = torch.nonzero(labels == label).flatten()
        count = max(1, round(fraction * len(members)))
        chosen.append(members[torch.randperm(len(members), generator=generator)[:count]])
    return sorted(torch.cat(chosen).tolist())
