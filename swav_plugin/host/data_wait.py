"""How long training waits for data: the first thing to check when a run is slower than it
should be.

For every step, the host time between the end of the previous step and the start of this one
is the time spent fetching the batch from the DataLoader, moving it to the device and (for
``data.augment: gpu``) launching its augmentation. Its share of the step time is logged as
``perf/data_wait_share`` on the logger's steps and summarised at the end of training. On a GPU
the step itself runs asynchronously, so a share near zero means the loader keeps up; a large
share means the GPU idles waiting for data (more ``data.num_workers``, or
``data.augment: gpu``).
"""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_info


class DataWaitMonitor(Callback):
    """Logs the per-step data wait (ms) and its share of the step time; never touches a device
    tensor, so it adds no synchronisation to the step."""

    def __init__(self) -> None:
        self._last_end: float | None = None
        self._interval = [0.0, 0.0, 0]  # wait, total, steps since the last log
        self._run = [0.0, 0.0, 0]  # the same over the whole fit

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_end = time.perf_counter()  # the epoch's first batch: its loader starts here

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._wait = time.perf_counter() - (self._last_end or time.perf_counter())

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        now = time.perf_counter()
        total = now - (self._last_end or now)
        self._last_end = now
        for sums in (self._interval, self._run):
            sums[0] += self._wait
            sums[1] += total
            sums[2] += 1
        every = trainer.log_every_n_steps
        if trainer.logger is not None and every and trainer.global_step % every == 0:
            wait, total, steps = self._interval
            trainer.logger.log_metrics(
                {"perf/data_wait_ms": 1000 * wait / steps,
                 "perf/data_wait_share": wait / total if total > 0 else 0.0},
                # the step of this batch's loss row: written before a checkpoint of this
                # step, and kept by a resume from it (global_step already counts this step)
                step=trainer.global_step - 1,
            )
            self._interval = [0.0, 0.0, 0]

    @property
    def share(self) -> float:
        """The data wait's share of the step time over the fit so far."""
        wait, total, _ = self._run
        return wait / total if total > 0 else 0.0

    def summary(self) -> str:
        """One line: mean wait per step and its share of the step time over the fit."""
        wait, _, steps = self._run
        if steps == 0:
            return "data wait: no training steps ran"
        share = self.share
        line = f"data wait: {1000 * wait / steps:.1f} ms per step, {100 * share:.0f} % of step time"
        if share > 0.2:  # the GPU idles a fifth of the time or more
            line += " (data loading limits the run: more data.num_workers or data.augment: gpu)"
        return line

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        rank_zero_info(self.summary())
