"""The runner: recipe → method, data and a Lightning ``Trainer`` → ``fit``.

Usage::

    swav-train RECIPE.yaml [section.key=value ...]
    python -m swav_plugin RECIPE.yaml [section.key=value ...]
    swav-train RECIPE.yaml --dry-run [--steps N]   # rehearse before launch
    swav-train --list            # registered components of every kind
"""

from __future__ import annotations

import argparse
import contextlib
import math
import shutil
import signal
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

from swav_plugin.host.build import build
from swav_plugin.host.device_checks import state_bytes
from swav_plugin.host.dry_run import StepRecord, dry_run
from swav_plugin.host.errors import ConfigError, RunError, one_line, storage_errors
from swav_plugin.host.plugins import load_plugins
from swav_plugin.host.preemption import PREEMPTED_EXIT, was_preempted
from swav_plugin.host.registry import REGISTRIES
from swav_plugin.host.resolve import load_recipe
from swav_plugin.host.resume import resume_point
from swav_plugin.host.run_lock import RunLock
from swav_plugin.host.sections import RunOptions
from swav_plugin.host.trackers import IDS_KEY, Trackers


def run(recipe: dict[str, Any], extra_callbacks: Sequence[Callback] = ()) -> pl.Trainer:
    """Train the method of a resolved recipe, resuming its run when it has checkpoints.

    Rank 0 holds the run directory's :class:`~swav_plugin.host.run_lock.RunLock` throughout.
    Returns the trainer; :func:`~swav_plugin.host.preemption.was_preempted` tells whether it
    stopped on a signal (after saving a checkpoint).
    """
    out = Path(recipe["run"]["output_dir"]).absolute()
    created = out
    while not created.parent.exists():
        created = created.parent
    new_dir = not created.exists()
    method, data, trainer = build(recipe, extra_callbacks)  # a bad recipe fails first
    lock = RunLock(out) if rank_zero_only.rank == 0 else None
    if lock is not None:
        lock.acquire()
    try:
        check_room_for_checkpoints(out / "checkpoints", method,
                                   RunOptions(**recipe["run"]).keep_checkpoints)
        # what the writers do not name themselves (metrics.csv, recipe.yaml)
        with storage_errors("cannot write the run"):
            _fit(recipe, method, data, trainer)
    except ConfigError:
        # a check failed after the run directory was made: leave no empty directory behind
        if new_dir:
            if lock is not None:
                lock.release()
            _remove_empty_dirs(created)
        raise
    finally:
        if lock is not None:
            lock.release()
    skipped = getattr(data.dataset, "skipped_count", 0)
    if skipped:
        print(f"swav-train: warning: {skipped} unreadable image(s) were skipped and replaced by "
              f"the next readable one (rank {trainer.global_rank}); their paths are in the "
              "'skipped unreadable image' lines above", file=sys.stderr)
    return trainer


def _fit(recipe: dict[str, Any], method: pl.LightningModule, data: pl.LightningDataModule,
         trainer: pl.Trainer) -> None:
    """``trainer.fit``, from the resume point when there is one."""
    resume = resume_point(recipe)
    ckpt_path = None
    if resume is not None:
        ckpt_path = resume[0]
        step = resume[1].get("global_step", 0)
        trainer.logger.continue_from(step)
        own = Path(recipe["run"]["output_dir"]).absolute() / "checkpoints"
        if ckpt_path.absolute().parent == own:  # resume_from starts new tracker runs
            trackers = next(c for c in trainer.callbacks if isinstance(c, Trackers))
            ids = resume[1].get(IDS_KEY, {})
            trainer.loggers = [trainer.logger,
                               *trackers.continue_runs(ids, step)]
        trainer.strategy.checkpoint_io.preload(*resume)  # verified once, not read again
        resume = None  # no second reference: the checkpoint is freed once Lightning restored it
    try:
        with warnings.catch_warnings():
            # The DataModule's state (seed, epoch, batches done) resumes the loader exactly;
            # Lightning only recognises loaders that carry a state themselves.
            warnings.filterwarnings("ignore", "You're resuming from a checkpoint that ended")
            trainer.fit(method, datamodule=data, ckpt_path=ckpt_path)
    except SIGTERMException:
        if not was_preempted(trainer):
            raise SystemExit(128 + signal.SIGTERM) from None  # stopped without a checkpoint


