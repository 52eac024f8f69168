"""How long training waits for data: the first thing to check when a run is slower than it
should be.

The data wait of a step is the host time spent producing its batch: in the DataLoader's
``__next__`` (waiting for the workers, or loading in the main process) and, for
``data.augment: gpu``, launching the batch's augmentation after it was moved to the device.
The data module measures both (``data_seconds``, see :class:`~swav_plugin.host.data.DataModule`),
so that nothing else the host does between two steps counts: reading logged values back
from the device, writing a checkpoint, agreeing on a stop signal. Its share of the step time
is logged as ``perf/data_wait_share`` on the logger's steps and summarised at the end of
training. On a GPU the step itself runs asynchronously, so a share near zero means the loader
keeps up; a large share means the GPU idles waiting for data (more ``data.num_workers``, or
``data.augment: gpu``).
"""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_info

from swav_plugin.host.read_steps import is_logging_step


def _data_seconds(trainer: pl.Trainer) -> float:
    return getattr(trainer.datamodule, "data_seconds", 0.0)


class DataWaitMonitor(Callback):
    """Logs the per-step data wait (ms) and its share of the step time; never touches a device
    tensor, so it adds no synchronisation to the step.

    The data module must report its cumulative ``data_seconds``; without one the wait is 0.
    """

    def __init__(self) -> None:
        self._last_end: float | None = None
        self._data_at_end = 0.0  # data_seconds when the last step ended
        self._interval = [0.0, 0.0, 0]  # wait, total, steps since the last log
        self._run = [0.0, 0.0, 0]  # the same over the whole fit

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # the epoch's first batch: its loader starts after this hook
        self._last_end = time.perf_counter()
        self._data_at_end = _data_seconds(trainer)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        now, data = time.perf_counter(), _data_seconds(trainer)
        total = now - (self._last_end or now)
        wait = data - self._data_at_end
        self._last_end, self._data_at_end = now, data
        for sums in (self._interval, self._run):
            sums[0] += wait
            sums[1] += total
            sums[2] += 1
        if trainer.loggers and is_logging_step(trainer):
            wait, total, steps = self._interval
            metrics = {"perf/data_wait_ms": 1000 * wait / steps,
                       "perf/data_wait_share": wait / total if total > 0 else 0.0}
            for logger in trainer.loggers:
                # the step of this batch's loss row: written before a checkpoint of this
                # step, and kept by a resume from it (global_step already counts this step)
                logger.log_metrics(metrics, step=trainer.global_step - 1)
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
