"""The data side of a run: a registered data set, a transform and a collate in a DataModule.

Two places to augment (``data.augment``): ``cpu``, the transform runs per image in the
DataLoader workers (and a transform with ``normalize_on_device`` hands over ``uint8`` images,
normalised on the training device after the copy); ``gpu``, the workers deliver ``uint8``
images with the random draws of their augmentation, and the transform's batched version
applies them on the training device after the batch is moved there. With ``gpu``, a data set
that can hand over its images still encoded (an ``encoded()`` method, such as image folders)
has its workers read only the files' bytes; the training process decodes each batch on the
training device before the copy (nvJPEG on a GPU).

Either way the order and the augmentation are seeded per sample (:mod:`.sampling`), and the
DataModule's state in a checkpoint says where in which epoch the run stopped, so that a resumed
run continues with exactly the batches an uninterrupted one would have seen.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, NamedTuple, Protocol

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_utilities.core.apply_func import apply_to_collection
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, default_collate

from swav_plugin.host.errors import ConfigError
from swav_plugin.host.sampling import Draw, ResumableSampler, seeded_call


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
    """For ``data.augment: gpu``: samples → ``(images, labels, draws)``.

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


def _collate_in_memory(batch: tuple[Tensor, ...]) -> SizedBatch:
    """:class:`InMemoryImages` already made the batch: images of one size."""
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


def _ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers ignore SIGTERM and SIGUSR1.

    A scheduler signals every process of a job, workers included; the main process then saves
    a checkpoint at the next step boundary and shuts its workers down itself. A worker killed
    by the signal would instead abort the run (PyTorch raises in the main process as soon as
    a worker dies), possibly in the middle of writing that checkpoint.
    """
    for name in ("SIGTERM", "SIGUSR1"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)


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


class TimedDataLoader(DataLoader):
    """A DataLoader whose iterators add the time they spend producing batches to
    ``clock[0]``: the time training waits for the loader (workers or main process)."""

    def __init__(self, *args: Any, clock: list[float], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clock = clock  # an argument, so that a loader Lightning rebuilds keeps it

    def __iter__(self) -> Iterator[Any]:
        return _TimedIterator(super().__iter__(), self.clock)


class _TimedIterator:
    def __init__(self, iterator: Iterator[Any], clock: list[float]) -> None:
        self._iterator, self._clock = iterator, clock

    def __iter__(self) -> _TimedIterator:
        return self

    def __next__(self) -> Any:
        start = time.perf_counter()
        try:
            return next(self._iterator)
        finally:
            self._clock[0] += time.perf_counter() - start

    def __len__(self) -> int:
        return len(self._iterator)


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
            set with ``encoded()`` (:class:`EncodedDataset`) is decoded on the training
            device, in the training process.

    Attributes:
        seed: The run's seed for the order and the augmentation (the runner sets ``run.seed``);
            ``None``: drawn at random when the first loader is made (and kept in checkpoints).
        data_seconds: Host time spent producing training batches so far: in the loader's
            ``__next__`` and launching the device's share (``augment: gpu``, or the
            normalisation of ``uint8`` images) (see
            :class:`~swav_plugin.host.data_wait.DataWaitMonitor`).
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
            raise ConfigError(f"data.augment must be 'cpu' or 'gpu', got {augment!r}")
        self.dataset = dataset
        self.transform = transform
        self.collate = collate
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.drop_last = drop_last
        self.seed: int | None = None
        self._start = (0, 0)  # (epoch, batches done) the next loader starts at
        self._clock = [0.0]

    @property
    def data_seconds(self) -> float:
        return self._clock[0]

    def train_dataloader(self) -> DataLoader:
        dataset: Dataset = TransformedDataset(self.dataset, self.transform)
        collate = self.collate
        augmentation = self.batch_augment
        if augmentation is not None:
            if hasattr(self.dataset, "images") and hasattr(self.dataset, "labels"):
                dataset = InMemoryImages(self.dataset.images, self.dataset.labels)
                collate = DrawingCollate(_collate_in_memory, augmentation)
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
            done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
            ended = trainer.fit_loop.epoch_progress.current.processed > epoch
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
