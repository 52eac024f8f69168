"""Collates for ``data.augment: gpu``: the workers deliver ``uint8`` images (or their encoded
files) with the random draws of the batch's augmentation, which the training device applies.

The protocols say what the host needs from a method's batched transform
(:class:`BatchAugmentation`) and from a data set that hands over encoded images
(:class:`EncodedDataset`); the host knows neither implementation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor
from torch.utils.data import default_collate


class BatchAugmentation(Protocol):
    """What a transform's ``batch_augmentation()`` returns, for ``data.augment: gpu``."""

    def prepare(self, image: Any) -> Tensor:
        """One image as a (3, h, w) ``uint8`` tensor of :meth:`prepared_size` (CPU, in the
        workers)."""

    def prepared_size(self, height: Tensor, width: Tensor) -> tuple[Tensor, Tensor]:
        """The size :meth:`prepare` gives images of ``height × width``."""

    def stack(self, images: Sequence[Tensor]) -> Tensor:
        """Images of :meth:`prepared_size` (a size each) as the one ``uint8`` batch that
        :meth:`__call__` takes."""

    def draw(self, batch: int, height: int | Tensor, width: int | Tensor,
             generator: torch.Generator) -> Any:
        """The random draws of a batch's augmentation, for images of one size or of a size
        each (CPU, in the workers)."""

    def __call__(self, images: Tensor, draws: Any) -> Any:
        """The augmented batch of a ``uint8`` (B, 3, H, W) batch and its draws, on its device."""


class EncodedDataset(Protocol):
    """What a data set's ``encoded()`` returns, for ``data.augment: gpu``: samples whose
    images are still encoded files, decoded in the training process on the training device
    (such as :class:`~swav_plugin.zoo.images.EncodedImageFolder`)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        """``(encoded image, label)``."""

    def image_size(self, image: Any) -> tuple[int, int]:
        """An encoded image's ``(height, width)``."""

    def collate(self, images: Sequence[Any], heights: Tensor, widths: Tensor) -> Any:
        """A batch's encoded images in one object, to be resized to ``heights × widths``."""

    def decode(self, batch: Any, device: torch.device) -> list[Tensor]:
        """The images of a batch of :meth:`collate` decoded on ``device``, each a ``uint8``
        (3, h, w) tensor resized to its size."""


class SizedBatch(NamedTuple):
    """A collated batch with the size of each of its images, for the draws."""

    images: Any
    labels: Tensor
    seeds: Tensor
    height: int | Tensor
    width: int | Tensor


class DrawingCollate:
    """Samples → ``(images, labels, draws)``.

    ``collate`` makes a :class:`SizedBatch` of the samples; the draws are made where the
    batch is made (a DataLoader worker), with a generator seeded by the batch's first sample,
    so that they depend only on the run seed, the epoch and the batch's samples, like the
    per-image augmentation.
    """

    def __init__(
        self, collate: Callable[[Any], SizedBatch], augmentation: BatchAugmentation
    ) -> None:
        self.collate = collate
        self.augmentation = augmentation

    def __call__(self, samples: Any) -> tuple[Any, Tensor, Any]:
        batch = self.collate(samples)
        generator = torch.Generator().manual_seed(int(batch.seeds[0]))
        draws = self.augmentation.draw(len(batch.labels), batch.height, batch.width, generator)
        return batch.images, batch.labels, draws


def collate_in_memory(batch: tuple[Tensor, ...]) -> SizedBatch:
    """A batch :class:`~swav_plugin.host.dataset_views.InMemoryImages` already made (images
    of one size) as a :class:`SizedBatch`."""
    images, labels, seeds = batch
    return SizedBatch(images, labels, seeds, images.shape[2], images.shape[3])


class PreparedCollate:
    """Prepared images of a size each, in the augmentation's batch (its ``stack``)."""

    def __init__(self, augmentation: BatchAugmentation) -> None:
        self.augmentation = augmentation

    def __call__(self, samples: Sequence[tuple[Tensor, Any, int]]) -> SizedBatch:
        images, labels, seeds = zip(*samples, strict=True)
        return SizedBatch(self.augmentation.stack(images), default_collate(labels),
                          torch.tensor(seeds), torch.tensor([image.shape[1] for image in images]),
                          torch.tensor([image.shape[2] for image in images]))


class EncodedCollate:
    """Encoded samples in one batch of their data set's (:meth:`EncodedDataset.collate`),
    with the sizes the augmentation resizes them to."""

    def __init__(self, dataset: EncodedDataset, augmentation: BatchAugmentation) -> None:
        self.dataset = dataset
        self.augmentation = augmentation

    def __call__(self, samples: Sequence[tuple[Any, Any, int]]) -> SizedBatch:
        images, labels, seeds = zip(*samples, strict=True)
        sizes = torch.tensor([self.dataset.image_size(image) for image in images])
        height, width = self.augmentation.prepared_size(sizes[:, 0], sizes[:, 1])
        return SizedBatch(self.dataset.collate(images, height, width), default_collate(labels),
                          torch.tensor(seeds), height, width)
