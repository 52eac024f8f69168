"""The data side of a run: a registered data set, a transform and a collate in a DataModule.

Two places to augment (``data.augment``): ``cpu``, the transform runs per image in the
DataLoader workers (and a transform with ``normalize_on_device`` hands over ``uint8`` images,
normalised on the training device after the copy); ``gpu``, the workers deliver ``uint8``
images with the random draws of their augmentation, and the transform's batched version
applies them on the training device after the batch is moved there. With ``gpu``, a data set
that can hand over its images still encoded (an ``encoded()`` method, such as image folders)
has its workers read only the files' bytes; the training process decodes each batch on the
training device before the copy (nvJPEG on a GPU).

The collates of ``gpu`` are in :mod:`.batch_collate`, the views of the data set in
:mod:`.dataset_views`, the loader's clock of the data wait in :mod:`.timed_loader`.

Either way the order and the augmentation are seeded per sample (:mod:`.sampling`), and the
DataModule's state in a checkpoint says where in which epoch the run stopped, so that a resumed
run continues with exactly the batches an uninterrupted one would have seen.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

import pytorch_lightning as pl
import torch
from lightning_utilities.core.apply_func import apply_to_collection
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from swav_plugin.host.batch_collate import (
    BatchAugmentation,
    DrawingCollate,
    EncodedCollate,
    EncodedDataset,
    PreparedCollate,
    collate_in_memory,
)
from swav_plugin.host.dataset_views import InMemoryImages, TransformedDataset
from swav_plugin.host.errors import ConfigError
from swav_plugin.host.lightning_internals import batches_done, epochs_done
from swav_plugin.host.preemption import STOP_SIGNALS
from swav_plugin.host.quoting import shown
from swav_plugin.host.registry import COLLATES, DATASETS, TRANSFORMS
from swav_plugin.host.sampling import ResumableSampler
from swav_plugin.host.timed_loader import TimedDataLoader


def _ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers ignore the signals that stop a run (:data:`.preemption.STOP_SIGNALS`).

    A scheduler signals every process of a job, and Ctrl-C every process of the terminal's
    process group, workers included; the main process then saves
    a checkpoint at the next step boundary and shuts its workers down itself. A worker killed
    by the signal would instead abort the run (PyTorch raises in the main process as soon as
    a worker dies), possibly in the middle of writing that checkpoint.
    """
    for name in STOP_SIGNALS:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)


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
        augment: ``cpu``: ``transform`` runs per image in the workers; if it has a
            ``normalize_on_device`` method, its ``uint8`` image tensors in the batch are
            normalised by it after the copy to the training device. ``gpu``: the workers
            deliver ``uint8`` images (one indexing per batch for data sets held in memory)
            with the random draws of their augmentation, and ``transform.
            batch_augmentation()`` applies them on the training device (the GPU; on a CPU
            run, batched on the CPU); ``collate`` is then not used. Images not held in
            memory keep their whole area (at the augmentation's ``prepared_size``); a data
            set with ``encoded()`` (:class:`~.batch_collate.EncodedDataset`) is decoded on
            the training device, in the training process.
        seed: The seed of the order and the augmentation; the runner passes ``run.seed``
            (a recipe's data section cannot set it). ``None``: drawn at random when the first
            loader is made, and kept in checkpoints.

    Attributes:
        data_seconds: Host time spent producing training batches so far: in the loader's
            ``__next__`` and launching the device's share (``augment: gpu``, or the
            normalisation of ``uint8`` images) (see
            :class:`~swav_plugin.host.data_wait.DataWaitMonitor`).
    """

    def __init__(
        self,
        dataset: Annotated[Dataset, DATASETS],
        transform: Annotated[Callable[[Any], Any], TRANSFORMS] | None = None,
        collate: Annotated[Callable[[list[Any]], Any], COLLATES] | None = None,
        batch_size: int = 256,
        num_workers: int = 4,
        pin_memory: bool = True,
        drop_last: bool = True,
        augment: Literal["cpu", "gpu"] = "cpu",
        seed: int | None = None,
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
        self._encoded: EncodedDataset | None = None
        self.normalize_on_device: Callable[[Tensor], Tensor] | None = None
        if augment == "cpu":
            self.normalize_on_device = getattr(transform, "normalize_on_device", None)
        elif augment == "gpu":
            make = getattr(transform, "batch_augmentation", None)
            if make is None:
                raise ConfigError(
                    f"data.augment: gpu needs a transform with a batched version (such as "
                    f"multicrop); {type(transform).__name__} has none; set data.augment: cpu"
                )
            self.batch_augment = make()
            encoded = getattr(dataset, "encoded", None)
            self._encoded = encoded() if encoded is not None else None
        else:
            raise ConfigError(f"data.augment must be 'cpu' or 'gpu', got {shown(augment)}")
        self.dataset = dataset
        self.transform = transform
        self.collate = collate
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.drop_last = drop_last
        self.seed = seed
        self._start = (0, 0)  # (epoch, batches done) the next loader starts at
        self._clock = [0.0]

    @property
    def data_seconds(self) -> float:
        """Host time spent producing training batches so far (see the class's attributes)."""
        return self._clock[0]

    def train_dataloader(self) -> DataLoader:
        dataset: Dataset = TransformedDataset(self.dataset, self.transform)
        collate = self.collate
        augmentation = self.batch_augment
        if augmentation is not None:
            if hasattr(self.dataset, "images") and hasattr(self.dataset, "labels"):
                dataset = InMemoryImages(self.dataset.images, self.dataset.labels)
                collate = DrawingCollate(collate_in_memory, augmentation)
            elif self._encoded is not None:
                dataset = TransformedDataset(self._encoded, None, True)
                collate = DrawingCollate(EncodedCollate(self._encoded, augmentation),
                                         augmentation)
            else:
                dataset = TransformedDataset(self.dataset, augmentation.prepare, True)
                collate = DrawingCollate(PreparedCollate(augmentation), augmentation)
        trainer = self.trainer
        world_size, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        if self.seed is None:
            self.seed = random.SystemRandom().getrandbits(63)
            if trainer is not None:  # every rank must shuffle alike
                self.seed = trainer.strategy.broadcast(self.seed)
        sampler = ResumableSampler(dataset, world_size, rank, self.seed, self.batch_size,
                                   *self._start)
        self._start = (0, 0)  # a loader made later (a reload) starts its epochs whole
        return TimedDataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=collate,
            pin_memory=self.pin_memory,
            drop_last=self.drop_last,
            persistent_workers=self.num_workers > 0,
            worker_init_fn=_ignore_stop_signals,
            # the workers' base seed comes from here, not from the global generator
            generator=torch.Generator().manual_seed(self.seed),
            clock=self._clock,
        )

    def state_dict(self) -> dict[str, Any]:
        """Where the run stands: the seed and the (epoch, batches done) to continue at."""
        epoch, done = 0, 0
        trainer = self.trainer
        if trainer is not None:
            epoch = trainer.current_epoch
            done = batches_done(trainer)
            ended = epochs_done(trainer) > epoch
            if ended or done >= trainer.num_training_batches:  # the next epoch, from its start
                epoch, done = epoch + 1, 0
        return {"seed": self.seed, "epoch": epoch, "batches_done": done}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.seed = state_dict["seed"]
        self._start = (state_dict["epoch"], state_dict["batches_done"])

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self._encoded is None:
            return batch
        start = time.perf_counter()
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        files, labels, draws = batch
        images = self.batch_augment.stack(self._encoded.decode(files, device))
        batch = images, labels, draws
        self._clock[0] += time.perf_counter() - start
        return batch

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.batch_augment is None and self.normalize_on_device is None:
            return batch
        start = time.perf_counter()
        if self.batch_augment is not None:
            images, labels, draws = batch
            batch = self.batch_augment(images, draws), labels
        else:
            batch = apply_to_collection(batch, Tensor, self._normalize_images)
        self._clock[0] += time.perf_counter() - start
        return batch

    def _normalize_images(self, tensor: Tensor) -> Tensor:
        if tensor.dtype != torch.uint8 or tensor.dim() != 4:
            return tensor  # labels, seeds
        return self.normalize_on_device(tensor)
