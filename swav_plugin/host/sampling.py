"""Sampling that a checkpoint can resume exactly: epoch-seeded order, per-sample seeds.

Every random draw of the data pipeline is a pure function of ``(run seed, epoch, sample)``:

- the order of an epoch is a permutation seeded by ``seed + epoch`` (as ``DistributedSampler``),
  split over the ranks;
- each sample carries its own seed (:func:`sample_seed`), which seeds the per-image augmentation
  wherever it runs (main process or any DataLoader worker), and the first sample's seed seeds
  the draws of a batch whose augmentation is applied on the device.

So a run resumed at batch ``b`` of epoch ``e`` sees the same images with the same crops as an
uninterrupted run, whatever the number of workers; the sampler's state in a checkpoint is just
``(seed, epoch, batches done)``. With the global generators untouched, nothing outside the data
pipeline is perturbed by it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sized
from typing import Any, NamedTuple

from torch.utils.data import DistributedSampler, get_worker_info

from swav_plugin.host.rng import seeded

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for sample ``index`` in ``epoch`` of a run seeded ``seed`` (SplitMix64)."""
    return _splitmix64(_splitmix64(_splitmix64(seed) ^ epoch) ^ index) >> 1


class Draw(NamedTuple):
    """One sample of an epoch: the data set index and the seed of its augmentation."""

    index: int
    seed: int


def seeded_call(seed: int, fn: Callable[[Any], Any], value: Any) -> Any:
    """``fn(value)`` with the global CPU generators (torch, NumPy, Python) seeded by ``seed``.

    In the main process (``num_workers: 0``) they are restored afterwards, so that the
    process's own random streams stay as they were. A worker's generators serve only the data
    pipeline, which seeds each sample, so they are not restored (that would cost more than
    the seeding itself).
    """
    with seeded(seed, restore=get_worker_info() is None):
        return fn(value)


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` order, yielding :class:`Draw`\\ s, that can start mid-epoch.

    A subclass of ``DistributedSampler``, so Lightning leaves it in place under DDP and calls
    :meth:`set_epoch` at every epoch start.

    Args:
        dataset: The data set (only its length is used).
        num_replicas: Number of ranks the epoch is split over.
        rank: This rank.
        seed: The run seed.
        batch_size: Samples per batch on this rank (to turn batches done into samples).
        epoch: The epoch the first iteration serves.
        batches_done: Batches of ``epoch`` already trained: the first iteration skips them.
    """

    def __init__(
        self,
        dataset: Sized,
        num_replicas: int,
        rank: int,
        seed: int,
        batch_size: int,
        epoch: int = 0,
        batches_done: int = 0,
    ) -> None:
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False
        )
        self.batch_size = batch_size
        self.epoch = epoch
        self._resume = (epoch, batches_done) if batches_done > 0 else None

    def __iter__(self) -> Iterator[Draw]:  # type: ignore[override]
        indices = list(super().__iter__())
        if self._resume is not None and self._resume[0] == self.epoch:
            indices = indices[self._resume[1] * self.batch_size:]
        self._resume = None  # only the first iteration resumes; later epochs are whole
        for index in indices:
            yield Draw(index, sample_seed(self.seed, self.epoch, index))
