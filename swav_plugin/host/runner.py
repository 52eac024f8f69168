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
import signal
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

from swav_plugin.host.build import build
from swav_plugin.host.checkpoint_files import (
    LAST,
    latest_good_checkpoint,
    read_checkpoint,
    step_checkpoints,
)
from swav_plugin.host.dry_run import StepRecord, dry_run
from swav_plugin.host.errors import ConfigError, RunError
from swav_plugin.host.plugins import load_plugins
from swav_plugin.host.preemption import PREEMPTED_EXIT, was_preempted
from swav_plugin.host.registry import REGISTRIES
from swav_plugin.host.resolve import load_recipe
from swav_plugin.host.sections import RunOptions
from swav_plugin.host.trackers import IDS_KEY, Trackers

#: Recipe keys a resumed run may change. Those of ``trainer`` (e.g. the device count or the
#: precision) may change the result: a warning says so.
RESUMABLE_CHANGES = ("trainer", "run", "callbacks", "loggers", "data.num_workers",
                     "data.pin_memory")
#: Keys that change only what is shown.
COSMETIC = ("run", "loggers", "data.num_workers", "data.pin_memory", "trainer.enable_progress_bar",
            "trainer.enable_model_summary", "trainer.log_every_n_steps")


def _differences(saved: Any, current: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two recipes (or sub-trees of them)."""
    if isinstance(saved, Mapping) and isinstance(current, Mapping):
        keys = list(dict.fromkeys([*saved, *current]))
        return [d for k in keys
                for d in _differences(saved.get(k), current.get(k), f"{prefix}{k}.")]
    return [] if saved == current else [prefix.rstrip(".")]


def _under(key: str, prefixes: Sequence[str]) -> bool:
    return any(key == p or key.startswith(f"{p}.") for p in prefixes)


def check_same_recipe(saved: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    """Refuse to resume a checkpoint with a recipe that computes something else; warn when
    a ``trainer`` key changed (the run goes on, but not exactly as it would have)."""
    differences = _differences(saved, current)
    changed = [key for key in differences if not _under(key, RESUMABLE_CHANGES)]
    if changed:
        raise ConfigError(
            f"checkpoint '{path}' was trained with another recipe ({len(changed)} key(s) "
            f"differ, e.g. {changed[0]}); resume with the recipe saved in it, or set "
            "run.output_dir to a new directory to start a new run"
        )
    altered = [key for key in differences if not _under(key, COSMETIC)]
    if altered:
        _warn(f"resuming with {', '.join(altered)} changed: the run continues, but not as "
              "it would have without the interruption (the learning-rate schedule keeps the "
              "length it was planned with)")


def _warn(message: str) -> None:
    if rank_zero_only.rank == 0:
        print(f"swav-train: warning: {message}", file=sys.stderr)


def resume_point(recipe: dict[str, Any]) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint a run continues from, read and verified, or ``None`` for a fresh run.

    ``run.resume_from`` when set; else, with ``run.resume`` (the default), the newest good
    checkpoint of ``run.output_dir`` (older ones are fallbacks for a corrupt newest one).
    A directory with checkpoints and ``run.resume: false`` is refused: nothing is overwritten.
    """
    options = RunOptions(**recipe["run"])
    directory = options.output_dir / "checkpoints"
    own = step_checkpoints(directory) or (directory / LAST).exists()
    if own and not options.resume:
        raise ConfigError(
            f"run.output_dir '{options.output_dir}' holds the checkpoints of an earlier run "
            "and run.resume is false; set run.resume: true to continue it, or choose another "
            "run.output_dir"
        )
    found: tuple[Path, dict[str, Any]] | None = None
    if own:
        # The run's own checkpoints come first, resume_from or not: a requeued job that
        # started from resume_from must continue where it stopped, not start over.
        found = latest_good_checkpoint(directory, _warn)
    elif options.resume_from is not None:
        path = Path(options.resume_from)
        found = (path, read_checkpoint(path))
    if found is not None:
        saved = found[1].get("recipe")
        if saved is not None:
            check_same_recipe(saved, recipe, found[0])
        _warn(f"resuming from {found[0]} (step {found[1].get('global_step', '?')})")
    return found


def run(recipe: dict[str, Any], extra_callbacks: Sequence[Callback] = ()) -> pl.Trainer:
    """Train the method of a resolved recipe, resuming its run when it has checkpoints.

    Returns the trainer; :func:`~swav_plugin.host.preemption.was_preempted` tells whether it
    stopped on a signal (after saving a checkpoint).
    """
    created = Path(recipe["run"]["output_dir"]).absolute()
    while not created.parent.exists():
        created = created.parent
    new_dir = not created.exists()
    method, data, trainer = build(recipe, extra_callbacks)  # a bad recipe fails first
    resume = resume_point(recipe)
    ckpt_path = None
    if resume is not None:
        ckpt_path = resume[0]
        trainer.logger.resume_step = resume[1].get("global_step", 0)
        own = Path(recipe["run"]["output_dir"]).absolute() / "checkpoints"
        if ckpt_path.absolute().parent == own:  # resume_from starts new tracker runs
            trackers = next(c for c in trainer.callbacks if isinstance(c, Trackers))
            ids = resume[1].get(IDS_KEY, {})
            trainer.loggers = [trainer.logger,
                               *trackers.continue_runs(ids, trainer.logger.resume_step)]
        trainer.strategy.checkpoint_io.preload(*resume)  # verified once, not read again
        resume = None  # no second reference: the checkpoint is freed once Lightning restored it
    try:
        with warnings.catch_warnings():
            # The DataModule's state (seed, epoch, batches done) resumes the loader exactly;
            # Lightning only recognises loaders that carry a state themselves.
            warnings.filterwarnings("ignore", "You're resuming from a checkpoint that ended")
            trainer.fit(method, datamodule=data, ckpt_path=ckpt_path)
    except ConfigError:
        # A check inside fit (e.g. one that needs the trainer's world size) failed after the
        # logger made the run directory: leave no empty run directory behind.
        if new_dir:
            _remove_empty_dirs(created)
        raise
    except SIGTERMException:
        if not was_preempted(trainer):
            raise SystemExit(128 + signal.SIGTERM) from None  # stopped without a checkpoint
    skipped = getattr(data.dataset, "skipped_count", 0)
    if skipped:
        print(f"swav-train: warning: {skipped} unreadable image(s) were skipped and replaced by "
              f"the next readable one (rank {trainer.global_rank}); their paths are in the "
              "'skipped unreadable image' lines above", file=sys.stderr)
    return trainer


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
        message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        print(f"swav-train: error: {message}", file=sys.stderr)
        return 2
    except RunError as exc:  # TrainingStopped among them
        print(f"swav-train: error: {' '.join(str(exc).split())}", file=sys.stderr)
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
