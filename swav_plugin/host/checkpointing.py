"""Checkpoints a long run can trust: written atomically, verified on load, kept in a rotation.

- :class:`VerifiedCheckpointIO` writes each checkpoint to a temporary file, flushes it to disk
  and renames it (a crash or a full disk mid-write leaves the previous checkpoint intact), and
  records its SHA-256 beside it (``NAME.sha256``); loading checks that digest, so a truncated or
  altered file is reported by name instead of resuming from garbage. Lightning's own writer
  also renames a temporary file, but first serialises the whole checkpoint in memory, never
  flushes it to disk and records nothing to check it against.
- :class:`Checkpoints` saves ``step=N.ckpt`` every ``every_n_steps`` optimizer steps, at every
  epoch end and when the run is asked to stop (``SIGTERM``, or ``SIGUSR1`` as SLURM sends before
  a time limit): then it saves at the next step boundary (the ranks of a DDP run agree on it
  at every step over a CPU process group) and the process exits with :data:`PREEMPTED_EXIT`.
  It keeps the newest ``keep`` checkpoints and points ``last.ckpt`` at the newest one.
- The global random generators of every rank go into each checkpoint and are set again when
  the run resumes (:mod:`.rng`), for methods that draw from them.
- :func:`latest_good_checkpoint` finds where to resume: the newest checkpoint that verifies,
  falling back to older ones with a warning naming each bad file.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import signal
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import Checkpoint, TQDMProgressBar
from pytorch_lightning.utilities import rank_zero_info
from pytorch_lightning.utilities.exceptions import SIGTERMException

from swav_plugin.host.atomic import atomic_path, file_digest, write_atomic
from swav_plugin.host.errors import ConfigError
from swav_plugin.host.metrics_log import RunLogger
from swav_plugin.host.rng import rng_states, set_rng_states

#: Exit status of a run that stopped on a signal after saving a checkpoint (``EX_TEMPFAIL``:
#: "try again"): running the same command resumes it.
PREEMPTED_EXIT = 75
LAST = "last.ckpt"
_STEP_NAME = re.compile(r"^step=(\d+)\.ckpt$")
#: The fix of every file that is not a training checkpoint.
NEEDED = ("this needs a checkpoint written by swav-train (RUN/checkpoints/*.ckpt), which carries "
          "the recipe that rebuilds its model")
#: Weights-only refusals of an object that would run code (other refusals: a corrupt file).
_REFUSED = re.compile(r"GLOBAL|unrecognized function|allowlisted")


class CheckpointError(ConfigError):
    """A checkpoint that is missing, truncated, corrupt or unsafe to load."""


class NotACheckpoint(CheckpointError):
    """A file that is something else: exported weights, a bare object, or pickled code.

    ``problem`` says what the file is; the message adds what is needed instead.
    """

    def __init__(self, problem: str) -> None:
        super().__init__(f"{problem}; {NEEDED}")
        self.problem = problem


def step_checkpoint_name(step: int) -> str:
    """File name of the checkpoint after ``step`` optimizer steps (sorts by step)."""
    return f"step={step:09d}.ckpt"


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def write_checkpoint(checkpoint: dict[str, Any], path: Path) -> None:
    """Save ``checkpoint`` to ``path`` atomically, flushed to disk, with its SHA-256 beside it."""
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # on disk before the rename makes it the checkpoint
        digest = file_digest(tmp)
    write_atomic(_digest_path(path), lambda f: f.write(f"{digest}  {path.name}\n"))
    with contextlib.suppress(OSError):  # the rename itself durable (not possible everywhere)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def is_safetensors(path: Path) -> bool:
    """Whether ``path`` opens as safetensors do: an 8-byte little-endian length, then JSON."""
    with path.open("rb") as f:
        head = f.read(9)
    return (len(head) == 9 and head[8:] == b"{"
            and 8 + int.from_bytes(head[:8], "little") <= path.stat().st_size)


def _load_error(exc: Exception) -> str:
    """``Type: first sentence`` of a load error; of PyTorch's many-line weights-only message,
    the reason it quotes (e.g. the global it refused)."""
    text = str(exc).partition("WeightsUnpickler error:")[2] or str(exc)
    lines = text.strip().splitlines()
    return f"{type(exc).__name__}: {lines[0].split('. ')[0]}" if lines else type(exc).__name__


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` after checking its recorded SHA-256.

    The one reader of checkpoints (training resume, the eval tools, ``swav-export``). Raises
    :class:`CheckpointError` (one line naming the file) when it is missing, exported weights,
    does not match its digest, is truncated or corrupt, or holds objects that only an unsafe
    load could build (a pickled callable would run code).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist; train first or fix the path")
    real = path.resolve()  # last.ckpt may be re-pointed meanwhile: read one file throughout
    if is_safetensors(real):
        raise NotACheckpoint(
            f"'{path}' is a safetensors file of exported weights (e.g. from swav-export), not "
            "the training checkpoint"
        )
    recorded = _digest_path(real)
    if recorded.is_file() and file_digest(real) != recorded.read_text().partition(" ")[0]:
        raise CheckpointError(
            f"checkpoint '{path}' is truncated or corrupt: its SHA-256 differs from the one "
            f"recorded when it was written ({recorded.name}); copy it again or use another "
            "checkpoint"
        )
    try:
        with warnings.catch_warnings():  # whatever torch.load warns of, the outcome is reported
            warnings.simplefilter("ignore")
            checkpoint = torch.load(real, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        reason = _load_error(exc)
        if isinstance(exc, pickle.UnpicklingError) and _REFUSED.search(reason):
            raise NotACheckpoint(
                f"checkpoint '{path}' cannot be loaded safely ({reason}): it holds objects "
                "beyond tensors and plain values, and loading them could run code"
            ) from None
        raise CheckpointError(  # empty, cut short, or not a torch file at all
            f"checkpoint '{path}' is truncated or corrupt ({real.stat().st_size} bytes; "
            f"{reason}); copy it again or use another checkpoint"
        ) from None
    if not isinstance(checkpoint, dict):
        raise NotACheckpoint(
            f"'{path}' is a {type(checkpoint).__name__}, not a training checkpoint"
        )
    return checkpoint


def read_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by swav-train (see :func:`read_checkpoint`): a state dict and the
    recipe that rebuilds its model. :class:`NotACheckpoint` says what any other file holds."""
    checkpoint = read_checkpoint(path)
    what = foreign_content(checkpoint)
    if what:
        raise NotACheckpoint(f"'{path}' is {what}, not a swav-train checkpoint")
    return checkpoint


