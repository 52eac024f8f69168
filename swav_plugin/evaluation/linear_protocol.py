"""The standard linear evaluation protocol, trained with Lightning (one or several devices).

A linear classifier on the frozen backbone (kept in eval mode: its BatchNorm statistics do
not move), images augmented on the fly (random resized crop + horizontal flip), SGD with
momentum and a cosine schedule to 0, evaluated with the centre-crop transform after every
epoch: the best epoch is what the official code reports, the last one is reported beside it
(:attr:`LinearProtocol.history`). The defaults
are the official SwAV ``eval_linear.py`` settings for ImageNet: 100 epochs, lr 0.3 for a
batch of 256 (scaled linearly with the global batch), momentum 0.9, weight decay 1e-6, the
classifier's weights drawn from N(0, 0.01²) and its bias zero.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision import transforms as T


def _rgb(image: Any) -> Any:
    return image.convert("RGB")


def train_transform(size: int, mean: Any, std: Any) -> T.Compose:
    """Random resized crop + horizontal flip + normalisation (the protocol's augmentation)."""
    return T.Compose([
        T.Lambda(_rgb),
        T.RandomResizedCrop(size),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])


class LinearProtocol(pl.LightningModule):
    """Linear classifier on a frozen backbone.

    Args:
        backbone: Pretrained feature extractor with ``num_features``; frozen here.
        num_classes: Output classes.
        lr: Learning rate for a global batch of ``lr_batch_size`` (scaled linearly).
        lr_batch_size: The batch ``lr`` refers to.
        momentum, weight_decay: SGD settings.
        use_bn: Standardise the features by a BatchNorm without affine parameters before the
            classifier (the official code's ``--use_bn``, off by default); it makes the
            learning rate independent of the features' scale.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        lr: float = 0.3,
        lr_batch_size: int = 256,
        momentum: float = 0.9,
        weight_decay: float = 1e-6,
        use_bn: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = backbone.requires_grad_(False).eval()
        self.feature_norm = (nn.BatchNorm1d(backbone.num_features, affine=False) if use_bn
                             else nn.Identity())
        self.classifier = nn.Linear(backbone.num_features, num_classes)
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)
        self.lr, self.lr_batch_size = lr, lr_batch_size
        self.momentum, self.weight_decay = momentum, weight_decay
        #: the global batch and the learning rate scaled to it, once training has started
        self.global_batch, self.scaled_lr = 0, 0.0
        #: per validation: ``{"epoch", "top1", "top5"}`` in %, over every rank's samples
        self.history: list[dict[str, float]] = []
        self._hits = torch.zeros(3)  # top-1 hits, top-5 hits, samples

    def on_train_epoch_start(self) -> None:
        self.backbone.eval()  # frozen features: BatchNorm keeps its pretrained statistics

    def forward(self, images: Tensor) -> Tensor:
        with torch.no_grad():
            features = self.backbone(images)
        return self.classifier(self.feature_norm(features.float()))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        loss = F.cross_entropy(self(images), labels)
        self.log("linear/train_loss", loss, prog_bar=True, sync_dist=True,
                 batch_size=len(labels))
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self(images)
        ranked = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = ranked == labels[:, None]
        # on_epoch + sync_dist: sample-weighted means over all batches of all ranks
        self.log_dict({"linear/top1": 100.0 * hits[:, 0].float().mean(),
                       "linear/top5": 100.0 * hits.any(1).float().mean()},
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

    def configure_optimizers(self) -> dict[str, Any]:
        total = max(1, int(self.trainer.estimated_stepping_batches))  # loads the train loader
        global_batch = self.trainer.train_dataloader.batch_size * self.trainer.world_size
        lr = self.lr * global_batch / self.lr_batch_size
        self.global_batch, self.scaled_lr = global_batch, lr
        optimizer = torch.optim.SGD(self.classifier.parameters(), lr=lr, momentum=self.momentum,
                                    weight_decay=self.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler,
                                                         "interval": "step"}}
