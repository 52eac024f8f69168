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
import torch
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

from swav_plugin.host.atomic import save_yaml_atomic
from swav_plugin.host.checkpointing import (
    LAST,
    PREEMPTED_EXIT,
    Checkpoints,
    VerifiedCheckpointIO,
    latest_good_checkpoint,
    read_checkpoint,
    step_checkpoints,
)
from swav_plugin.host.data import DataModule
from swav_plugin.host.data_wait import DataWaitMonitor
from swav_plugin.host.dry_run import StepRecord, dry_run, launch_world_size
from swav_plugin.host.errors import ConfigError
from swav_plugin.host.health import NonFiniteGuard, TrainingStopped
from swav_plugin.host.metrics_log import RunLogger
from swav_plugin.host.plugins import load_plugins
from swav_plugin.host.progress import LoggingStepProgressBar
from swav_plugin.host.recipe import build_component, call_with_kwargs, load_recipe, resolve_kwargs
from swav_plugin.host.registry import REGISTRIES
from swav_plugin.host.sync_batchnorm import GroupedSyncBatchNorm

#: Trainer arguments the runner owns; a recipe configures them through ``run``.
#: The runner's own trainer key: batch norm synchronised within groups of this many ranks.
GROUP_SIZE_KEY = "sync_batchnorm_group_size"
RUNNER_OWNED = {
    "default_root_dir": "set run.output_dir instead",
    "logger": "the runner logs to CSV in run.output_dir",
    "callbacks": "list them in the recipe's top-level 'callbacks' section",
}


#: Recipe keys a resumed run may change. Those of ``trainer`` (e.g. the device count or the
#: precision) may change the result: a warning says so.
RESUMABLE_CHANGES = ("trainer", "run", "callbacks", "data.num_workers", "data.pin_memory")
#: Keys that change only what is shown.
COSMETIC = ("run", "data.num_workers", "data.pin_memory", "trainer.enable_progress_bar",
            "trainer.enable_model_summary", "trainer.log_every_n_steps")


class RunOptions:
    """The ``run`` section of a recipe.

    Args:
        output_dir: Directory for the resolved recipe, logs and checkpoints.
        seed: Seed of the model's initialisation, the data order and every augmentation;
            ``None``: drawn at random (and kept in the checkpoints).
        resume: Continue from the newest good checkpoint in ``output_dir`` when there is one
            (so the same command, run again after a crash or preemption, picks up where the
            run stopped); ``false`` refuses to reuse a directory that holds checkpoints.
        resume_from: A checkpoint of this recipe to start from when ``output_dir`` has no
            checkpoints yet (model, optimizer, schedule, data position, seeds and the method's
            own state, e.g. SwAV's queues); once it has, the run continues from its own.
        checkpoint_every_n_steps: Optimizer steps between mid-epoch checkpoints (a checkpoint
            is also written at every epoch end and when the run is stopped by a signal).
        keep_checkpoints: How many of the newest checkpoints to keep.
        max_nonfinite_steps: Steps with non-finite gradients are skipped; this many in a row
            stop the run (see :mod:`swav_plugin.host.health`).
    """

    def __init__(
        self,
        output_dir: str = "runs/default",
        seed: int | None = 0,
        resume: bool = True,
        resume_from: str | None = None,
        checkpoint_every_n_steps: int | None = 500,
        keep_checkpoints: int = 2,
        max_nonfinite_steps: int = 20,
    ) -> None:
        own = Path(output_dir) / "checkpoints"
        if resume_from is not None and not Path(resume_from).is_file() and not (
            resume and step_checkpoints(own)
        ):
            raise ConfigError(
                f"run.resume_from: checkpoint '{resume_from}' does not exist; fix the path"
            )
        if checkpoint_every_n_steps is not None and checkpoint_every_n_steps < 1:
            raise ConfigError(
                f"run.checkpoint_every_n_steps: expected a positive number of steps or null "
                f"(epoch ends only), got {checkpoint_every_n_steps}"
            )
        if keep_checkpoints < 1:
            raise ConfigError(
                f"run.keep_checkpoints: expected at least 1 (2 keeps a fallback), got "
                f"{keep_checkpoints}"
            )
        if max_nonfinite_steps < 1:
            raise ConfigError(
                f"run.max_nonfinite_steps: expected at least 1, got {max_nonfinite_steps}"
            )
        self.output_dir = Path(output_dir)
        self.seed = seed
        self.resume = resume
        self.resume_from = resume_from
        self.checkpoint_every_n_steps = checkpoint_every_n_steps
        self.keep_checkpoints = keep_checkpoints
        self.max_nonfinite_steps = max_nonfinite_steps


def check_trainer_section(section: Mapping[str, Any]) -> dict[str, Any]:
    """Check the ``trainer`` section against ``pl.Trainer``'s signature and types."""
    for key, why in RUNNER_OWNED.items():
        if key in section:
            raise ConfigError(
                f"trainer.{key} cannot be set in a recipe (got {section[key]!r}): {why}"
            )
    group_size = section.get(GROUP_SIZE_KEY)
    lightning = {k: v for k, v in section.items() if k != GROUP_SIZE_KEY}
    checked = resolve_kwargs(pl.Trainer, lightning, "trainer")
    if group_size is not None:
        _check_group_size(group_size, section)
    for key, allowed in (("devices", "a positive number, -1 (all), 'auto' or a list of ids"),
                         ("num_nodes", "a positive number")):
        value = section.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value < 1 and value != -1:
            raise ConfigError(f"trainer.{key}: expected {allowed}, got {value}")
    return {**{k: v for k, v in checked.items() if k in section},
            **({GROUP_SIZE_KEY: group_size} if group_size is not None else {})}


