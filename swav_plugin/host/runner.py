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
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.loggers import CSVLogger

from swav_plugin.host.atomic import save_yaml_atomic
from swav_plugin.host.data import DataModule
from swav_plugin.host.data_wait import DataWaitMonitor
from swav_plugin.host.dry_run import StepRecord, dry_run, launch_world_size
from swav_plugin.host.errors import ConfigError
from swav_plugin.host.plugins import load_plugins
from swav_plugin.host.recipe import build_component, call_with_kwargs, load_recipe, resolve_kwargs
from swav_plugin.host.registry import REGISTRIES

#: Trainer arguments the runner owns; a recipe configures them through ``run``.
RUNNER_OWNED = {
    "default_root_dir": "set run.output_dir instead",
    "logger": "the runner logs to CSV in run.output_dir",
    "callbacks": "list them in the recipe's top-level 'callbacks' section",
}


class RunOptions:
    """The ``run`` section of a recipe.

    Args:
        output_dir: Directory for the resolved recipe, logs and checkpoints.
        seed: Seed for every random number generator (and DataLoader workers); ``None``: none.
        resume_from: A checkpoint of this recipe to continue from (model, optimizer, schedule,
            loop position and the method's own state, e.g. SwAV's per-rank queues).
    """

    def __init__(
        self, output_dir: str = "runs/default", seed: int | None = 0, resume_from: str | None = None
    ) -> None:
        if resume_from is not None and not Path(resume_from).is_file():
            raise ConfigError(
                f"run.resume_from: checkpoint '{resume_from}' does not exist; fix the path"
            )
        self.output_dir = Path(output_dir)
        self.seed = seed
        self.resume_from = resume_from


def check_trainer_section(section: Mapping[str, Any]) -> dict[str, Any]:
    """Check the ``trainer`` section against ``pl.Trainer``'s signature and types."""
    for key, why in RUNNER_OWNED.items():
        if key in section:
            raise ConfigError(
                f"trainer.{key} cannot be set in a recipe (got {section[key]!r}): {why}"
            )
    checked = resolve_kwargs(pl.Trainer, section, "trainer")
    for key, allowed in (("devices", "a positive number, -1 (all), 'auto' or a list of ids"),
                         ("num_nodes", "a positive number")):
        value = section.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value < 1 and value != -1:
            raise ConfigError(f"trainer.{key}: expected {allowed}, got {value}")
    return {k: v for k, v in checked.items() if k in section}


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
    # A re-run replaces last.ckpt; Lightning would otherwise write last-v1.ckpt beside it.
    checkpoints = ModelCheckpoint(
        dirpath=out / "checkpoints", save_last=True, save_top_k=0, enable_version_counter=False
    )
    callbacks = [checkpoints, RecipeCallback(recipe, out), DataWaitMonitor(), *listed,
                 *extra_callbacks]
    if recipe["trainer"].get("enable_progress_bar", True):
        # The bar reads its metrics back from the device when it redraws: on the logging
        # steps only, not every step, so that it does not stall the GPU.
        refresh = recipe["trainer"].get("log_every_n_steps", 50) or 50
        callbacks.append(TQDMProgressBar(refresh_rate=refresh))
    try:
        trainer = pl.Trainer(
            **recipe["trainer"],
            default_root_dir=out,
            logger=CSVLogger(save_dir=out, name="", version=""),
            callbacks=callbacks,
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


def run(recipe: dict[str, Any], extra_callbacks: Sequence[Callback] = ()) -> pl.Trainer:
    """Train the method of a resolved recipe; returns the fitted trainer."""
    created = Path(recipe["run"]["output_dir"]).absolute()
    while not created.parent.exists():
        created = created.parent
    new_dir = not created.exists()
    method, data, trainer = build(recipe, extra_callbacks)
    try:
        trainer.fit(method, datamodule=data, ckpt_path=recipe["run"].get("resume_from"))
    except ConfigError:
        # A check inside fit (e.g. one that needs the trainer's world size) failed after the
        # logger made the run directory: leave no empty run directory behind.
        if new_dir:
            _remove_empty_dirs(created)
        raise
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
    if trainer.is_global_zero:
        print(f"swav-train: run written to {Path(recipe['run']['output_dir']).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