def check_room_for_checkpoints(directory: Path, method: pl.LightningModule, keep: int) -> None:
    """Refuse to start when ``directory``'s file system cannot hold ``keep`` + 1 checkpoints of
    ``method`` (estimated as twice its state: the weights and an optimizer state as large),
    rather than fail at the first checkpoint, hours in."""
    needed = (keep + 1) * 2 * state_bytes(method)
    probe = directory if directory.exists() else directory.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise ConfigError(
            f"run.output_dir '{directory.parent}' has {free / 2**20:.0f} MiB free, but "
            f"{keep + 1} checkpoints of this model take about {needed / 2**20:.0f} MiB "
            "(run.keep_checkpoints + 1 while the newest is written); free space there or "
            "choose another run.output_dir"
        )


def _remove_empty_dirs(root: Path) -> None:
    """Remove ``root`` and the directories below it that hold no file (nothing else)."""
    if not root.is_dir():
        return
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not path.is_symlink():
            with contextlib.suppress(OSError):  # not empty: keep it
                path.rmdir()
    with contextlib.suppress(OSError):
        root.rmdir()


def list_components() -> str:
    """Registered components of every kind, one kind per line."""
    return "\n".join(f"{kind}: {', '.join(reg.names())}" for kind, reg in REGISTRIES.items())


def _dry_run_status(steps: list[StepRecord], expected: int) -> int:
    if len(steps) != expected:
        print(f"swav-train: dry run: {len(steps)} of {expected} steps ran", file=sys.stderr)
        return 1
    if not all(math.isfinite(s.loss) for s in steps):
        print("swav-train: dry run: the loss is not finite", file=sys.stderr)
        return 1
    print("swav-train: dry run passed")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``swav-train``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="swav-train",
        description="Train a self-supervised method from a YAML recipe.",
        epilog="Overrides are dotted keys: trainer.max_epochs=5 data.batch_size=64",
    )
    parser.add_argument("recipe", nargs="?", help="path of the YAML recipe")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides")
    parser.add_argument("--list", action="store_true", help="list registered components")
    parser.add_argument("--dry-run", action="store_true",
                        help="rehearse: random data, --steps optimizer steps on one device, "
                             "shapes / time / memory printed, nothing written")
    parser.add_argument("--steps", type=int, default=2, help="optimizer steps of a dry run")
    args = parser.parse_intermixed_args(argv)  # options may follow the overrides
    try:
        load_plugins()
        if args.list:
            print(list_components())
            return 0
        if args.recipe is None:
            parser.error("the recipe path is required")
        recipe = load_recipe(args.recipe, args.overrides)
        if args.dry_run:
            steps = dry_run(recipe, args.steps)
            return _dry_run_status(steps, args.steps)
        trainer = run(recipe)
    except ConfigError as exc:
        # One line, whatever the message (some come from libraries and span lines).
        message = one_line(exc)
        print(f"swav-train: error: {message}", file=sys.stderr)
        return 2
    except RunError as exc:  # TrainingStopped among them
        print(f"swav-train: error: {one_line(exc)}", file=sys.stderr)
        return 1
    out = Path(recipe["run"]["output_dir"]).resolve()
    if was_preempted(trainer):
        if trainer.is_global_zero:
            print(f"swav-train: stopped by a signal after step {trainer.global_step}; the "
                  f"checkpoint is in {out / 'checkpoints'}; run the same command to resume",
                  file=sys.stderr)
        return PREEMPTED_EXIT
    if trainer.is_global_zero:
        print(f"swav-train: run written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
