"""The data side of a run: a registered data set, a transform and a collate in a DataModule."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset


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
        self.dataset = dataset
        self.transform = transform
        self.collate = collate
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.drop_last = drop_last

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            TransformedDataset(self.dataset, self.transform),
            batch_size=self.batch_size,
            shuffle=True,
            num_workers=self.num_workers,
            collate_fn=self.collate,
            pin_memory=self.pin_memory,
            drop_last=self.drop_last,
            persistent_workers=self.num_workers > 0,
        )
