"""Ranks that end with the process that launched them.

Lightning starts the other ranks of a run on one machine as child processes. When the
launching process is killed (``kill -9``, the out-of-memory killer), they would live on as
orphans holding their memory and waiting at a collective forever. Each child rank asks the
kernel to kill it when its parent dies (Linux's ``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> bool:
    """Have the kernel kill this process when its parent ends; ``False`` where it cannot
    (not Linux). Exits at once if the parent has already ended."""
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return False
    if os.getppid() != parent:  # the parent ended before the request took effect
        os._exit(1)
    return True


def is_launched_rank() -> bool:
    """Whether this process is a rank that a launcher started: a child rank of Lightning's
    script launcher (``LOCAL_RANK`` > 0) or a spawned rank (a multiprocessing child)."""
    return os.environ.get("LOCAL_RANK", "0") != "0" or (
        multiprocessing.parent_process() is not None)


class RanksDieWithLauncher(Callback):
    """In every launched rank, :func:`die_with_parent` before training starts."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if is_launched_rank():
            die_with_parent()
