"""SwAV's training plan and optimiser [0, 1]: batch-scaled lr, warm-up and cosine decay.

The learning rate is given for a global batch of ``lr_batch_size`` and scaled linearly with
the run's global batch [2] (official: 4.8 at 4096, i.e. 0.3 at 256). Per optimizer step it
rises linearly from ``warmup_start_ratio × lr`` over the warm-up, then decays along a cosine to
``final_lr_ratio × lr`` at the last step, as the official code. The official optimiser is SGD
in LARC [3] with weight decay on every parameter (:class:`~swav_plugin.zoo.larc.LARC`).

- [0]: SwAV, 2020, https://arxiv.org/abs/2006.09882
- [1]: https://github.com/facebookresearch/swav (``main_swav.py``)
- [2]: Goyal et al. 2017, https://arxiv.org/abs/1706.02677 (linear scaling rule)
- [3]: LARS, You et al. 2017, https://arxiv.org/abs/1708.03888
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import pytorch_lightning as pl
import torch
from lightly.utils.scheduler import CosineWarmupScheduler
from torch import nn

from swav_plugin.zoo.larc import LARC

OptimizerName = Literal["lars", "sgd", "adamw"]


@dataclass(frozen=True)
class TrainingPlan:
    """The values a run derives from its recipe and launch: what a user must check first."""

    global_batch: int
    lr: float  # after linear scaling with the global batch
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int

    @classmethod
    def derive(
        cls,
        *,
        batch_size: int,
        world_size: int,
        steps_per_epoch: int,
        total_steps: int,
        lr: float,
        lr_batch_size: int,
        warmup_epochs: float,
    ) -> TrainingPlan:
        """Global batch = per-device batch × world size; lr scaled by global / ``lr_batch_size``."""
        global_batch = batch_size * world_size
        return cls(
            global_batch=global_batch,
            lr=lr * global_batch / lr_batch_size,
            steps_per_epoch=steps_per_epoch,
            total_steps=total_steps,
            warmup_steps=min(total_steps, round(warmup_epochs * steps_per_epoch)),
        )

    def summary(
        self, *, world_size: int, base_lr: float, lr_batch_size: int, frozen_steps: int
    ) -> str:
        """One line stating the plan, the lr's scaling and the prototypes' frozen steps."""
        return (
            f"SwAV: global batch {self.global_batch} ({self.global_batch // world_size} per "
            f"device x {world_size}), lr {base_lr} x {self.global_batch}/"
            f"{lr_batch_size} = {self.lr:g}, {self.warmup_steps} warm-up of {self.total_steps} "
            f"steps, prototypes frozen for {frozen_steps} steps"
        )


def steps_per_epoch(num_training_batches: float, total_steps: int, max_epochs: int | None) -> int:
    """Optimizer steps per epoch, at least 1.

    Args:
        num_training_batches: The trainer's batches per epoch; ``inf`` for a loader without a
            length, whose epochs are then an even share of ``total_steps``.
        total_steps: Optimizer steps of the whole run.
        max_epochs: The trainer's epoch limit (``None`` or 0 count as 1).
    """
    if not math.isfinite(num_training_batches):
        num_training_batches = total_steps // max(1, max_epochs or 1)
    return max(1, int(num_training_batches))


def plan_of_trainer(
    trainer: pl.Trainer, *, world_size: int, lr: float, lr_batch_size: int, warmup_epochs: float
) -> TrainingPlan:
    """The plan of a fit from its Trainer: the total honours ``trainer.max_steps`` as well as
    ``trainer.max_epochs``; the batch size is the DataModule's, else the train loader's.

    Args:
        trainer: The Trainer of the fit (its train loader is loaded if it is not yet).
        world_size: Processes the global batch is spread over.
        lr: Learning rate for a global batch of ``lr_batch_size``.
        lr_batch_size: The batch size ``lr`` refers to.
        warmup_epochs: Epochs of linear warm-up (may be fractional).
    """
    total_steps = int(trainer.estimated_stepping_batches)
    batch_size = getattr(getattr(trainer, "datamodule", None), "batch_size", None)
    if batch_size is None:
        batch_size = trainer.train_dataloader.batch_size
    return TrainingPlan.derive(
        batch_size=batch_size,
        world_size=world_size,
        steps_per_epoch=steps_per_epoch(
            trainer.num_training_batches, total_steps, trainer.max_epochs
        ),
        total_steps=total_steps,
        lr=lr,
        lr_batch_size=lr_batch_size,
        warmup_epochs=warmup_epochs,
    )


def check_optimisation_args(
    *,
    lr: float,
    lr_batch_size: int,
    final_lr_ratio: float,
    warmup_start_ratio: float,
    warmup_epochs: float,
    weight_decay: float,
    momentum: float,
) -> None:
    """Raise ``ValueError`` for a learning rate, schedule or decay value out of its range."""
    for name, value in (("lr", lr), ("lr_batch_size", lr_batch_size)):
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")
    for name, value in (("final_lr_ratio", final_lr_ratio),
                        ("warmup_start_ratio", warmup_start_ratio)):
        if not 0 <= value <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    for name, value in (
        ("warmup_epochs", warmup_epochs), ("weight_decay", weight_decay), ("momentum", momentum)
    ):
        if value < 0:
            raise ValueError(f"{name} must be 0 or more, got {value}")


def build_optimizer(
    parameters: Iterable[nn.Parameter],
    name: OptimizerName,
    *,
    lr: float,
    momentum: float,
    weight_decay: float,
    trust_coefficient: float,
    clip: bool,
    exclude_bias_norm: bool,
) -> torch.optim.Optimizer:
    """The optimiser ``name`` over ``parameters``.

    Args:
        parameters: The parameters to train, all in one group (two with
            ``exclude_bias_norm`` outside LARC, the one-dimensional ones without decay).
        name: ``lars`` (SGD in LARC [3]), ``sgd`` or ``adamw`` (decoupled weight decay).
        lr: The batch-scaled peak learning rate.
        momentum: SGD momentum (``lars`` and ``sgd``).
        weight_decay: Weight decay.
        trust_coefficient: LARS's η (``lars``).
        clip: Clip each parameter's adaptive rate at the learning rate (``lars``).
        exclude_bias_norm: Biases and normalisation weights get no weight decay (nor, with
            ``lars``, any adaptation).
    """
    if name == "lars":
        return LARC(
            parameters,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            trust_coefficient=trust_coefficient,
            clip=clip,
            exclude_bias_norm=exclude_bias_norm,
        )
    params = list(parameters)
    groups = [{"params": params}]
    if exclude_bias_norm:
        groups = [{"params": [p for p in params if p.ndim != 1]},
                  {"params": [p for p in params if p.ndim == 1], "weight_decay": 0.0}]
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    plan: TrainingPlan,
    *,
    final_lr_ratio: float,
    warmup_start_ratio: float,
) -> CosineWarmupScheduler:
    """Per-step multipliers of the peak lr: linear from ``warmup_start_ratio`` to 1 over the
    plan's warm-up, then a cosine to ``final_lr_ratio`` at its last step."""
    return CosineWarmupScheduler(
        optimizer,
        warmup_epochs=plan.warmup_steps,
        max_epochs=plan.total_steps,
        end_value=final_lr_ratio,
        warmup_start_value=warmup_start_ratio,
    )
