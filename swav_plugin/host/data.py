"""The data side of a run: a registered data set, a transform and a collate in a DataModule.

Two places to augment (``data.augment``): ``cpu``, the transform runs per image in the
DataLoader workers; ``gpu``, the workers only deliver ``uint8`` images and the transform's
batched version runs on the training device after the batch is moved there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, default_collate

from swav_plugin.host.errors import ConfigError


class BatchAugmentation(Protocol):
    """What a transform's ``batch_augmentation()`` returns, for ``data.augment: gpu``."""

    def prepare(self, image: Any) -> Tensor:
        """One image as a fixed-size (3, H, W) ``uint8`` tensor (CPU, in the workers)."""

    def __call__(self, images: Tensor) -> Any:
        """The augmented batch of a ``uint8`` (B, 3, H, W) batch, on its device."""


class InMemoryImages(Dataset):
    """A data set's ``uint8`` images held as one (N, 3, H, W) tensor, fetched a batch at a time.

    For data sets exposing ``images`` (N, H, W, 3) ``uint8`` and ``labels`` (CIFAR, STL-10,
    digits): a batch is one indexing operation, with no PIL image and no per-sample Python.
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

    def __getitems__(self, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
        index = torch.as_tensor(indices)
        return self.images[index], self.labels[index]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]


def _as_batch(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Collate of :class:`InMemoryImages`: its ``__getitems__`` already made the batch."""
    return batch


class TransformedDataset(Dataset):
    """Applies ``transform`` to the image of each ``(image, label)`` sample of ``dataset``."""

    def __init__(self, dataset: Dataset, transform: Callable[[Any], Any] | None) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, label = self.dataset[index]
        return (self.transform(image) if self.transform else image), label


class DataModule(pl.LightningDataModule):
    """Training data for any method: ``dataset`` → ``transform`` → ``collate`` → batches.

    Args:
        dataset: A data set yielding ``(image, label)`` (a ``dataset`` component node).
        transform: Applied to each image (a ``transform`` component node).
        collate: Combines samples into a batch (a ``collate`` component node); default stacking.
        batch_size: Samples per device and step; the global batch is this × devices × nodes.
        num_workers: DataLoader worker processes.
        pin_memory: Page-locked host memory for faster copies to a GPU.
        drop_last: Drop the last incomplete batch (equal-size batches keep Sinkhorn's
            equipartition and the queue consistent).
        augment: ``cpu``: ``transform`` runs per image in the workers. ``gpu``: the workers
            deliver ``uint8`` images (one indexing per batch for data sets held in memory) and
            ``transform.batch_augmentation()`` runs on the training device (the GPU; on a CPU
            run, batched on the CPU); ``collate`` is then not used.
    """

    def __init__(
        self,
        dataset: Dataset,
        transform: Callable[[Any], Any] | None = None,
        collate: Callable[[list[Any]], Any] | None = None,
        batch_size: int = 256,
        num_workers: int = 4,
        pin_memory: bool = True,
        drop_last: bool = True,
        augment: Literal["cpu", "gpu"] = "cpu",
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be 0 or more, got {num_workers}")
        if drop_last and len(dataset) < batch_size:
            raise ValueError(
                f"the data set has {len(dataset)} samples, fewer than batch_size={batch_size}; "
                "lower data.batch_size"
            )
        self.batch_augment: BatchAugmentation | None = None
        if augment == "gpu":
            make = getattr(transform, "batch_augmentation", None)
            if make is None:
                raise ConfigError(
                    f"data.augment: gpu needs a transform with a batched version (such as "
                    f"multicrop); {type(transform).__name__} has none; set data.augment: cpu"
                )
            self.batch_augment = make()
        elif augment != "cpu":
            raise ConfigError(f"data.augment must be 'cpu' or 'gpu', got {augment!r}")
        self.dataset = dataset
        self.transform = transform
        self.collate = collate
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.drop_last = drop_last

    def train_dataloader(self) -> DataLoader:
        dataset: Dataset = TransformedDataset(self.dataset, self.transform)
        collate = self.collate
        if self.batch_augment is not None:
            if hasattr(self.dataset, "images") and hasattr(self.dataset, "labels"):
                dataset = InMemoryImages(self.dataset.images, self.dataset.labels)
                collate = _as_batch
            else:
                dataset = TransformedDataset(self.dataset, self.batch_augment.prepare)
                collate = default_collate
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=True,
            num_workers=self.num_workers,
            collate_fn=collate,
            pin_memory=self.pin_memory,
            drop_last=self.drop_last,
            persistent_workers=self.num_workers > 0,
        )

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.batch_augment is None:
            return batch
        images, labels = batch
        return self.batch_augment(images), labels
