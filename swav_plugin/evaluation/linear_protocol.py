"""The standard linear evaluation protocol, trained with Lightning (one or several devices).

A linear classifier on the frozen backbone (kept in eval mode: its BatchNorm statistics do
not move), images augmented on the fly (random resized crop + horizontal flip), SGD with
momentum and a cosine schedule to 0, evaluated with the centre-crop transform after every
epoch (:class:`~.supervised.ValidatedClassifier`). The defaults
are the official SwAV ``eval_linear.py`` settings for ImageNet: 100 epochs, lr 0.3 for a
batch of 256 (scaled linearly with the global batch), momentum 0.9, weight decay 1e-6, the
classifier's weights drawn from N(0, 0.01²) and its bias zero.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from swav_plugin.evaluation.supervised import ValidatedClassifier


class LinearProtocol(ValidatedClassifier):
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

    metric_prefix = "linear"

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
        #: the learning rate scaled to the global batch, once training has started
        self.scaled_lr = 0.0

    def on_train_epoch_start(self) -> None:
        self.backbone.eval()  # frozen features: BatchNorm keeps its pretrained statistics

    def forward(self, images: Tensor) -> Tensor:
        with torch.no_grad():
            features = self.backbone(images)
        return self.classifier(self.feature_norm(features.float()))

    def configure_optimizers(self) -> dict[str, Any]:
        total = max(1, int(self.trainer.estimated_stepping_batches))  # loads the train loader
        lr = self.lr * self.global_batch_size() / self.lr_batch_size
        self.scaled_lr = lr
        optimizer = torch.optim.SGD(self.classifier.parameters(), lr=lr, momentum=self.momentum,
                                    weight_decay=self.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler,
                                                         "interval": "step"}}