def _entries(state: dict[str, Any]) -> str:
    return f"{len(state)} entries, e.g. '{next(iter(state))}'" if state else "no entries"


def _named(node: Any) -> bool:
    return isinstance(node, dict) and "name" in node


def foreign_content(checkpoint: dict[str, Any]) -> str:
    """What a loaded file holds when it is not a swav-train checkpoint; '' when it is one."""
    state, recipe = checkpoint.get("state_dict"), checkpoint.get("recipe")
    if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return f"a bare state dict ({_entries(checkpoint)})"
    if not isinstance(state, dict):
        keys = ", ".join(map(str, list(checkpoint)[:10])) or "none"
        return f"a mapping without a state_dict (keys: {keys})"
    if recipe is None:
        return f"a Lightning checkpoint without a recipe (state_dict of {_entries(state)})"
    data = recipe.get("data") if isinstance(recipe, dict) else None
    if not (isinstance(data, dict) and _named(data.get("dataset"))
            and _named(recipe.get("method"))):
        return "a checkpoint whose recipe lacks a named 'method' or 'data.dataset'"
    return ""


class VerifiedCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O through :func:`write_checkpoint` and :func:`read_checkpoint`."""

    def __init__(self) -> None:
        self._preloaded: tuple[Path, dict[str, Any]] | None = None

    def preload(self, path: Path, checkpoint: dict[str, Any]) -> None:
        """Hand over a checkpoint already read and verified: its first load returns it."""
        self._preloaded = (path, checkpoint)

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        write_checkpoint(checkpoint, Path(path))

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        if self._preloaded is not None and Path(path).resolve() == self._preloaded[0].resolve():
            checkpoint, self._preloaded = self._preloaded[1], None
            return checkpoint
        return read_checkpoint(path, map_location or "cpu")

    def remove_checkpoint(self, path: Any) -> None:
        Path(path).unlink(missing_ok=True)
        _digest_path(Path(path)).unlink(missing_ok=True)


def step_checkpoints(directory: Path) -> list[Path]:
    """The ``step=N.ckpt`` files of ``directory``, newest (highest step) first."""
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if _STEP_NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_STEP_NAME.match(p.name).group(1)), reverse=True)


def latest_good_checkpoint(
    directory: Path, warn: Callable[[str], None]
) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint in ``directory`` that loads and verifies, and its contents.

    The bad ones skipped on the way to a good one are reported through ``warn``; ``None`` when
    there are none at all; :class:`CheckpointError` (one line) when there are some but none
    is good.
    """
    candidates = step_checkpoints(directory)
    legacy = directory / LAST
    if legacy.is_file() and not legacy.is_symlink():  # written by an earlier version
        candidates.append(legacy)
    problems: list[str] = []
    for path in candidates:
        try:
            found = path, read_checkpoint(path)
        except CheckpointError as exc:
            problems.append(str(exc))
            continue
        for problem in problems:
            warn(f"{problem}; falling back to the previous checkpoint")
        return found
    if candidates:
        raise CheckpointError(
            f"none of the {len(candidates)} checkpoints in '{directory}' can be resumed from "
            f"(newest: {problems[0]}); move the directory away to start afresh"
        )
    return None


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
    """Saves ``step=N.ckpt`` periodically, at epoch ends and on preemption; keeps a rotation.

    Args:
        directory: Where the checkpoints go.
        every_n_steps: Optimizer steps between mid-epoch checkpoints; ``None``: epoch ends only.
        keep: How many of the newest checkpoints to keep (at least 1; 2 leaves a fallback).

    Attributes:
        preempted: Whether the run stopped on a signal (after saving a checkpoint).
    """

    def __init__(self, directory: Path, every_n_steps: int | None = None, keep: int = 2) -> None:
        self.directory = Path(directory)
        self.every_n_steps = every_n_steps
        self.keep = keep
        self.preempted = False
        self._saved_step = -1
        self._rng_to_restore: list[dict[str, Any]] | None = None
        self._signalled = False
        self._agreement: Any = None  # the CPU process group the ranks agree on a stop in

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # SIGTERM (preemption) and SIGUSR1 (SLURM's warning before the time limit) only set a
        # flag, which the ranks agree on at the end of a step (see _stop_requested).
        # Lightning's own SIGTERM handler runs a collective inside the handler, and its loop
        # then tests each rank's flag alone: ranks signalled a moment apart would stop at
        # different steps and pair mismatched collectives.
        def stop_at_next_step(signum: int, frame: Any) -> None:
            if not self._signalled and trainer.strategy.launcher is not None:
                trainer.strategy.launcher.kill(signum)  # pass it on to the local child ranks
            self._signalled = True

        for name in ("SIGTERM", "SIGUSR1"):
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), stop_at_next_step)
        self._agreement = self._agreement_group(trainer)
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
        if self._stop_requested(trainer):
            # Lightning stops at the step boundary right after this hook (after the epoch's
            # end, at an epoch's last step); on_exception saves
            trainer._signal_connector.received_sigterm = True
        last_of_epoch = (trainer.fit_loop.epoch_loop.batch_progress.current.processed
                         >= trainer.num_training_batches)
        # the last batch's checkpoint is the epoch end's (a checkpoint from this hook at an
        # epoch's end confuses Lightning's restart bookkeeping)
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0 and not (
            last_of_epoch
        ):
            with _run_log_only(trainer):  # see _log_epoch_row
                trainer._logger_connector.update_train_step_metrics()
            self.save(trainer)

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

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        group, self._agreement = self._agreement, None
        if (group is not None and group is not torch.distributed.group.WORLD
                and torch.distributed.is_initialized()):
            torch.distributed.destroy_process_group(group)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log_epoch_row(trainer)
        self.save(trainer)

    @staticmethod
    def _log_epoch_row(trainer: pl.Trainer) -> None:
        """Write the epoch's metrics row now, as Lightning would after this hook.

        Lightning writes a step's row after ``on_train_batch_end`` and an epoch's row after
        ``on_train_epoch_end``, the hooks that save checkpoints: a kill between the checkpoint
        and the row would lose the row for good, since the resumed run starts after it. So the
        rows are written first, the same way (the epoch row at the epoch's last step), and
        :class:`~swav_plugin.host.metrics_log.RunLogger` drops the loop's repeat of them.
        Only the CSV gets these early rows; the trackers get each row once, from the loop.
        """
        connector = trainer._logger_connector
        loop = trainer.fit_loop.epoch_loop
        loop._batches_that_stepped -= 1
        try:
            with _run_log_only(trainer):
                connector.log_metrics(connector.metrics["log"])
        finally:
            loop._batches_that_stepped += 1

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if isinstance(exception, SIGTERMException):
            self.save(trainer)
            self.preempted = True

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
            if int(_STEP_NAME.match(path.name).group(1)) > step:
                for part in (path, _digest_path(path)):
                    if part.exists():
                        part.rename(part.with_name(part.name + ".abandoned"))
        for tmp in self.directory.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)

    def _point_last_at(self, path: Path) -> None:
        last = self.directory / LAST
        with atomic_path(last) as tmp:
            tmp.unlink()
            tmp.symlink_to(path.name)  # relative: the run directory can be moved
