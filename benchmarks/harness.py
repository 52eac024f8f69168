"""Shared parts of the training benchmarks: run a LightningModule for a fixed number of steps
and measure images/s after a warm-up, the peak memory and the data wait; random in-memory
data of a data set's shape (no data set can be downloaded here, and pixel values do not change
the cost); a folder of JPEGs of ImageNet's usual sizes."""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image

from swav_plugin.host.data_wait import DataWaitMonitor
from swav_plugin.host.registry import DATASETS
from swav_plugin.zoo.datasets import ImageArrayDataset

#: Image side of the data sets that are held in memory.
NATIVE_SIZE = {"cifar10": 32, "cifar100": 32, "stl10": 96}


@DATASETS.register("benchmark_random_uint8")
class RandomUint8(ImageArrayDataset):
    """``num_samples`` random ``uint8`` RGB images of ``size`` px, held in memory (label 0)."""

    def __init__(self, num_samples: int, size: int, seed: int = 0) -> None:
        pixels = np.random.default_rng(seed).integers(0, 256, (num_samples, size, size, 3),
                                                      dtype=np.uint8)
        super().__init__(pixels, np.zeros(num_samples, dtype=np.int64), ["random"])


#: (width, height) of the generated files: ImageNet's most common sizes and orientations.
SIZES = ((500, 375), (375, 500), (500, 333), (333, 500), (500, 500), (500, 400), (640, 480),
         (400, 500), (500, 281), (300, 225))

def write_jpegs(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` JPEGs of :data:`SIZES` (in turn) in ``folder``: low-frequency colour fields
    with noise, so that they compress and decode like photographs rather than like noise."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        width, height = SIZES[i % len(SIZES)]
        coarse = rng.integers(0, 256, (height // 25 + 2, width // 25 + 2, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))
        noise = rng.normal(0, 12, smooth.shape)
        pixels = np.clip(smooth + noise, 0, 255).astype(np.uint8)
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def pick_device(name: str) -> str:
    """``auto``: cuda when present, else cpu."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def reset_peak_memory(device: str) -> None:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib(device: str) -> float:
    """Peak allocated GPU memory since the last reset, or the process's peak RSS on the CPU."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


@dataclass
class Timing:
    images_per_s: float
    step_ms: float
    peak_gib: float
    data_wait_share: float


class StepTimer(pl.Callback):
    """Wall time of the steps after ``warmup`` (device synchronised at both ends)."""

    def __init__(self, warmup: int, device: str) -> None:
        self.warmup, self.device = warmup, device
        self.start: float | None = None
        self.timed_steps = 0

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.warmup:
            synchronize(self.device)
            reset_peak_memory(self.device)
            self.start = time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, *args: Any) -> None:
        synchronize(self.device)
        self.elapsed = time.perf_counter() - (self.start or time.perf_counter())
        self.timed_steps = trainer.global_step - self.warmup


def fit_timed(
    module: pl.LightningModule,
    data: pl.LightningDataModule,
    *,
    steps: int,
    warmup: int,
    batch_size: int,
    device: str,
    precision: str,
) -> Timing:
    """Train ``steps`` optimizer steps; images/s over the steps after ``warmup``."""
    timer, wait = StepTimer(warmup, device), DataWaitMonitor()
    trainer = pl.Trainer(
        accelerator="gpu" if device == "cuda" else "cpu", devices=1, precision=precision,
        max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, log_every_n_steps=50, callbacks=[timer, wait],
    )
    trainer.fit(module, datamodule=data)
    seconds = timer.elapsed / max(1, timer.timed_steps)
    return Timing(batch_size / seconds, 1000 * seconds, peak_memory_gib(device), wait.share)


class OnDeviceBatches(pl.LightningDataModule):
    """The same pre-made batch, already on the device, every step: the GPU-only ceiling."""

    def __init__(self, batch: Any, steps: int, batch_size: int) -> None:
        super().__init__()
        self.batch, self.steps, self.batch_size = batch, steps, batch_size

    def train_dataloader(self) -> Repeat:
        return Repeat(self.batch, self.steps)


class Repeat:
    """An iterable of ``count`` times ``item`` (a plain list would read as several loaders)."""

    def __init__(self, item: Any, count: int) -> None:
        self.item, self.count = item, count

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Any]:
        for _ in range(self.count):
            yield self.item
