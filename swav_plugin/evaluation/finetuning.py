"""Semi-supervised fine-tuning: the whole network trained with a new linear head on a few labels.

The official SwAV ``eval_semisup.py`` protocol: the pretrained backbone (batch norm in training
mode, synchronised across devices) and a new ``nn.Linear`` head with PyTorch's default
initialisation; SGD with momentum 0.9 and no weight decay, one learning rate for the trunk and
one for the head (10 % of ImageNet's labels: 0.01 and 0.2; 1 %: 0.02 and 5, the official
README's), multiplied by 0.2 after epochs 12 and 16 of 20; batch 32 per GPU. Validation after
every epoch (:class:`~.supervised.ValidatedClassifier`); the official code reports the best.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import Tensor, nn

from swav_plugin.evaluation.supervised import ValidatedClassifier

#: The official learning rates (trunk, head) for each labelled percentage of ImageNet.
OFFICIAL_LEARNING_RATES = {1: (0.02, 5.0), 10: (0.01, 0.2)}


class FineTuning(ValidatedClassifier):
    """A backbone and a new linear head, trained together.

    Args:
        backbone: Pretrained feature extractor with ``num_features``; trained here.
        num_classes: Output classes.
        lr, lr_head: Learning rates of the backbone and of the head (not scaled with the batch,
            as in the official code).
        momentum, weight_decay: SGD settings.
        decay_epochs, gamma: The learning rates are multiplied by ``gamma`` after each of these
            epochs.
    """

    metric_prefix = "finetune"

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        lr: float = 0.01,
        lr_head: float = 0.2,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        decay_epochs: Sequence[int] = (12, 16),
        gamma: float = 0.2,
    ) -> None:
        super().__init__()
        self.backbone = backbone.requires_grad_(True)
        self.classifier = nn.Linear(backbone.num_features, num_classes)
        self.lr, self.lr_head = lr, lr_head
        self.momentum, self.weight_decay = momentum, weight_decay
        self.decay_epochs, self.gamma = list(decay_epochs), gamma

    def forward(self, images: Tensor) -> Tensor:
        return self.classifier(self.backbone(images))

    def configure_optimizers(self) -> dict[str, Any]:
        self.global_batch_size()
        groups = [{"params": list(self.classifier.parameters()), "lr": self.lr_head}]
        trunk = list(self.backbone.parameters())
        if trunk:  # the raw-pixel baseline has no trunk
            groups.insert(0, {"params": trunk, "lr": self.lr})
        optimizer = torch.optim.SGD(groups, lr=self.lr, momentum=self.momentum,
                                    weight_decay=self.weight_decay)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, self.decay_epochs,
                                                         gamma=self.gamma)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler,
                                                         "interval": "epoch"}}


def epoch_checkpoint(directory: str | Path) -> ModelCheckpoint:
    """Writes ``directory/last.ckpt`` after every epoch's validation, replacing the one before
    (no versioned copies: a rerun finds the run it resumes under one name)."""
    return ModelCheckpoint(dirpath=directory, filename="last", save_top_k=1, monitor=None,
                           save_on_train_epoch_end=False, enable_version_counter=False)
