"""Build the method, the data module and the trainer of a resolved recipe, writing nothing.

The runner's callbacks (checkpoints, preemption, the recipe in every checkpoint, data wait,
the non-finite guard, the progress bar) come first, then the recipe's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from swav_plugin.host.atomic import save_yaml_atomic
from swav_plugin.host.checkpoint_io import VerifiedCheckpointIO
from swav_plugin.host.checkpoints import Checkpoints
from swav_plugin.host.data import DataModule
from swav_plugin.host.data_wait import DataWaitMonitor
from swav_plugin.host.device_checks import check_devices_present, state_bytes
from swav_plugin.host.errors import ConfigError
from swav_plugin.host.health import NonFiniteGuard
from swav_plugin.host.lightning_internals import check_internals
from swav_plugin.host.metrics_log import RunLogger
from swav_plugin.host.preemption import Preemption
from swav_plugin.host.progress import LoggingStepProgressBar
from swav_plugin.host.quoting import shown
from swav_plugin.host.rank_lifetime import RanksDieWithLauncher
from swav_plugin.host.recipe import build_component, call_with_kwargs
from swav_plugin.host.sections import GROUP_SIZE_KEY, RunOptions, launch_world_size
from swav_plugin.host.sync_batchnorm import GroupedSyncBatchNorm
from swav_plugin.host.trackers import Trackers


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
    cannot run is refused before Lightning starts or anything is written. A dry run's
    ``planned_world_size`` also goes to the method's ``plan_launch(world_size)``, if it has one,
    so that it plans for the launch its one device stands in for.
    """
    options = RunOptions(**recipe["run"])
    if options.seed is not None:
        pl.seed_everything(options.seed, workers=True, verbose=False)
    method = build_component(recipe["method"], "method")
    data = call_with_kwargs(DataModule, {**recipe["data"], "seed": options.seed}, "data")
    plan_launch = getattr(method, "plan_launch", None)
    if planned_world_size is not None and callable(plan_launch):
        plan_launch(planned_world_size)
    check_launch = getattr(method, "check_launch", None)
    if callable(check_launch):
        world_size = planned_world_size or launch_world_size(recipe["trainer"])
        check_launch(data, recipe["trainer"], world_size)
    check_devices_present(recipe["trainer"], state_bytes(method),
                          options.allow_cpu_oversubscription)
    listed = [build_component(node, "callback", f"callbacks[{i}]")
              for i, node in enumerate(recipe.get("callbacks", []))]
    out = options.output_dir
    trackers = Trackers([build_component(node, "logger", f"loggers[{i}]")
                         for i, node in enumerate(recipe.get("loggers", []))], out)
    checkpoints = Checkpoints(
        out / "checkpoints", options.checkpoint_every_n_steps, options.keep_checkpoints
    )
    callbacks = [checkpoints, Preemption(checkpoints), RanksDieWithLauncher(),
                 RecipeCallback(recipe, out),
                 DataWaitMonitor(), NonFiniteGuard(options.max_nonfinite_steps), trackers]
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
            logger=[RunLogger(out), *trackers.loggers],
            callbacks=callbacks,
            plugins=plugins,
        )
    except (MisconfigurationException, ValueError, TypeError, RuntimeError) as exc:
        raise ConfigError(f"trainer: {exc}") from exc
    except ImportError as exc:  # e.g. accelerator: tpu without torch_xla
        section = recipe["trainer"]
        raise ConfigError(
            f"trainer: accelerator={shown(section.get('accelerator', 'auto'))}, "
            f"strategy={shown(section.get('strategy', 'auto'))} need a package that is not "
            f"installed ({exc}); install it or choose another accelerator / strategy"
        ) from exc
    check_internals(trainer)
    return method, data, trainer
