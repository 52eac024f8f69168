"""Views of a registered data set that the training loader reads: transformed per sample, or
held in memory as one ``uint8`` tensor.

Fetched with a :class:`~swav_plugin.host.sampling.Draw`, a view seeds the sample's random
augmentation with the draw's seed, so a sample's augmentation depends only on the run seed,
the epoch and the sample (:mod:`swav_plugin.host.sampling`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from swav_plugin.host.errors import ConfigError
from swav_plugin.host.sampling import Draw, seeded_call


class TransformedDataset(Dataset):
    """Applies ``transform`` to the image of each ``(image, label)`` sample of ``dataset``.

    Fetched with a :class:`Draw`, the transform runs seeded by the draw's seed, and with
    ``with_seed`` the sample is ``(image, label, seed)``.
    """

    def __init__(
        self, dataset: Dataset, transform: Callable[[Any], Any] | None, with_seed: bool = False
    ) -> None:
        self.dataset = dataset
        self.transform = transform
        self.with_seed = with_seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | Draw) -> tuple[Any, ...]:
        draw = key if isinstance(key, Draw) else None
        image, label = self.dataset[draw.index if draw else key]
        if self.transform is not None:
            image = seeded_call(draw.seed, self.transform, image) if draw else self.transform(image)
        if self.with_seed and draw:
            return image, label, draw.seed
        return image, label


class InMemoryImages(Dataset):
    """A data set's ``uint8`` images held as one (N, 3, H, W) tensor, fetched a batch at a time.

    For data sets exposing ``images`` (N, H, W, 3) ``uint8`` and ``labels`` (CIFAR, STL-10,
    digits): a batch is one indexing operation, with no PIL image and no per-sample Python.
    Fetched with :class:`Draw`\\ s, a batch is ``(images, labels, seeds)``.
    """

    def __init__(self, images: Any, labels: Any) -> None:
        pixels = np.asarray(images)
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[-1] != 3:
            raise ConfigError(
                f"in-memory images must be uint8 (N, H, W, 3), got {pixels.dtype} "
                f"{pixels.shape}; use data.augment: cpu for this data set"
            )
        self.images = torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)))
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.images)

    def __getitems__(self, keys: Sequence[int | Draw]) -> tuple[Tensor, ...]:
        if keys and isinstance(keys[0], Draw):
            index = torch.as_tensor([draw.index for draw in keys])
            seeds = torch.as_tensor([draw.seed for draw in keys])
            return self.images[index], self.labels[index], seeds
        index = torch.as_tensor(keys)
        return self.images[index], self.labels[index]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]
