"""An online linear probe during pretraining, selected in a recipe's ``callbacks`` section.

.. code-block:: yaml

    callbacks:
      - name: online_linear_probe
        num_classes: 10

A linear classifier learns, beside the pretraining, from the backbone's features of each
training batch's first crop (handed over detached by the method's ``training_step``, as
solo-learn's online classifier does), with its own SGD optimizer; its training top-1 is logged
per epoch as ``probe/top1``. Unlabelled samples (label -1, STL-10's ``unlabeled``) are left
out. The probe draws its initial weights from its own generator and its features are
detached, so a run with the probe trains exactly like one without it; under DDP its gradients
are averaged over the ranks, so every rank holds the same probe. Its weights and optimizer
state are saved in checkpoints.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback
from torch import nn

from swav_plugin.host.errors import ConfigError
from swav_plugin.host.registry import CALLBACKS


@CALLBACKS.register("online_linear_probe")
class OnlineLinearProbe(Callback):
    """A linear classifier on the detached features of the pretraining's batches.

    Args:
        num_classes: Classes of the training data set's labels.
        lr: SGD learning rate.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        seed: Seed of the classifier's initial weights, N(0, 0.01²) and a zero bias.
    """

    def __init__(
        self,
        num_classes: int,
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        seed: int = 0,
    ) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        self.num_classes = num_classes
        self.lr, self.momentum, self.weight_decay, self.seed = lr, momentum, weight_decay, seed
        self.classifier: nn.Linear | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self._pending_state: dict[str, Any] | None = None
        self._counts = torch.zeros(2)  # correct, labelled samples of this epoch

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        width = getattr(pl_module.backbone, "num_features", None)
        if width is None:
            raise ConfigError("online_linear_probe needs a backbone with 'num_features'")
        dataset = getattr(getattr(trainer, "datamodule", None), "dataset", None)
        classes = getattr(dataset, "classes", None)
        if classes is not None and len(classes) != self.num_classes:
            raise ConfigError(
                f"online_linear_probe: num_classes is {self.num_classes}, but the training data "
                f"set has {len(classes)} classes; set num_classes: {len(classes)}"
            )
        generator = torch.Generator().manual_seed(self.seed)
        classifier = nn.Linear(width, self.num_classes, device="meta").to_empty(device="cpu")
        with torch.no_grad():  # its own generator: the global ones, and so training, untouched
            classifier.weight.normal_(0.0, 0.01, generator=generator)
            classifier.bias.zero_()
        self.classifier = classifier.to(pl_module.device)
        self.optimizer = torch.optim.SGD(self.classifier.parameters(), lr=self.lr,
                                         momentum=self.momentum,
                                         weight_decay=self.weight_decay)
        if self._pending_state is not None:
            self._load(self._pending_state)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        features = outputs.get("features") if isinstance(outputs, Mapping) else None
        if features is None:
            raise ConfigError("online_linear_probe needs a method whose training_step returns "
                              "{'loss', 'features'} (the first crop's backbone features)")
        labels = batch[1].to(features.device)
        with torch.enable_grad():
            logits = self.classifier(features.detach().float())
            labelled = labels >= 0
            # a sum over the labelled samples, no host read of how many there are
            loss = F.cross_entropy(logits, labels.clamp(min=0), reduction="none")
            loss = (loss * labelled).sum() / labelled.sum().clamp(min=1)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        for parameter in self.classifier.parameters():  # one probe over all ranks
            parameter.grad = trainer.strategy.reduce(parameter.grad, reduce_op="mean")
        self.optimizer.step()
        correct = ((logits.argmax(1) == labels) & labelled).sum()
        counts = torch.stack((correct, labelled.sum())).float()
        self._counts = self._counts.to(counts.device) + counts

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        correct, labelled = trainer.strategy.reduce(self._counts, reduce_op="sum").tolist()
        self._counts = torch.zeros(2)
        if labelled:
            pl_module.log("probe/top1", 100.0 * correct / labelled, rank_zero_only=True)

    def state_dict(self) -> dict[str, Any]:
        if self.classifier is None:
            return {}
        return {"classifier": self.classifier.state_dict(),
                "optimizer": self.optimizer.state_dict(), "counts": self._counts.cpu()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        if self.classifier is None:  # restored before setup: applied once it is built
            self._pending_state = state_dict
        else:
            self._load(state_dict)

    def _load(self, state: dict[str, Any]) -> None:
        self.classifier.load_state_dict(state["classifier"])
        self.optimizer.load_state_dict(state["optimizer"])
        self._counts = state["counts"].clone()
        self._pending_state = None
