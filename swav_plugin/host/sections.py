"""The ``trainer`` and ``run`` sections of a recipe: what they may hold, checked in one line.

``trainer`` is ``pl.Trainer``'s keyword arguments (less those the runner owns) plus the
runner's ``sync_batchnorm_group_size``; ``run`` is :class:`RunOptions`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from swav_plugin.host.checkpoint_files import step_checkpoints
from swav_plugin.host.errors import ConfigError
from swav_plugin.host.quoting import shown
from swav_plugin.host.recipe import resolve_kwargs

#: The runner's own trainer key: batch norm synchronised within groups of this many ranks.
GROUP_SIZE_KEY = "sync_batchnorm_group_size"
#: Trainer arguments the runner owns; a recipe configures them through ``run``.
RUNNER_OWNED = {
    "default_root_dir": "set run.output_dir instead",
    "logger": "the runner logs to CSV in run.output_dir; list TensorBoard, W&B or MLflow in the "
              "recipe's top-level 'loggers' section",
    "callbacks": "list them in the recipe's top-level 'callbacks' section",
}
#: Data module arguments the runner owns.
RUNNER_OWNED_DATA = {"seed": "the data is seeded by run.seed; set run.seed instead"}


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
        allow_cpu_oversubscription: Start more CPU ranks than the machine has cores, or than
            its memory seems to hold (see :mod:`swav_plugin.host.device_checks`).
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
        allow_cpu_oversubscription: bool = False,
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
        self.allow_cpu_oversubscription = allow_cpu_oversubscription


def check_trainer_section(section: Mapping[str, Any]) -> dict[str, Any]:
    """Check the ``trainer`` section against ``pl.Trainer``'s signature and types."""
    group_size = section.get(GROUP_SIZE_KEY)
    lightning = {k: v for k, v in section.items() if k != GROUP_SIZE_KEY}
    checked = resolve_kwargs(pl.Trainer, lightning, "trainer", RUNNER_OWNED)
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
        raise ConfigError(f"{key}: expected a positive number of ranks, got {shown(group_size)}")
    if not section.get("sync_batchnorm"):
        raise ConfigError(f"{key} groups synchronised batch norm: set trainer.sync_batchnorm: "
                          "true, or remove it")
    world = launch_world_size(section)
    if world is not None and world % group_size:
        raise ConfigError(f"{key}: {group_size} does not divide the launch's {world} ranks "
                          "(devices x num_nodes); choose a divisor, e.g. trainer.devices")


def launch_world_size(trainer_section: Mapping[str, Any]) -> int | None:
    """``devices × num_nodes`` when the recipe states them as numbers, else ``None``."""
    devices, nodes = trainer_section.get("devices", 1), trainer_section.get("num_nodes", 1)
    if isinstance(devices, list):
        devices = len(devices)
    if isinstance(devices, int) and devices > 0 and isinstance(nodes, int):
        return devices * nodes
    return None
