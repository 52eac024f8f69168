"""The checkpoint rotation of a run: ``step=N.ckpt`` periodically and at epoch ends.

:class:`Checkpoints` saves every ``every_n_steps`` optimizer steps and at every epoch end
(and, through :class:`~swav_plugin.host.preemption.Preemption`, when the run is asked to
stop), keeps the newest ``keep`` checkpoints and points ``last.ckpt`` at the newest one. The
global random generators of every rank go into each checkpoint and are set again when the
run resumes (:mod:`.rng`), for methods that draw from them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Checkpoint, TQDMProgressBar
from pytorch_lightning.utilities import rank_zero_info

from swav_plugin.host.atomic import atomic_path
from swav_plugin.host.checkpoint_files import (
    LAST,
    digest_path,
    step_checkpoint_name,
    step_checkpoints,
    step_of,
)
from swav_plugin.host.lightning_internals import log_epoch_row_now, log_step_row_now
from swav_plugin.host.metrics_log import RunLogger
from swav_plugin.host.rng import rng_states, set_rng_states


@contextlib.contextmanager
def _run_log_only(trainer: pl.Trainer) -> Iterator[None]:
    """Send what is logged inside to the run's ``metrics.csv`` alone."""
    loggers = trainer.loggers
    trainer.loggers = [logger for logger in loggers if isinstance(logger, RunLogger)]
    try:
        yield
    finally:
        trainer.loggers = loggers


class Checkpoints(Checkpoint):
    """Saves ``step=N.ckpt`` periodically and at epoch ends; keeps a rotation.

    A step's or an epoch's metrics row is written to ``metrics.csv`` before the checkpoint
    that covers it: Lightning writes it after the hook that saves, and a kill in between
    would lose the row for good, since the resumed run starts after it.
    :class:`~swav_plugin.host.metrics_log.RunLogger` drops the loop's repeat of the row;
    the trackers get each row once, from the loop.

    Args:
        directory: Where the checkpoints go.
        every_n_steps: Optimizer steps between mid-epoch checkpoints; ``None``: epoch ends only.
        keep: How many of the newest checkpoints to keep (at least 1; 2 leaves a fallback).
    """

    def __init__(self, directory: Path, every_n_steps: int | None = None, keep: int = 2) -> None:
        self.directory = Path(directory)
        self.every_n_steps = every_n_steps
        self.keep = keep
        self._saved_step = -1
        self._rng_to_restore: list[dict[str, Any]] | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._saved_step = trainer.global_step  # what was resumed from needs no second copy
        if trainer.is_global_zero:
            self._set_aside_later_checkpoints(trainer.global_step)
        if self._rng_to_restore:  # nothing draws between here and the first resumed step
            states = self._rng_to_restore
            set_rng_states(states[trainer.global_rank % len(states)])
            self._rng_to_restore = None

    def state_dict(self) -> dict[str, Any]:
        # called on every rank while a checkpoint is made: gather each rank's generators
        states = rng_states()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, states)
            return {"rng_states": gathered}
        return {"rng_states": [states]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._rng_to_restore = state_dict.get("rng_states")

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        # the last batch's checkpoint is the epoch end's (a checkpoint from this hook at an
        # epoch's end confuses Lightning's restart bookkeeping)
        last_of_epoch = batch_idx + 1 >= trainer.num_training_batches
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0 and not (
            last_of_epoch
        ):
            with _run_log_only(trainer):
                log_step_row_now(trainer)
            self.save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        with _run_log_only(trainer):
            log_epoch_row_now(trainer)
        self.save(trainer)

    def save(self, trainer: pl.Trainer) -> None:
        """Save the checkpoint of the current step (all ranks call this; rank 0 writes)."""
        step = trainer.global_step
        if step == self._saved_step:
            return
        path = self.directory / step_checkpoint_name(step)
        trainer.save_checkpoint(path, weights_only=False)  # the full training state
        self._saved_step = step
        if trainer.is_global_zero:
            self._point_last_at(path)
            older = [p for p in step_checkpoints(self.directory) if p != path]
            for old in older[self.keep - 1:]:
                trainer.strategy.remove_checkpoint(old)
            bar = trainer.progress_bar_callback
            if isinstance(bar, TQDMProgressBar) and bar.is_enabled:
                bar.print(f"checkpoint: {path}")  # on its own line, above the bar
            else:
                rank_zero_info(f"checkpoint: {path}")

    def _set_aside_later_checkpoints(self, step: int) -> None:
        """Rename checkpoints of steps after ``step`` (the bad ones a resume fell back past,
        or a timeline abandoned for ``resume_from``) to ``*.abandoned``: kept, but out of the
        rotation and of later resumes. Removes temporary files a kill left mid-write."""
        for path in step_checkpoints(self.directory):
            if step_of(path) > step:
                for part in (path, digest_path(path)):
                    if part.exists():
                        part.rename(part.with_name(part.name + ".abandoned"))
        for tmp in self.directory.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)

    def _point_last_at(self, path: Path) -> None:
        last = self.directory / LAST
        with atomic_path(last) as tmp:
            tmp.unlink()
            tmp.symlink_to(path.name)  # relative: the run directory can be moved
