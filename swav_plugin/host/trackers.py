"""Experiment trackers beside the run's ``metrics.csv``: TensorBoard, Weights & Biases, MLflow.

A recipe lists them under ``loggers``, as registry nodes (``{name: wandb, project: swav}``).
Each one receives every metric the CSV does and writes under the run directory unless told
otherwise. A resumed run continues where it left off:

- TensorBoard: the same directory, ``RUN/tensorboard``;
- W&B: the same run, by the id drawn at the start;
- MLflow: the same run, by the id MLflow gave it.

The ids are kept in every checkpoint (``logger_ids``, by :class:`Trackers`), so the run that
continues from a checkpoint continues its runs too. Each tracker's package is an extra; a
recipe that names a missing one fails in one line naming the extra.
"""

from __future__ import annotations

import importlib.util
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger

from swav_plugin.host.errors import ConfigError, missing_extra
from swav_plugin.host.registry import LOGGERS

#: Where a checkpoint keeps the trackers' run ids, by tracker name.
IDS_KEY = "logger_ids"


class Tracker(Protocol):
    """What a ``loggers`` node builds: a Lightning logger for a run directory."""

    name: str

    def create(self, run_dir: Path, run_id: str | None, resume_step: int) -> Logger:
        """The logger, continuing run ``run_id`` when one is given, from the checkpoint of
        global step ``resume_step`` (0: a new run)."""

    def run_id(self, logger: Logger) -> str | None:
        """The id a resumed run needs to continue ``logger``'s run (None: nothing to keep)."""


def _require(module: str, tracker: str, extra: str, options: Mapping[str, Any],
             owned: Sequence[str]) -> None:
    if importlib.util.find_spec(module) is None:
        raise missing_extra(f"logger '{tracker}'", module, extra)
    if options.get("log_model"):
        raise ConfigError(f"logger '{tracker}': log_model uploads the files of Lightning's "
                          "ModelCheckpoint, and this runner writes its own (RUN/checkpoints); "
                          "remove log_model and upload those files, or swav-export's")
    taken = [key for key in options if key in owned]
    if taken:
        raise ConfigError(f"logger '{tracker}': '{taken[0]}' is set by the runner (the run "
                          "directory and the resumed run decide it); remove it")


@LOGGERS.register("tensorboard")
class TensorBoard:
    """TensorBoard event files in ``RUN/subdir`` (``tensorboard --logdir RUN/subdir``).

    Args:
        subdir: The directory inside the run directory.
        options: Other ``TensorBoardLogger`` arguments (e.g. ``log_graph``).
    """

    name = "tensorboard"

    def __init__(self, subdir: str = "tensorboard", **options: Any) -> None:
        _require("tensorboard", self.name, "tensorboard", options,
                 ("save_dir", "name", "version", "purge_step"))
        self.subdir, self.options = subdir, options

    def create(self, run_dir: Path, run_id: str | None, resume_step: int) -> Logger:
        # version "": the same directory every time, so a resumed run appends to it; purge_step
        # hides the events a killed run wrote past its checkpoint, which are logged again
        return TensorBoardLogger(save_dir=run_dir, name=self.subdir, version="",
                                 purge_step=resume_step or None, **self.options)

    def run_id(self, logger: Logger) -> str | None:
        return None


