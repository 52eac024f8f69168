"""Where a run continues from, and whether the recipe may continue it.

A run resumes from the newest good checkpoint of its own directory, else from
``run.resume_from``; the checkpoint must be a swav-train checkpoint whose saved recipe
computes the same thing as the current one (:func:`check_same_recipe`).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytorch_lightning.utilities import rank_zero_only

from swav_plugin.host.checkpoint_files import (
    LAST,
    latest_good_checkpoint,
    read_checkpoint,
    step_checkpoints,
)
from swav_plugin.host.errors import ConfigError
from swav_plugin.host.sections import RunOptions
from swav_plugin.host.training_checkpoint import foreign_content

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
        what = foreign_content(found[1])
        if what:
            key = "" if own else "run.resume_from: "
            raise ConfigError(
                f"{key}'{found[0]}' is {what}, not a swav-train checkpoint of this recipe, so "
                "it cannot be checked against the recipe or resumed; point run.resume_from at "
                "RUN/checkpoints/*.ckpt of a run of this recipe, or start afresh in another "
                "run.output_dir"
            )
        check_same_recipe(found[1]["recipe"], recipe, found[0])
        _warn(f"resuming from {found[0]} (step {found[1].get('global_step', '?')})")
    return found
