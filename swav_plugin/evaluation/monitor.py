"""Online kNN monitoring during training, selected in a recipe's ``callbacks`` section.

.. code-block:: yaml

    callbacks:
      - name: knn_monitor
        every_n_epochs: 5
        dataset: {name: cifar10, split: test}        # the queries
        transform: {name: center_crop, size: 32, crop_fraction: 1.0}

Every ``every_n_epochs`` epochs the backbone's features of (a fixed subset of) the training data
set form the bank, those of ``dataset`` the queries, and the weighted kNN top-1 is logged as
``monitor/knn_top1`` (``metrics.csv`` and the recipe's loggers). It runs on rank 0 in eval mode
without gradients, draws only from generators of its own and restores the training mode
afterwards, so a run with the monitor trains exactly like one without it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch.utils.data import Dataset, Subset

from swav_plugin.evaluation.features import extract_features
from swav_plugin.evaluation.knn import knn_accuracy
from swav_plugin.host.registry import CALLBACKS, DATASETS, TRANSFORMS


@CALLBACKS.register("knn_monitor")
class KNNMonitor(Callback):
    """Weighted kNN top-1 of the backbone, logged every ``every_n_epochs`` epochs.

    Args:
        dataset: The queries (a ``dataset`` component node, e.g. the test split).
        transform: Evaluation transform for bank and queries (e.g. ``center_crop``).
        every_n_epochs: How often to evaluate.
        k: Neighbours.
        temperature: Vote temperature of the weighted kNN.
        max_bank_samples: At most this many training samples in the bank (a fixed subset).
        batch_size: Extraction batch size.
    """

    def __init__(
        self,
        dataset: Annotated[Dataset, DATASETS],
        transform: Annotated[Callable[[Any], Any], TRANSFORMS],
        every_n_epochs: int = 5,
        k: int = 20,
        temperature: float = 0.07,
        max_bank_samples: int = 10_000,
        batch_size: int = 256,
    ) -> None:
        for name, value in (("every_n_epochs", every_n_epochs), ("k", k),
                            ("max_bank_samples", max_bank_samples), ("batch_size", batch_size)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        self.queries = dataset
        self.transform = transform
        self.every_n_epochs = every_n_epochs
        self.k = k
        self.temperature = temperature
        self.max_bank_samples = max_bank_samples
        self.batch_size = batch_size

    def _bank(self, trainer: pl.Trainer) -> Dataset:
        dataset = trainer.datamodule.dataset
        if len(dataset) <= self.max_bank_samples:
            return dataset
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))
        return Subset(dataset, order[: self.max_bank_samples].tolist())

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs or not trainer.is_global_zero:
            return
        backbone = pl_module.backbone
        was_training = backbone.training
        bank = extract_features(backbone, self._bank(trainer), self.transform,
                                self.batch_size, device=pl_module.device, desc="monitor bank")
        queries = extract_features(backbone, self.queries, self.transform, self.batch_size,
                                   device=pl_module.device, desc="monitor queries")
        backbone.train(was_training)
        top1 = knn_accuracy(*bank, *queries, ks=[self.k], temperature=self.temperature,
                            device=pl_module.device)[self.k]["top1"]
        pl_module.log("monitor/knn_top1", top1, rank_zero_only=True)