@LOGGERS.register("wandb")
class WandB:
    """A Weights & Biases run, its files in ``RUN/wandb``.

    Args:
        project, entity, run_name: Where the run goes and what it is called.
        mode: ``online``, ``offline`` (files only: ``wandb sync`` uploads them later) or
            ``disabled``; ``None``: W&B's own choice (``WANDB_MODE``, else online).
        options: Other ``WandbLogger`` / ``wandb.init`` arguments (e.g. ``tags``).
    """

    name = "wandb"

    def __init__(
        self,
        project: str | None = None,
        entity: str | None = None,
        run_name: str | None = None,
        mode: Literal["online", "offline", "disabled"] | None = None,
        **options: Any,
    ) -> None:
        _require("wandb", self.name, "wandb", options, ("save_dir", "id", "resume", "version"))
        self.project, self.entity, self.run_name, self.mode = project, entity, run_name, mode
        self.options = options

    def create(self, run_dir: Path, run_id: str | None, resume_step: int) -> Logger:
        run_dir.mkdir(parents=True, exist_ok=True)  # wandb refuses a save_dir that is missing
        return WandbLogger(save_dir=str(run_dir), project=self.project, entity=self.entity,
                           name=self.run_name, mode=self.mode, resume="allow",
                           id=run_id or uuid.uuid4().hex[:16], **self.options)

    def run_id(self, logger: Logger) -> str | None:
        return str(logger.version)


@LOGGERS.register("mlflow")
class MLflow:
    """An MLflow run; by default in a file store in ``RUN/mlruns`` (``mlflow ui
    --backend-store-uri RUN/mlruns``; MLflow 3 keeps that store in maintenance mode: give a
    server or database as ``tracking_uri`` for its newer features).

    Args:
        experiment_name: The MLflow experiment.
        tracking_uri: The tracking server or store (default: ``file:RUN/mlruns``).
        run_name: The run's name.
        options: Other ``MLFlowLogger`` arguments (e.g. ``tags``).
    """

    name = "mlflow"

    def __init__(
        self,
        experiment_name: str = "swav",
        tracking_uri: str | None = None,
        run_name: str | None = None,
        **options: Any,
    ) -> None:
        _require("mlflow", self.name, "mlflow", options, ("run_id",))
        self.experiment_name, self.tracking_uri, self.run_name = (
            experiment_name, tracking_uri, run_name)
        self.options = options

    def create(self, run_dir: Path, run_id: str | None, resume_step: int) -> Logger:
        uri = self.tracking_uri
        if uri is None:
            uri = (run_dir.absolute() / "mlruns").as_uri()
            # MLflow 3 keeps its file store only for those who opt in; a local run needs no
            # server, and a tracking_uri leaves the choice to the user
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        return MLFlowLogger(experiment_name=self.experiment_name, tracking_uri=uri,
                            run_name=self.run_name, run_id=run_id, **self.options)

    def run_id(self, logger: Logger) -> str | None:
        return logger.run_id


def create_loggers(
    trackers: Sequence[Tracker], run_dir: Path, ids: Mapping[str, str | None],
    resume_step: int = 0,
) -> list[Logger]:
    """The trackers' loggers for ``run_dir``, continuing the runs ``ids`` names from the
    checkpoint of ``resume_step``."""
    names = [tracker.name for tracker in trackers]
    repeated = next((name for name in names if names.count(name) > 1), None)
    if repeated:
        raise ConfigError(f"loggers: '{repeated}' is listed twice; list each logger once")
    return [tracker.create(run_dir, ids.get(tracker.name), resume_step) for tracker in trackers]


class Trackers(Callback):
    """The recipe's trackers and their loggers; keeps their run ids in every checkpoint (under
    :data:`IDS_KEY`) and makes the loggers that continue them (:meth:`continue_runs`)."""

    def __init__(self, trackers: Sequence[Tracker], run_dir: Path) -> None:
        self.trackers, self.run_dir = list(trackers), run_dir
        self.loggers = create_loggers(self.trackers, run_dir, {})

    def continue_runs(self, ids: Mapping[str, str | None], resume_step: int) -> list[Logger]:
        """Loggers that continue the runs of a checkpoint's ``ids``, saved at global step
        ``resume_step`` (they replace the new ones: the trainer must be given them)."""
        self.loggers = create_loggers(self.trackers, self.run_dir, ids, resume_step)
        return self.loggers

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[IDS_KEY] = {tracker.name: tracker.run_id(logger)
                               for tracker, logger in zip(self.trackers, self.loggers,
                                                          strict=True)}
