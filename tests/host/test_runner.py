"""The runner, and the seam: a method registered from outside the package trains through it."""

import csv
import subprocess
import sys
from typing import Annotated

import pytest
import pytorch_lightning as pl
import torch
import yaml
from torch import nn

from swav_plugin.host.registry import BACKBONES, METHODS
from swav_plugin.host.resolve import resolve
from swav_plugin.host.runner import main, run


@pytest.fixture
def outside_method():
    """A tiny method that knows nothing of SwAV, registered as a third-party plugin would."""

    @METHODS.register("tiny_predictor")
    class TinyPredictor(pl.LightningModule):
        def __init__(self, backbone: Annotated[nn.Module, BACKBONES], lr: float = 0.1) -> None:
            super().__init__()
            self.backbone = backbone
            self.classifier = nn.LazyLinear(10)
            self.lr = lr

        def training_step(self, batch, batch_idx):
            images, labels = batch
            loss = nn.functional.cross_entropy(self.classifier(self.backbone(images)), labels)
            self.log("train/loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.lr)

    @BACKBONES.register("flatten_for_test")
    def flatten(features: int = 192) -> nn.Module:
        return nn.Flatten()

    yield TinyPredictor
    METHODS.unregister("tiny_predictor")
    BACKBONES.unregister("flatten_for_test")


def test_outside_method_trains_through_the_runner(outside_method, tmp_path):
    recipe = {
        "method": {"name": "tiny_predictor", "backbone": "flatten_for_test", "lr": 0.05},
        "data": {
            "dataset": {"name": "digits", "image_size": 8},
            "transform": {"name": "center_crop", "size": 8, "crop_fraction": 1.0},
            "batch_size": 64,
            "num_workers": 0,
            "pin_memory": False,
        },
        "trainer": {"max_epochs": 2, "accelerator": "cpu", "enable_progress_bar": False,
                    "enable_model_summary": False, "log_every_n_steps": 1},
        "run": {"output_dir": str(tmp_path / "tiny")},
    }
    resolved = resolve(recipe)
    assert resolved["method"] == {"name": "tiny_predictor", "lr": 0.05,
                                  "backbone": {"name": "flatten_for_test", "features": 192}}
    trainer = run(resolved)
    assert isinstance(trainer.lightning_module, outside_method)
    assert trainer.global_step == 2 * (1347 // 64)
    with open(tmp_path / "tiny" / "metrics.csv") as f:
        losses = [float(row["train/loss"]) for row in csv.DictReader(f) if row["train/loss"]]
    assert losses[-1] < losses[0]  # it really learns: digits are linearly separable
    saved = yaml.safe_load((tmp_path / "tiny" / "recipe.yaml").read_text())
    assert saved == resolved


def test_cli_trains_and_reports(tiny_recipe, tmp_path, capsys):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe))
    assert main([str(path), "trainer.limit_train_batches=1"]) == 0
    assert "run written to" in capsys.readouterr().out
    saved = yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())
    assert saved["trainer"]["limit_train_batches"] == 1


def test_cli_error_is_one_line_exit_2_and_writes_nothing(tiny_recipe, tmp_path):
    tiny_recipe["method"]["loss"]["temprature"] = 0.2
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe))
    proc = subprocess.run([sys.executable, "-m", "swav_plugin", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "swav-train: error: method.loss: unknown key 'temprature'; did you mean 'temperature'? "
        "valid keys of swav_plugin.swav.loss.SwAVLoss: temperature, crops_for_assign, epsilon, "
        "sinkhorn_iterations, distributed_sinkhorn"
    ]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def test_cli_lists_components(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "method: swav" in out
    assert ("backbone: resnet18, resnet18_cifar, resnet50, resnet50w2, resnet50w4, resnet50w5, "
            "resnet_small") in out
