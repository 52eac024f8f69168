"""What the supervised evaluation protocols share: the training augmentation, validation after
every epoch over all ranks, and the best / last report.

The linear protocol (:mod:`.linear_protocol`) and semi-supervised fine-tuning
(:mod:`.finetuning`) differ only in what trains and how; both are a
:class:`ValidatedClassifier`. The official code reports the best epoch's top-1 (with its
top-5); :func:`best_and_last` gives the last epoch beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision import transforms as T


def _rgb(image: Any) -> Any:
    return image.convert("RGB")


def train_transform(
    size: int, mean: Any, std: Any, min_scale: float = 0.08, hflip: bool = True
) -> T.Compose:
    """Random resized crop (area ``min_scale``..1) + horizontal flip + normalisation: the
    protocols' augmentation (the official code's, with torchvision's default scale)."""
    steps = [T.Lambda(_rgb), T.RandomResizedCrop(size, scale=(min_scale, 1.0))]
    if hflip:
        steps.append(T.RandomHorizontalFlip())
    return T.Compose([*steps, T.ToTensor(), T.Normalize(mean, std)])


def best_and_last(history: Sequence[dict[str, float]]) -> dict[str, Any]:
    """The best epoch by top-1 (the first of equals, as the official ``>``), and the last."""
    if not history:
        raise ValueError("no epoch was validated")
    best = max(history, key=lambda entry: entry["top1"])
    last = history[-1]
    return {"top1": best["top1"], "top5": best["top5"], "best_epoch": best["epoch"],
            "last": {"top1": last["top1"], "top5": last["top5"]}}


class ValidatedClassifier(pl.LightningModule):
    """A classifier trained by cross-entropy and validated after every training epoch;
    subclasses define ``forward`` (the logits) and ``configure_optimizers``.

    :attr:`history` holds ``{"epoch", "top1", "top5"}`` (in %, over every rank's samples) per
    validation, the sanity check left out. It travels in Lightning checkpoints, so a resumed
    run still reports its best epoch, and so does :attr:`settings` (what the run was started
    with: a tool compares them before it resumes). Metrics are logged as
    ``{metric_prefix}/top1`` and ``/top5``.
    """

    metric_prefix = "classifier"

    def __init__(self) -> None:
        super().__init__()
        self.history: list[dict[str, float]] = []
        self.settings: dict[str, Any] = {}
        #: the global batch, once training has started (:meth:`global_batch_size`)
        self.global_batch = 0
        self._hits = torch.zeros(3)  # top-1 hits, top-5 hits, samples

    def global_batch_size(self) -> int:
        """The training loader's batch times the number of ranks (loads the train loader)."""
        self.trainer.estimated_stepping_batches  # noqa: B018 (builds the train loader first)
        self.global_batch = self.trainer.train_dataloader.batch_size * self.trainer.world_size
        return self.global_batch

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        loss = F.cross_entropy(self(images), labels)
        self.log(f"{self.metric_prefix}/train_loss", loss, prog_bar=True, sync_dist=True,
                 batch_size=len(labels))
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self(images)
        ranked = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = ranked == labels[:, None]
        # on_epoch + sync_dist: sample-weighted means over all batches of all ranks
        self.log_dict({f"{self.metric_prefix}/top1": 100.0 * hits[:, 0].float().mean(),
                       f"{self.metric_prefix}/top5": 100.0 * hits.any(1).float().mean()},
                      on_epoch=True, sync_dist=True, batch_size=len(labels))
        counts = torch.stack((hits[:, 0].sum(), hits.any(1).sum())).float()
        samples = torch.full((1,), float(len(labels)), device=counts.device)
        self._hits = self._hits.to(counts.device) + torch.cat((counts, samples))

    def on_validation_epoch_end(self) -> None:
        top1, top5, samples = self.trainer.strategy.reduce(self._hits, reduce_op="sum").tolist()
        self._hits = torch.zeros(3)
        if samples and not self.trainer.sanity_checking:
            self.history.append({"epoch": self.current_epoch + 1,
                                 "top1": 100.0 * top1 / samples, "top5": 100.0 * top5 / samples})

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["validation_history"] = list(self.history)
        checkpoint["protocol_settings"] = dict(self.settings)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = list(checkpoint.get("validation_history", []))
        self.settings = dict(checkpoint.get("protocol_settings", {}))

