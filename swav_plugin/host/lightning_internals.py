"""Every private part of PyTorch Lightning this package uses, each behind one function.

Lightning's public API cannot do three things that exact resume and preemption need:

- Stop at the next step boundary through Lightning's own preemption path (the
  ``SIGTERMException`` that reaches ``on_exception``, where the checkpoint is saved). The
  public ``Trainer.should_stop`` ends the epoch instead and runs the epoch-end hooks, so the
  checkpoint taken there describes a finished epoch and a resume skips the epoch's remaining
  batches.
- Hand a step's or an epoch's metrics row to the loggers before the hook that saves the
  checkpoint returns. The loop logs them only after ``on_train_batch_end`` /
  ``on_train_epoch_end``, so a kill in between would lose a row the checkpoint covers.
- Tell, from a data module's ``state_dict``, how many batches of the epoch are done and
  whether the epoch is over: a data module has no batch hooks to count them itself.

:func:`check_internals` looks every attribute below up on a trainer (the runner calls it
right after building one), so that a Lightning release that renames one fails at once in
one line naming it, not later in a resume; ``tests/host/test_lightning_internals.py`` runs
each function. Supported: :data:`SUPPORTED`, the range ``pyproject.toml`` pins.
"""

from __future__ import annotations

import inspect

import pytorch_lightning as pl

from swav_plugin.host.errors import ConfigError

#: The pytorch-lightning releases these internals were checked against (pyproject.toml's pin).
SUPPORTED = ">=2.6,<2.7"
#: The attributes used below, as paths from the ``Trainer``.
INTERNALS = (
    "_signal_connector.received_sigterm",
    "_logger_connector.update_train_step_metrics",
    "_logger_connector.log_metrics",
    "_logger_connector.metrics",
    "fit_loop.epoch_loop._batches_that_stepped",
    "fit_loop.epoch_loop.batch_progress.current.processed",
    "fit_loop.epoch_progress.current.processed",
)


class LightningChanged(ConfigError):
    """The installed Lightning lacks an internal this package relies on."""


def check_internals(trainer: pl.Trainer) -> None:
    """Raise :class:`LightningChanged` naming the first of :data:`INTERNALS` that ``trainer``
    lacks (looked up without running properties)."""
    for path in INTERNALS:
        node: object = trainer
        for name in path.split("."):
            try:
                node = inspect.getattr_static(node, name)
            except AttributeError:
                raise LightningChanged(
                    f"pytorch-lightning {pl.__version__} has no Trainer.{path}, which "
                    f"swav-plugin's checkpoints rely on; pip install 'pytorch-lightning{SUPPORTED}'"
                ) from None
            if isinstance(node, property):  # its value exists only while fitting
                break


def stop_at_next_step(trainer: pl.Trainer) -> None:
    """Make the loop raise ``SIGTERMException`` at the next step boundary, as on SIGTERM."""
    trainer._signal_connector.received_sigterm = True


def log_step_row_now(trainer: pl.Trainer) -> None:
    """Hand the current step's metrics row to the loggers now (inside ``on_train_batch_end``)."""
    trainer._logger_connector.update_train_step_metrics()


def log_epoch_row_now(trainer: pl.Trainer) -> None:
    """Hand the epoch's metrics row to the loggers now (inside ``on_train_epoch_end``), at the
    step the loop would give it: the epoch's last, one less than the steps counted so far."""
    connector = trainer._logger_connector
    loop = trainer.fit_loop.epoch_loop
    loop._batches_that_stepped -= 1
    try:
        connector.log_metrics(connector.metrics["log"])
    finally:
        loop._batches_that_stepped += 1


def batches_done(trainer: pl.Trainer) -> int:
    """Batches of the current epoch processed so far (restored ones included)."""
    return trainer.fit_loop.epoch_loop.batch_progress.current.processed


def epochs_done(trainer: pl.Trainer) -> int:
    """Epochs whose end the loop has processed."""
    return trainer.fit_loop.epoch_progress.current.processed
