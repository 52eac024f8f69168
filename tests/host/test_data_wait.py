import csv
import logging
import time

import pytorch_lightning as pl

from swav_plugin.host.data_wait import DataWaitMonitor
from swav_plugin.host.dataset_views import TransformedDataset
from swav_plugin.host.resolve import resolve
from swav_plugin.host.runner import run


class SlowAfterStep(pl.Callback):
    """Host work between steps that is not loading (a checkpoint, a read of logged values)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        time.sleep(0.3)


def logged(path, key):
    with open(path) as f:
        return [float(row[key]) for row in csv.DictReader(f) if row.get(key)]


def test_logs_the_data_wait_and_its_share(tiny_recipe, tmp_path, caplog, monkeypatch):
    fetch = TransformedDataset.__getitem__

    def slow_fetch(self, key):  # 32 samples a batch: about 0.32 s of loading per batch
        time.sleep(0.01)
        return fetch(self, key)

    monkeypatch.setattr(TransformedDataset, "__getitem__", slow_fetch)
    with caplog.at_level(logging.INFO):
        run(resolve(tiny_recipe))
    waits = logged(tmp_path / "run" / "metrics.csv", "perf/data_wait_ms")
    shares = logged(tmp_path / "run" / "metrics.csv", "perf/data_wait_share")
    assert len(waits) == 3 and len(shares) == 3  # every step (log_every_n_steps: 1)
    with open(tmp_path / "run" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    # on the steps of the loss rows, so a resume keeps exactly the rows its checkpoint covers
    assert ([r["step"] for r in rows if r.get("perf/data_wait_ms")]
            == [r["step"] for r in rows if r.get("train/loss")] == ["0", "1", "2"])
    assert min(waits) >= 300
    assert all(0 < s < 1 for s in shares)
    assert "data wait:" in caplog.text


def test_host_work_between_steps_is_not_data_wait(tiny_recipe, tmp_path):
    # The slow hook runs after the monitor's batch end, where a gap measurement would book it
    # as the next step's data wait.
    run(resolve(tiny_recipe), extra_callbacks=[SlowAfterStep()])
    waits = logged(tmp_path / "run" / "metrics.csv", "perf/data_wait_ms")
    shares = logged(tmp_path / "run" / "metrics.csv", "perf/data_wait_share")
    assert len(waits) == 3
    assert max(waits) < 150 and max(shares[1:]) < 0.3


def test_summary_names_the_fix_when_data_dominates():
    monitor = DataWaitMonitor()
    monitor._run = [0.9, 1.0, 10]
    assert "90 %" in monitor.summary() and "data.augment: gpu" in monitor.summary()
    monitor._run = [0.01, 1.0, 10]
    assert "data.augment" not in monitor.summary()
