"""A progress bar that reads nothing back from the device between logging steps.

Lightning converts every metric logged with ``prog_bar=True`` to a Python number at the end of
*every* step (``.item()``: a full GPU stall), and its bar redraws every ``refresh_rate``
batches of the epoch, which drift off the logging steps whenever an epoch's length is not a
multiple of the interval. :class:`LoggingStepProgressBar` redraws once per logging step (and
at epoch ends) and shows the logged metrics whose names contain ``loss`` beside the usual
ones, so that methods can log their losses without ``prog_bar``.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar
from torch import Tensor

from swav_plugin.host.read_steps import is_read_step


class LoggingStepProgressBar(TQDMProgressBar):
    """TQDM bar redrawn after each logging step and at epoch ends, showing the logged losses.

    Lightning makes a step's logged values available only after the callbacks' batch-end
    hooks, so the bar redraws for a logging step at the start of the next batch (or at the
    epoch's end), when the device has already been read for the logger.
    """

    def __init__(self) -> None:
        super().__init__(refresh_rate=1)
        self._pending: int | None = None  # batch index of a logging step not yet shown

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if is_read_step(trainer):
            self._pending = batch_idx

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._pending is not None:
            super().on_train_batch_end(trainer, pl_module, None, None, self._pending)
            self._pending = None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._pending = None
        bar = self.train_progress_bar
        if bar is not None and bar.total is not None and bar.n < bar.total:
            bar.update(bar.total - bar.n)
        super().on_train_epoch_end(trainer, pl_module)

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        shown = super().get_metrics(trainer, pl_module)
        for name, value in trainer.logged_metrics.items():
            if "loss" in name and name not in shown:
                shown[name] = value.item() if isinstance(value, Tensor) else value
        return shown