def _check_group_size(group_size: Any, section: Mapping[str, Any]) -> None:
    key = f"trainer.{GROUP_SIZE_KEY}"
    if not isinstance(group_size, int) or isinstance(group_size, bool) or group_size < 1:
        raise ConfigError(f"{key}: expected a positive number of ranks, got {group_size!r}")
    if not section.get("sync_batchnorm"):
        raise ConfigError(f"{key} groups synchronised batch norm: set trainer.sync_batchnorm: "
                          "true, or remove it")
    world = launch_world_size(section)
    if world is not None and world % group_size:
        raise ConfigError(f"{key}: {group_size} does not divide the launch's {world} ranks "
                          "(devices x num_nodes); choose a divisor, e.g. trainer.devices")


def check_devices_present(section: Mapping[str, Any]) -> None:
    """Refuse a GPU recipe on a machine without (enough) GPUs, in one line naming the fix."""
    accelerator = section.get("accelerator", "auto")
    if accelerator not in ("gpu", "cuda"):
        return
    if accelerator == "gpu" and torch.backends.mps.is_available():
        return  # Lightning's 'gpu' is Apple's MPS there
    available = torch.cuda.device_count()
    if available == 0:
        raise ConfigError(
            f"trainer.accelerator: {accelerator!r} but no GPU is available on this machine "
            "(torch.cuda.device_count() is 0); set trainer.accelerator: cpu, or run on a "
            "machine with a GPU"
        )
    devices = section.get("devices", "auto")
    if isinstance(devices, int) and not isinstance(devices, bool) and devices > available:
        raise ConfigError(
            f"trainer.devices: {devices} GPUs asked for but this machine has {available}; set "
            f"trainer.devices to at most {available} (or -1: all of them)"
        )


class RecipeCallback(Callback):
    """Saves the resolved recipe beside the run and inside every checkpoint."""

    def __init__(self, recipe: dict[str, Any], output_dir: Path) -> None:
        self.recipe = recipe
        self.output_dir = output_dir

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            save_yaml_atomic(self.recipe, self.output_dir / "recipe.yaml")

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint["recipe"] = self.recipe


def build(
    recipe: dict[str, Any],
    extra_callbacks: Sequence[Callback] = (),
    planned_world_size: int | None = None,
) -> tuple[pl.LightningModule, DataModule, pl.Trainer]:
    """Build the method, the data and the trainer of a resolved recipe; writes nothing.

    A method's ``check_launch(datamodule, trainer_section, world_size)``, if it has one, runs
    before the Trainer is built, with ``planned_world_size`` (a dry run's launch) or the
    recipe's ``devices × num_nodes`` (``None`` when not stated as numbers): a recipe that
    cannot run is refused before Lightning starts or anything is written.
    """
    options = RunOptions(**recipe["run"])
    if options.seed is not None:
        pl.seed_everything(options.seed, workers=True, verbose=False)
    method = build_component(recipe["method"], "method")
    data = call_with_kwargs(DataModule, recipe["data"], "data")
    data.seed = options.seed
    if planned_world_size is not None and hasattr(method, "planned_world_size"):
        method.planned_world_size = planned_world_size
    check_launch = getattr(method, "check_launch", None)
    if callable(check_launch):
        world_size = planned_world_size or launch_world_size(recipe["trainer"])
        check_launch(data, recipe["trainer"], world_size)
    check_devices_present(recipe["trainer"])
    listed = [build_component(node, "callback", f"callbacks[{i}]")
              for i, node in enumerate(recipe.get("callbacks", []))]
    out = options.output_dir
    checkpoints = Checkpoints(
        out / "checkpoints", options.checkpoint_every_n_steps, options.keep_checkpoints
    )
    callbacks = [checkpoints, RecipeCallback(recipe, out), DataWaitMonitor(),
                 NonFiniteGuard(options.max_nonfinite_steps)]
    if recipe["trainer"].get("enable_progress_bar", True):
        # before the recipe's callbacks: its redraw at a batch's start belongs to the
        # logging step before it
        callbacks.append(LoggingStepProgressBar())
    callbacks += [*listed, *extra_callbacks]
    lightning = {k: v for k, v in recipe["trainer"].items() if k != GROUP_SIZE_KEY}
    plugins: list[Any] = [VerifiedCheckpointIO()]
    if recipe["trainer"].get(GROUP_SIZE_KEY) is not None:
        plugins.append(GroupedSyncBatchNorm(recipe["trainer"][GROUP_SIZE_KEY]))
    try:
        trainer = pl.Trainer(
            **lightning,
            default_root_dir=out,
            logger=RunLogger(out),
            callbacks=callbacks,
            plugins=plugins,
        )
    except (MisconfigurationException, ValueError, TypeError, RuntimeError) as exc:
        raise ConfigError(f"trainer: {exc}") from exc
    except ImportError as exc:  # e.g. accelerator: tpu without torch_xla
        section = recipe["trainer"]
        raise ConfigError(
            f"trainer: accelerator={section.get('accelerator', 'auto')!r}, "
            f"strategy={section.get('strategy', 'auto')!r} need a package that is not "
            f"installed ({exc}); install it or choose another accelerator / strategy"
        ) from exc
    return method, data, trainer


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

    Returns the trainer; ``trainer.checkpoint_callback.preempted`` tells whether it stopped on
    a signal (after saving a checkpoint).
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
        if not trainer.checkpoint_callback.preempted:
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
    except TrainingStopped as exc:
        print(f"swav-train: error: {exc}", file=sys.stderr)
        return 1
    out = Path(recipe["run"]["output_dir"]).resolve()
    if trainer.checkpoint_callback.preempted:
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
