"""Trains a tiny SwAV recipe through the runner under Lightning's CPU DDP (2 processes, gloo).

Run as a script: ``python tests/distributed/ddp_train.py OUT_DIR``.
Lightning re-launches this script for rank 1, so both ranks run everything below; each writes
what it saw to ``OUT_DIR/rank{r}.pt`` for ``test_ddp_training.py`` to compare.
"""

import sys
from pathlib import Path

import torch
from pytorch_lightning.callbacks import Callback
from torch import nn

from swav_plugin.host.plugins import load_plugins
from swav_plugin.host.registry import DATASETS
from swav_plugin.host.resolve import resolve
from swav_plugin.host.runner import run
from swav_plugin.zoo.datasets import digits


@DATASETS.register("indexed_digits")
class IndexedDigits(torch.utils.data.Dataset):
    """Digits whose label is the sample's index, so that each rank's samples can be told apart."""

    def __init__(self, image_size: int = 8) -> None:
        self.data = digits(split="train", image_size=image_size)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        return self.data[index][0], index


class Recorder(Callback):
    """Per step: this rank's loss and the indices of its samples."""

    def __init__(self) -> None:
        self.losses, self.indices = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))
        self.indices.append(batch[1].tolist())


def recipe(out: Path) -> dict:
    # No SyncBatchNorm: torch's DDP accepts it only on GPUs (test_ddp_training.py checks that
    # the recipe key converts the layers).
    return {
        "method": {
            "name": "swav",
            "backbone": {"name": "resnet18_cifar"},
            "head": {"name": "swav_head", "input_dim": 512, "hidden_dim": 32, "output_dim": 16,
                     "num_prototypes": 20, "freeze_prototypes_iters": 1},
            "queue": {"name": "swav_queue", "length": 64, "start_epoch": 0},
            "warmup_epochs": 0.5,
        },
        "data": {
            "dataset": {"name": "indexed_digits"},
            "transform": {"name": "multicrop", "blur_prob": 0.0, "crops": [
                {"size": 8, "count": 2, "scale": [0.5, 1.0]},
                {"size": 4, "count": 1, "scale": [0.2, 0.5]}]},
            "collate": "multicrop_collate",
            "batch_size": 16,
            "num_workers": 0,
            "pin_memory": False,
        },
        "trainer": {"max_epochs": 2, "limit_train_batches": 3, "accelerator": "cpu",
                    "devices": 2, "strategy": "ddp",
                    "enable_progress_bar": False, "enable_model_summary": False,
                    "log_every_n_steps": 1},
        "run": {"output_dir": str(out / "run"), "seed": 0},
    }


def main(out: Path) -> None:
    load_plugins()
    torch.set_num_threads(1)
    recorder = Recorder()
    trainer = run(resolve(recipe(out)), extra_callbacks=[recorder])
    method = trainer.lightning_module
    torch.save(
        {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "losses": recorder.losses,
            "indices": recorder.indices,
            "queue": method.queue.embeddings.clone(),
            "queue_filled": int(method.queue.filled),
            "batchnorm": any(isinstance(m, nn.BatchNorm2d) for m in method.modules()),
        },
        out / f"rank{trainer.global_rank}.pt",
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
