"""Checkpoint and stop when the run is asked to: preemption and time limits.

On ``SIGTERM`` (preemption), ``SIGUSR1`` (what SLURM sends before a time limit), ``SIGINT``
(Ctrl-C) or ``SIGHUP`` (the terminal closed) the run saves a checkpoint at the next step
boundary and the process exits with :data:`PREEMPTED_EXIT`; running the same command resumes
it. A second Ctrl-C aborts at once, without a checkpoint (Lightning's ``KeyboardInterrupt``
shutdown). Under DDP the ranks agree on the stop at every step over a CPU process group, so
that all of them stop after the same step.
"""

from __future__ import annotations

import signal
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Checkpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException

from swav_plugin.host.checkpoints import Checkpoints
from swav_plugin.host.lightning_internals import stop_at_next_step

#: Exit status of a run that stopped on a signal after saving a checkpoint (``EX_TEMPFAIL``:
#: "try again"): running the same command resumes it.
PREEMPTED_EXIT = 75
#: The signals that ask a run to checkpoint and stop.
STOP_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT", "SIGHUP")


class Preemption(Checkpoint):
    """Turns a stop signal into a checkpoint at the next step boundary and a clean stop.

    A ``Checkpoint`` callback, so that Lightning runs its hooks after those of the other
    callbacks: a signal that arrives during any of them still stops the run after that step.

    Args:
        checkpoints: The run's checkpoint rotation, which saves the final checkpoint.

    Attributes:
        preempted: Whether the run stopped on a signal (after saving a checkpoint).
    """

    def __init__(self, checkpoints: Checkpoints) -> None:
        self.checkpoints = checkpoints
        self.preempted = False
        self._signalled = False
        self._interrupted = False  # a Ctrl-C came: the next one aborts
        self._agreement: Any = None  # the CPU process group the ranks agree on a stop in
        self._previous_handlers: dict[int, Any] = {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # the handlers from before the run, taken before Lightning puts in its own
        self._previous_handlers = {getattr(signal, name): signal.getsignal(getattr(signal, name))
                                   for name in STOP_SIGNALS if hasattr(signal, name)}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The handler only sets a flag, which the ranks agree on at the end of a step (see
        # _stop_requested). Lightning's own SIGTERM handler runs a collective inside the
        # handler, and its loop then tests each rank's flag alone: ranks signalled a moment
        # apart would stop at different steps and pair mismatched collectives.
        def stop_at_next_step_boundary(signum: int, frame: Any) -> None:
            if signum == signal.SIGINT and self._interrupted:
                signal.signal(signal.SIGINT, signal.default_int_handler)
                raise KeyboardInterrupt  # a second Ctrl-C: stop now, without a checkpoint
            self._interrupted = self._interrupted or signum == signal.SIGINT
            if not self._signalled and trainer.strategy.launcher is not None:
                # Ctrl-C and a closed terminal reach the child ranks of the terminal's process
                # group themselves: pass them on as SIGTERM, so that a child does not take
                # the copy for a second Ctrl-C
                passed = signum if signum == getattr(signal, "SIGUSR1", None) else signal.SIGTERM
                trainer.strategy.launcher.kill(passed)
            self._signalled = True

        for signum in self._previous_handlers:
            signal.signal(signum, stop_at_next_step_boundary)
        self._agreement = self._agreement_group(trainer)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self._stop_requested(trainer):
            # Lightning stops at the step boundary right after this hook (after the epoch's
            # end, at an epoch's last step); on_exception saves
            stop_at_next_step(trainer)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if isinstance(exception, SIGTERMException):
            self.checkpoints.save(trainer)
            self.preempted = True
        self._restore_handlers()

    def _restore_handlers(self) -> None:
        """Give the stop signals back to the handlers from before the run (Ctrl-C raises
        ``KeyboardInterrupt`` again once the run is over)."""
        for signum, handler in self._previous_handlers.items():
            if handler is not None:
                signal.signal(signum, handler)
        self._previous_handlers = {}

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._restore_handlers()
        group, self._agreement = self._agreement, None
        if (group is not None and group is not torch.distributed.group.WORLD
                and torch.distributed.is_initialized()):
            torch.distributed.destroy_process_group(group)

    @staticmethod
    def _agreement_group(trainer: pl.Trainer) -> Any:
        """Under DDP, a process group on the CPU (gloo) for the per-step stop agreement: an
        all-reduce there waits for the other ranks' hosts, never for a device. Made by every
        rank at the same point (``on_train_start``); ``None`` on one process."""
        if trainer.world_size == 1 or not torch.distributed.is_initialized():
            return None
        if torch.distributed.get_backend() == "gloo":
            return torch.distributed.group.WORLD
        return torch.distributed.new_group(backend="gloo")

    def _stop_requested(self, trainer: pl.Trainer) -> bool:
        """Whether any rank was signalled: one all-reduce of one number on the CPU per step
        under DDP, so that every rank stops after the same step."""
        if self._agreement is None:
            return self._signalled
        flag = torch.tensor([int(self._signalled)], dtype=torch.int32)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX,
                                     group=self._agreement)
        return bool(flag[0])  # a CPU tensor: no device is waited for


def was_preempted(trainer: pl.Trainer) -> bool:
    """Whether ``trainer``'s run stopped on a signal after saving a checkpoint."""
    return any(isinstance(c, Preemption) and c.preempted for c in trainer.callbacks)
