"""The SwAV method: a LightningModule wiring backbone, head, queue and loss [0].

One step: one backbone pass per crop resolution → head (unit-norm embeddings, prototype
scores) → Sinkhorn codes of the crops for assignment (with the queue's recomputed scores
when it is full) → swapped prediction loss → queue update. Around it: prototypes re-normalised
before every step and frozen for ``head.freeze_prototypes_iters`` optimizer steps; the
optimiser and its schedule of :mod:`~swav_plugin.swav.training_plan`; the start-up checks of
:mod:`~swav_plugin.swav.launch_checks`; the metrics and collapse watch of
:mod:`~swav_plugin.swav.assignment_metrics`. Most of this file's length is the
constructor's documentation of every recipe key, which LightningCLI shows as its help.

- [0]: SwAV, 2020, https://arxiv.org/abs/2006.09882
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor, nn

from swav_plugin.host.registry import BACKBONES, HEADS, LOSSES, METHODS, QUEUES
from swav_plugin.swav import launch_checks
from swav_plugin.swav.assignment_metrics import (
    AssignmentMetrics,
    assigned_scores,
    loss_over_ln_k,
    usage_entropy,
)
from swav_plugin.swav.head import SwAVHead
from swav_plugin.swav.loss import SwAVLoss, SwAVLossOutput
from swav_plugin.swav.queue import (
    SwAVQueue,
    exclude_from_ddp_broadcast,
    gather_rank_queues,
    rank_queue_state,
)
from swav_plugin.swav.training_plan import (
    OptimizerName,
    TrainingPlan,
    build_optimizer,
    build_scheduler,
    check_optimisation_args,
    plan_of_trainer,
)


@METHODS.register("swav")
class SwAV(pl.LightningModule):
    """SwAV pretraining.

    Args:
        backbone: Feature extractor with a ``num_features`` attribute (e.g. ``resnet50``).
        head: :class:`SwAVHead` (projection + prototypes). In a recipe, ``head.input_dim``
            may be left out: it is then the backbone's ``num_features``
            (:meth:`derive_kwargs`).
        loss: :class:`SwAVLoss`; default settings when omitted.
        queue: :class:`SwAVQueue`, or ``None`` for no queue.
        optimizer: ``lars``: SGD in LARC, as the official code (:mod:`swav_plugin.zoo.larc`);
            plain ``sgd``; or ``adamw`` (PyTorch's, betas (0.9, 0.999), decoupled weight
            decay), the usual choice for vision transformers.
        lr: Learning rate for a global batch of ``lr_batch_size``; scaled linearly.
        lr_batch_size: The batch size ``lr`` refers to (official: 4.8 at 4096, i.e. 0.3 at 256).
        final_lr_ratio: Final learning rate as a fraction of the peak (official: 1/1000).
        warmup_epochs: Epochs of linear warm-up (may be fractional).
        warmup_start_ratio: The warm-up's starting learning rate as a fraction of the peak
            (official 64-GPU scripts: 0.3 / 4.8 = 0.0625; solo-learn: 3e-5 / 0.6 = 5e-5).
        momentum: SGD momentum (``lars`` and ``sgd``).
        weight_decay: Weight decay, on every parameter (as the official code) unless
            ``exclude_bias_norm``.
        lars_trust_coefficient: LARS trust coefficient η (official: 0.001).
        lars_clip: Clip each parameter's adaptive rate at the learning rate (apex's clipping
            mode, solo-learn's ``clip_lr``) instead of scaling by it (official: off).
        exclude_bias_norm: Biases and normalisation weights (one-dimensional parameters) get
            no weight decay and, with ``lars``, no adaptation (solo-learn's
            ``exclude_bias_n_norm``; official: off).
        channels_last: Run the backbone in channels-last memory format (faster convolutions
            with bf16 / fp16 on tensor-core GPUs).
        compile_backbone: Compile the backbone with ``torch.compile`` (first steps are slow
            while it compiles; checkpoints keep the plain parameter names).
        collapse_prototypes, collapse_share, collapse_patience_steps: Warn of collapse when
            the ``collapse_prototypes`` most used prototypes take at least ``collapse_share``
            of the assigned crops (by argmax of the scores) at every logging step for
            ``collapse_patience_steps`` steps. Logged as ``train/top_prototypes_share``.
    """

    def __init__(
        self,
        backbone: Annotated[nn.Module, BACKBONES],
        head: Annotated[SwAVHead, HEADS],
        loss: Annotated[SwAVLoss, LOSSES] | None = None,
        queue: Annotated[SwAVQueue, QUEUES] | None = None,
        optimizer: OptimizerName = "lars",
        lr: float = 0.6,
        lr_batch_size: int = 256,
        final_lr_ratio: float = 0.001,
        warmup_epochs: float = 10.0,
        warmup_start_ratio: float = 0.0,
        momentum: float = 0.9,
        weight_decay: float = 1e-6,
        lars_trust_coefficient: float = 0.001,
        lars_clip: bool = False,
        exclude_bias_norm: bool = False,
        channels_last: bool = False,
        compile_backbone: bool = False,
        collapse_prototypes: int = 3,
        collapse_share: float = 0.9,
        collapse_patience_steps: int = 200,
    ) -> None:
        super().__init__()
        check_optimisation_args(
            lr=lr, lr_batch_size=lr_batch_size, final_lr_ratio=final_lr_ratio,
            warmup_start_ratio=warmup_start_ratio, warmup_epochs=warmup_epochs,
            weight_decay=weight_decay, momentum=momentum,
        )
        self.assignment_metrics = AssignmentMetrics(
            collapse_prototypes, collapse_share, collapse_patience_steps
        )
        if lars_clip and optimizer != "lars":
            raise ValueError(f"lars_clip applies to optimizer 'lars', not {optimizer!r}; "
                             "remove method.lars_clip or set method.optimizer: lars")
        self.save_hyperparameters(ignore=["backbone", "head", "loss", "queue"])
        self.backbone = backbone
        self.head = head
        self.loss = loss if loss is not None else SwAVLoss()
        self.queue = queue
        if queue is not None:
            exclude_from_ddp_broadcast(self, "queue")
        self._checked_batch = False
        self._planned_world_size: int | None = None  # see plan_launch
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        if compile_backbone:
            self.backbone.compile()  # in place: state-dict keys stay those of the plain model

    @classmethod
    def derive_kwargs(cls, kwargs: dict[str, Any], path: str) -> dict[str, Any]:
        """Fill a resolved recipe node's missing ``head.input_dim`` with the backbone's
        ``num_features``: the resolved recipe then states the width the run uses."""
        head = kwargs.get("head")
        if not isinstance(head, dict) or head.get("input_dim") is not None:
            return kwargs
        width = launch_checks.backbone_width(kwargs["backbone"], path)
        return {**kwargs, "head": {**head, "input_dim": width}}

    def plan_launch(self, world_size: int) -> None:
        """Plan the batch, the learning rate and the queue for ``world_size`` processes rather
        than the trainer's: a dry run rehearses a launch on one device."""
        self._planned_world_size = world_size

    @property
    def world_size(self) -> int:
        """Processes the global batch is spread over: the planned launch's
        (:meth:`plan_launch`), else the trainer's."""
        return self._planned_world_size or self.trainer.world_size

    def setup(self, stage: str) -> None:
        if stage != "fit":
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        accumulate = {"accumulate_grad_batches": self.trainer.accumulate_grad_batches}
        self.check_launch(datamodule, accumulate, self.world_size)
        if self.queue is not None and self.queue.length > 0:
            local_length = self.queue.length // self.world_size
            self.queue.allocate(len(self.loss.crops_for_assign), local_length, self.head.output_dim)

    def check_launch(
        self, datamodule: Any, trainer: Mapping[str, Any], world_size: int | None
    ) -> None:
        """Start-up checks of a launch: the data, the ``trainer`` settings, the world size.

        The runner calls this before it builds the Trainer (so that a recipe that cannot run
        fails before anything is written); :meth:`setup` again with the trainer's own values.
        ``world_size`` ``None`` (not known yet): the checks that need it wait for ``setup``.
        """
        if launch_checks.check_launch(
            backbone=self.backbone, head=self.head, loss=self.loss,
            queue_length=self._queue_length, datamodule=datamodule, trainer=trainer,
            world_size=world_size,
        ):
            self._checked_batch = True

    @property
    def _queue_length(self) -> int:
        return self.queue.length if self.queue is not None else 0

    def training_plan(self) -> TrainingPlan:
        """Global batch, scaled learning rate and step counts of this run (the total honours
        ``trainer.max_steps`` as well as ``trainer.max_epochs``)."""
        hp = self.hparams
        return plan_of_trainer(
            self.trainer, world_size=self.world_size, lr=hp.lr, lr_batch_size=hp.lr_batch_size,
            warmup_epochs=hp.warmup_epochs,
        )

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        plan = self.training_plan()
        optimizer = build_optimizer(
            self.parameters(), hp.optimizer, lr=plan.lr, momentum=hp.momentum,
            weight_decay=hp.weight_decay, trust_coefficient=hp.lars_trust_coefficient,
            clip=hp.lars_clip, exclude_bias_norm=hp.exclude_bias_norm,
        )
        scheduler = build_scheduler(optimizer, plan, final_lr_ratio=hp.final_lr_ratio,
                                    warmup_start_ratio=hp.warmup_start_ratio)
        rank_zero_info(plan.summary(world_size=self.world_size, base_lr=hp.lr,
                                    lr_batch_size=hp.lr_batch_size,
                                    frozen_steps=self.head.freeze_prototypes_iters))
        schedule = {"scheduler": scheduler, "interval": "step"}
        return {"optimizer": optimizer, "lr_scheduler": schedule}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lightning writes rank 0's state dict, but each rank's queue holds different
        # embeddings: gather them all (every rank runs this hook).
        if self.queue is None or self.queue.local_length == 0:
            return
        all_gather = self.all_gather if self.trainer.world_size > 1 else None
        checkpoint["swav_queues"] = gather_rank_queues(self.queue, all_gather)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        queues = checkpoint.get("swav_queues")
        if queues is None:
            return
        rank = getattr(getattr(self, "_trainer", None), "global_rank", 0)
        for name, value in rank_queue_state(queues, rank).items():
            checkpoint["state_dict"][f"queue.{name}"] = value

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.head.normalize_prototypes()

    def on_after_backward(self) -> None:
        self.head.drop_prototype_grads(self.global_step)

    def forward(self, images: Tensor) -> Tensor:
        """Backbone features of a batch of images (for evaluation)."""
        return self.backbone(images)

    def training_step(
        self, batch: tuple[list[Tensor], Tensor], batch_idx: int
    ) -> dict[str, Tensor]:
        """The step's loss, and the first crop's backbone features (detached) for callbacks
        such as the online linear probe."""
        groups, labels = batch
        batch_size = labels.shape[0]
        if not self._checked_batch:
            launch_checks.check_crops(groups)
            launch_checks.check_batch(
                batch_size, self.world_size, self._queue_length, self.head.num_prototypes
            )
            self._checked_batch = True
        # one backbone pass per crop resolution
        features = torch.cat(
            [self.backbone(g.contiguous(memory_format=self.memory_format)) for g in groups]
        )
        embeddings, scores = self.head(features)
        if self.global_step == 0 and batch_idx == 0:
            prototypes = torch.cat([p.weight for p in self.head.prototypes])
            launch_checks.check_unit_norm(embeddings, prototypes)

        queue_scores = None
        if self.queue is not None and self.queue.is_full():
            with torch.no_grad():
                queue_scores = self.head.prototype_scores(self.queue.embeddings)
        out = self.loss(scores, batch_size, queue_scores)
        if self.queue is not None and self.queue.is_filling(self.current_epoch):
            num_crops = embeddings.shape[0] // batch_size
            self.queue.push(self.loss.assigned(embeddings.view(num_crops, batch_size, -1)))

        self._log_step(out, scores, batch_size, queue_scores is not None)
        return {"loss": out.loss, "features": features[:batch_size].detach()}

    def _log_step(
        self, out: SwAVLossOutput, scores: list[Tensor], batch_size: int, queue_used: bool
    ) -> None:
        assigned = assigned_scores(scores[0], batch_size, self.loss)
        entropy = usage_entropy(assigned, self.loss.temperature)
        # averaged over each epoch on the device: the per-epoch collapse signal
        self.log("train/usage_entropy_epoch", entropy, on_step=False, on_epoch=True,
                 sync_dist=True, batch_size=batch_size)
        # Step values only on the steps the logger writes: a Python number logged on a GPU
        # run is a host-to-device copy, and every logged value is all-reduced under DDP.
        every = self.trainer.log_every_n_steps
        if not every or (self.global_step + 1) % every != 0:
            return
        # sync_dist: under DDP the logged values are means over the ranks, not rank 0's.
        # not prog_bar: Lightning reads prog_bar metrics back at every step (the runner's
        # bar shows the logged losses on logging steps)
        self.log_dict(
            {
                "train/loss": out.loss,
                "train/loss_over_lnK": loss_over_ln_k(out.head_losses, self.head.num_prototypes),
                "train/usage_entropy": entropy,
                **self.assignment_metrics.usage(assigned, every),
                "train/queue_in_use": float(queue_used),
                # the scheduled, batch-scaled rate: a wrong device count shows here at once
                "train/lr": self.trainer.optimizers[0].param_groups[0]["lr"],
            },
            sync_dist=True,
            batch_size=batch_size,
        )
        self.assignment_metrics.warn_if_collapsed(self.global_step, every)
