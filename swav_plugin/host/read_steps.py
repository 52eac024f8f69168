"""The steps on which the host may read values back from the device.

A read such as ``.item()`` waits until the device has run everything queued before it, so a
step that reads stalls the GPU. The runner's callbacks keep every such read on the logging
steps, whose metrics Lightning reads anyway; a trainer that logs nothing
(``log_every_n_steps: 0``) reads every :data:`DEFAULT_INTERVAL` steps instead.
"""

from __future__ import annotations

import pytorch_lightning as pl

#: Lightning's default ``log_every_n_steps``: the read interval of a trainer that logs nothing.
DEFAULT_INTERVAL = 50


def is_logging_step(trainer: pl.Trainer) -> bool:
    """Whether Lightning writes the metrics of the step that just ran (call in
    ``on_train_batch_end``, when ``trainer.global_step`` already counts that step)."""
    every = trainer.log_every_n_steps
    return bool(every) and trainer.global_step % every == 0


def is_read_step(trainer: pl.Trainer) -> bool:
    """Whether the step that just ran may read from the device: a logging step, or every
    :data:`DEFAULT_INTERVAL` steps when nothing is logged."""
    return trainer.global_step % (trainer.log_every_n_steps or DEFAULT_INTERVAL) == 0
