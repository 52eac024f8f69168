"""The online kNN monitor: logged every N epochs, and training is the same without it."""

import csv

import pytest
import torch

from swav_plugin.host.errors import ConfigError
from swav_plugin.host.resolve import resolve
from swav_plugin.host.runner import run

MONITOR = {
    "name": "knn_monitor",
    "every_n_epochs": 1,
    "k": 5,
    "dataset": {"name": "digits", "split": "test", "image_size": 8},
    "transform": {"name": "center_crop", "size": 8, "crop_fraction": 1.0},
}


def train(recipe, tmp_path, name, callbacks):
    recipe = {**recipe, "callbacks": callbacks,
              "run": {**recipe["run"], "output_dir": str(tmp_path / name)}}
    recipe["trainer"] = {**recipe["trainer"], "max_epochs": 2, "limit_train_batches": 2}
    trainer = run(resolve(recipe))
    with open(tmp_path / name / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return trainer.lightning_module.state_dict(), rows


def test_monitor_logs_knn_each_epoch_and_leaves_training_unchanged(tiny_recipe, tmp_path):
    plain, plain_rows = train(tiny_recipe, tmp_path, "plain", [])
    monitored, rows = train(tiny_recipe, tmp_path, "monitored", [MONITOR])
    knn = [float(r["monitor/knn_top1"]) for r in rows if r.get("monitor/knn_top1")]
    assert len(knn) == 2 and all(0 <= v <= 100 for v in knn)
    assert "monitor/knn_top1" not in plain_rows[0]
    # bit-identical parameters and buffers: the monitor consumed no randomness, no BN update
    assert plain.keys() == monitored.keys()
    for name in plain:
        assert torch.equal(plain[name], monitored[name]), name
    entropy = [r["train/usage_entropy_epoch"] for r in rows if r.get("train/usage_entropy_epoch")]
    assert len(entropy) == 2


def test_callbacks_section_is_checked(tiny_recipe):
    with pytest.raises(ConfigError, match="callbacks\\[0\\]: unknown key 'evry_n_epochs'"):
        resolve({**tiny_recipe, "callbacks": [{**MONITOR, "evry_n_epochs": 2}]})
    with pytest.raises(ConfigError, match="must be a list"):
        resolve({**tiny_recipe, "callbacks": {"name": "knn_monitor"}})
    with pytest.raises(ConfigError, match="unknown callback 'knn_monitr'"):
        resolve({**tiny_recipe, "callbacks": ["knn_monitr"]})


@pytest.mark.parametrize("key", ["every_n_epochs", "k", "max_bank_samples", "batch_size"])
def test_monitor_rejects_non_positive_settings(key):
    from swav_plugin.evaluation.monitor import KNNMonitor

    with pytest.raises(ValueError, match=f"{key} must be at least 1"):
        KNNMonitor(dataset=[], transform=None, **{key: 0})
