"""The SwAV method: a LightningModule wiring backbone, head, queue and loss [0].

One step: one backbone pass per crop resolution → head (unit-norm embeddings, prototype
scores) → Sinkhorn codes of the crops for assignment (with the queue's recomputed scores
when it is full) → swapped prediction loss → queue update. Around it: prototypes re-normalised
before every step and frozen for ``head.freeze_prototypes_iters`` optimizer steps; the
official optimiser, SGD in LARC with weight decay on every parameter
(:class:`~swav_plugin.zoo.larc.LARC`), with a linear warm-up and a cosine decay to
``final_lr_ratio × lr`` (per step, as the official code), the learning rate scaled linearly
with the global batch.

- [0]: SwAV, 2020, https://arxiv.org/abs/2006.09882
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from lightly.utils.scheduler import CosineWarmupScheduler
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from swav_plugin.host.errors import ConfigError
from swav_plugin.host.recipe import build_component
from swav_plugin.host.registry import METHODS
from swav_plugin.swav.head import SwAVHead
from swav_plugin.swav.loss import SwAVLoss
from swav_plugin.swav.queue import SwAVQueue
from swav_plugin.zoo.larc import LARC


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
        backbone: nn.Module,
        head: SwAVHead,
        loss: SwAVLoss | None = None,
        queue: SwAVQueue | None = None,
        optimizer: Literal["lars", "sgd", "adamw"] = "lars",
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
        for name, value in (("collapse_prototypes", collapse_prototypes),
                            ("collapse_patience_steps", collapse_patience_steps)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if not 0 < collapse_share <= 1:
            raise ValueError(f"collapse_share must be in (0, 1], got {collapse_share}")
        if lars_clip and optimizer != "lars":
            raise ValueError(f"lars_clip applies to optimizer 'lars', not {optimizer!r}; "
                             "remove method.lars_clip or set method.optimizer: lars")
        self.save_hyperparameters(ignore=["backbone", "head", "loss", "queue"])
        self.backbone = backbone
        self.head = head
        self.loss = loss if loss is not None else SwAVLoss()
        self.queue = queue
        if queue is not None:
            # DDP broadcasts rank 0's buffers at wrap time and before every forward; the queues
            # are per rank (each holds its own rank's embeddings), so DDP must leave them alone.
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                self, [f"queue.{name}" for name, _ in queue.named_buffers()]
            )
        self._checked_batch = False
        #: The world size of the launch this run rehearses (set by the runner's dry run, which
        #: runs on one device); ``None``: the trainer's own world size.
        self.planned_world_size: int | None = None
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        if compile_backbone:
            self.backbone.compile()  # in place: state-dict keys stay those of the plain model
        # steps in a row (on the device) at which the top prototypes took most of the crops
        self._collapsed_steps: Tensor | None = None

    @classmethod
    def derive_kwargs(cls, kwargs: dict[str, Any], path: str) -> dict[str, Any]:
        """Fill a resolved recipe node's missing ``head.input_dim`` from the backbone.

        The backbone is built on the meta device (no memory, no initialisation work) to read
        its ``num_features``; the resolved recipe then states the width the run uses.
        """
        head = kwargs.get("head")
        if not isinstance(head, dict) or head.get("input_dim") is not None:
            return kwargs
        with torch.device("meta"):
            backbone = build_component(kwargs["backbone"], "backbone", f"{path}.backbone")
        width = getattr(backbone, "num_features", None)
        if not isinstance(width, int):
            raise ConfigError(
                f"{path}.head.input_dim is not set and the backbone "
                f"'{kwargs['backbone']['name']}' has no integer num_features to take it from; "
                f"set {path}.head.input_dim to the width of its features"
            )
        return {**kwargs, "head": {**head, "input_dim": width}}

    @property
    def world_size(self) -> int:
        """Processes the global batch is spread over (the launch's, in a dry run)."""
        return self.planned_world_size or self.trainer.world_size

    # -- start-up checks --------------------------------------------------------------

    def setup(self, stage: str) -> None:
        if stage != "fit":
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        accumulate = {"accumulate_grad_batches": self.trainer.accumulate_grad_batches}
        self.check_launch(datamodule, accumulate, self.world_size)
        if self.queue is not None and self.queue.length > 0:
            self.queue.allocate(
                len(self.loss.crops_for_assign),
                self.queue.length // self.world_size,
                self.head.output_dim,
            )

    def check_launch(
        self, datamodule: Any, trainer: Mapping[str, Any], world_size: int | None
    ) -> None:
        """Start-up checks of a launch: the data, the ``trainer`` settings, the world size.

        The runner calls this before it builds the Trainer (so that a recipe that cannot run
        fails before anything is written); :meth:`setup` again with the trainer's own values.
        ``world_size`` ``None`` (not known yet): the checks that need it wait for ``setup``.
        """
        width = getattr(self.backbone, "num_features", self.head.input_dim)
        if width != self.head.input_dim:
            raise ConfigError(
                f"the backbone outputs {width} features but head.input_dim is "
                f"{self.head.input_dim}; set method.head.input_dim={width}"
            )
        accumulate = trainer.get("accumulate_grad_batches", 1)
        if accumulate != 1:
            raise ConfigError(
                f"gradient accumulation is on (trainer.accumulate_grad_batches={accumulate}) "
                "but Sinkhorn-Knopp would then balance only micro-batches; use more devices or "
                "a queue instead and set it to 1"
            )
        crop_sizes = getattr(getattr(datamodule, "transform", None), "crop_sizes", None)
        if crop_sizes is not None:
            try:
                self.loss.check_num_crops(len(crop_sizes))
            except ValueError as exc:
                raise ConfigError(f"method.loss: {exc}") from None
        batch_size = getattr(datamodule, "batch_size", None)
        if batch_size is not None and world_size is not None:
            self._check_batch(batch_size, world_size)

    @staticmethod
    def _check_crops(groups: list[Tensor]) -> None:
        if any(not g.is_floating_point() for g in groups):
            raise ConfigError(
                f"the crops arrive as {groups[0].dtype}, not normalised: multicrop hands over "
                "uint8 crops for the DataModule to normalise on the device; outside it, apply "
                "transform.normalize_on_device to each crop tensor of the batch"
            )

    def _check_batch(self, batch_size: int, world_size: int) -> None:
        global_batch = batch_size * world_size
        queue_length = self.queue.length if self.queue is not None else 0
        local_length = queue_length // world_size  # what ``setup`` allocates per rank
        if 0 < local_length < batch_size:
            raise ConfigError(
                f"method.queue.length={queue_length} holds {local_length} embeddings per "
                f"rank, fewer than the per-device batch of {batch_size}; raise "
                f"method.queue.length to at least {global_batch}"
            )
        for k in self.head.num_prototypes:
            if global_batch + queue_length < k:
                raise ConfigError(
                    f"global batch {global_batch} + queue {queue_length} < {k} prototypes: the "
                    "equipartition cannot hold (prototypes would go empty); lower "
                    "method.head.num_prototypes or raise the batch size or method.queue.length"
                )
        self._checked_batch = True

    def _check_unit_norm(self, embeddings: Tensor) -> None:
        """Once, at the first step: one read of the device for both checks."""
        all_norms = [v.detach().float().norm(dim=1) for v in (embeddings, self._prototypes())]
        worst = torch.stack([(n - 1).abs().max() for n in all_norms]).tolist()
        for name, error, norms in zip(("embeddings", "prototypes"), worst, all_norms, strict=True):
            if error > 1e-2:
                raise ConfigError(
                    f"SwAV needs unit-norm {name} (norms range {norms.min():.3f}–"
                    f"{norms.max():.3f}); L2-normalise them in the head"
                )

    def _prototypes(self) -> Tensor:
        return torch.cat([p.weight for p in self.head.prototypes])

    # -- optimisation -----------------------------------------------------------------

    def training_plan(self) -> TrainingPlan:
        """Global batch, scaled learning rate and step counts of this run (the total honours
        ``trainer.max_steps`` as well as ``trainer.max_epochs``)."""
        total_steps = int(self.trainer.estimated_stepping_batches)  # loads the train loader
        datamodule = getattr(self.trainer, "datamodule", None)
        batch_size = getattr(datamodule, "batch_size", None)
        if batch_size is None:
            batch_size = self.trainer.train_dataloader.batch_size
        per_epoch = self.trainer.num_training_batches
        if not math.isfinite(per_epoch):  # a loader without a length: epochs of the total
            per_epoch = total_steps // max(1, self.trainer.max_epochs or 1)
        hp = self.hparams
        return TrainingPlan.derive(
            batch_size=batch_size,
            world_size=self.world_size,
            steps_per_epoch=max(1, int(per_epoch)),
            total_steps=total_steps,
            lr=hp.lr,
            lr_batch_size=hp.lr_batch_size,
            warmup_epochs=hp.warmup_epochs,
        )

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        plan = self.training_plan()
        lr, total_steps, warmup_steps = plan.lr, plan.total_steps, plan.warmup_steps
        if hp.optimizer == "lars":
            optimizer: torch.optim.Optimizer = LARC(
                self.parameters(),
                lr=lr,
                momentum=hp.momentum,
                weight_decay=hp.weight_decay,
                trust_coefficient=hp.lars_trust_coefficient,
                clip=hp.lars_clip,
                exclude_bias_norm=hp.exclude_bias_norm,
            )
        else:
            params = list(self.parameters())
            groups = [{"params": params}]
            if hp.exclude_bias_norm:
                groups = [{"params": [p for p in params if p.ndim != 1]},
                          {"params": [p for p in params if p.ndim == 1], "weight_decay": 0.0}]
            if hp.optimizer == "adamw":
                optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=hp.weight_decay)
            else:
                optimizer = torch.optim.SGD(
                    groups, lr=lr, momentum=hp.momentum, weight_decay=hp.weight_decay
                )
        scheduler = CosineWarmupScheduler(
            optimizer,
            warmup_epochs=warmup_steps,
            max_epochs=total_steps,
            end_value=hp.final_lr_ratio,
            warmup_start_value=hp.warmup_start_ratio,
        )
        global_batch = plan.global_batch
        rank_zero_info(
            f"SwAV: global batch {global_batch} ({global_batch // self.world_size} per "
            f"device x {self.world_size}), lr {hp.lr} x {global_batch}/"
            f"{hp.lr_batch_size} = {lr:g}, {warmup_steps} warm-up of {total_steps} steps, "
            f"prototypes frozen for {self.head.freeze_prototypes_iters} steps"
        )
        schedule = {"scheduler": scheduler, "interval": "step"}
        return {"optimizer": optimizer, "lr_scheduler": schedule}

    # -- checkpoints: the queue of every rank -----------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lightning writes rank 0's state dict, but each rank's queue holds different
        # embeddings: gather them all (every rank runs this hook), one row per rank.
        if self.queue is None or self.queue.local_length == 0:
            return
        queues = {"embeddings": self.queue.embeddings, "filled": self.queue.filled}
        if self.trainer.world_size > 1:
            queues = {k: self.all_gather(v) for k, v in queues.items()}
        else:
            queues = {k: v.unsqueeze(0) for k, v in queues.items()}
        checkpoint["swav_queues"] = {k: v.detach().cpu() for k, v in queues.items()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        queues = checkpoint.get("swav_queues")
        if queues is None:
            return
        trainer = getattr(self, "_trainer", None)
        rank = trainer.global_rank if trainer is not None else 0
        state = checkpoint["state_dict"]
        if rank < len(queues["filled"]):
            state["queue.embeddings"] = queues["embeddings"][rank]
            state["queue.filled"] = queues["filled"][rank]
        else:  # more ranks than when saved: this rank's queue starts empty
            state["queue.embeddings"] = torch.zeros_like(queues["embeddings"][0])
            state["queue.filled"] = torch.zeros_like(queues["filled"][0])

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.head.normalize_prototypes()

    def on_after_backward(self) -> None:
        self.head.drop_prototype_grads(self.global_step)

    # -- the step ---------------------------------------------------------------------

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
            self._check_crops(groups)
            self._check_batch(batch_size, self.world_size)
        # one backbone pass per crop resolution
        features = torch.cat(
            [self.backbone(g.contiguous(memory_format=self.memory_format)) for g in groups]
        )
        embeddings, scores = self.head(features)
        if self.global_step == 0 and batch_idx == 0:
            self._check_unit_norm(embeddings)

        queue_scores = None
        if self.queue is not None and self.queue.is_full():
            with torch.no_grad():
                queue_scores = self.head.prototype_scores(self.queue.embeddings)
        out = self.loss(scores, batch_size, queue_scores)
        if self.queue is not None and self.queue.is_filling(self.current_epoch):
            num_crops = embeddings.shape[0] // batch_size
            self.queue.push(self.loss.assigned(embeddings.view(num_crops, batch_size, -1)))

        self._log_step(out.loss, out.head_losses, scores, batch_size, queue_scores is not None)
        return {"loss": out.loss, "features": features[:batch_size].detach()}

    def _log_step(
        self,
        loss: Tensor,
        head_losses: list[Tensor],
        scores: list[Tensor],
        batch_size: int,
        queue_used: bool,
    ) -> None:
        # Collapse shows in the network's own assignments, not in the codes (Sinkhorn forces
        # those to be balanced), so usage is measured on softmax(scores / τ) of the assigned
        # crops. loss / ln K stuck at 1.0 is the classic sign of collapse.
        ks = self.head.num_prototypes
        first = scores[0].detach().float()
        num_crops = first.shape[0] // batch_size
        assigned = self.loss.assigned(first.view(num_crops, batch_size, -1)).flatten(0, 1)
        mean_p = torch.softmax(assigned / self.loss.temperature, dim=1).mean(0)
        usage_entropy = -(mean_p * mean_p.clamp_min(1e-12).log()).sum() / math.log(ks[0])
        # averaged over each epoch on the device: the per-epoch collapse signal
        self.log("train/usage_entropy_epoch", usage_entropy, on_step=False, on_epoch=True,
                 sync_dist=True, batch_size=batch_size)
        # Step values only on the steps the logger writes: a Python number logged on a GPU
        # run is a host-to-device copy, and every logged value is all-reduced under DDP.
        every = self.trainer.log_every_n_steps
        if every and (self.global_step + 1) % every == 0:
            normalized = sum(h.detach() / math.log(k)
                             for h, k in zip(head_losses, ks, strict=True))
            counts = torch.zeros(ks[0], device=first.device)
            counts.index_add_(0, assigned.argmax(1), torch.ones_like(assigned[:, 0]))
            top = counts.topk(min(self.hparams.collapse_prototypes, ks[0])).values.sum()
            top_share = top / counts.sum()
            self._track_collapse(top_share, every)
            # sync_dist: under DDP the logged values are means over the ranks, not rank 0's.
            # not prog_bar: Lightning reads prog_bar metrics back at every step (the runner's
            # bar shows the logged losses on logging steps)
            self.log_dict(
                {"train/loss": loss, "train/loss_over_lnK": normalized / len(ks)},
                sync_dist=True,
                batch_size=batch_size,
            )
            self.log_dict(
                {
                    "train/usage_entropy": usage_entropy,
                    "train/prototypes_used": (counts > 0).sum().float(),  # no torch.unique
                    "train/top_prototypes_share": top_share,
                    "train/queue_in_use": float(queue_used),
                    # the scheduled, batch-scaled rate: a wrong device count shows here at once
                    "train/lr": self.trainer.optimizers[0].param_groups[0]["lr"],
                },
                sync_dist=True,
                batch_size=batch_size,
            )
            self._warn_if_collapsed(every)

    def _track_collapse(self, top_share: Tensor, every: int) -> None:
        """Count, on the device, the steps in a row whose top prototypes took most crops."""
        collapsed = (top_share >= self.hparams.collapse_share).long()
        if self._collapsed_steps is None:
            self._collapsed_steps = torch.zeros((), dtype=torch.long, device=top_share.device)
        self._collapsed_steps.add_(every).mul_(collapsed)

    def _warn_if_collapsed(self, every: int) -> None:
        """On the first logging step of every ``collapse_patience_steps``: read the count."""
        patience = self.hparams.collapse_patience_steps
        if self._collapsed_steps is None or (self.global_step + 1) % patience >= every:
            return
        steps = int(self._collapsed_steps)  # a logging step: its metrics are read anyway
        if steps >= patience:
            hp = self.hparams
            rank_zero_warn(
                f"SwAV may be collapsing: for the last {steps} steps, {hp.collapse_prototypes} "
                f"prototypes took at least {hp.collapse_share:.0%} of the assigned crops at "
                "every logged step. Usual remedies: a lower method.lr, a larger "
                "method.loss.epsilon, more method.head.freeze_prototypes_iters, or a queue "
                "(method.queue) when the batch is small"
            )
            self._collapsed_steps.zero_()
