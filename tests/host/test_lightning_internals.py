"""Each private Lightning use of the adapter, run on the installed Lightning.

When a Lightning release renames one of them, these tests fail naming it, as
``check_internals`` then does at a run's start.
"""

import inspect
import re
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from packaging.specifiers import SpecifierSet
from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities.exceptions import SIGTERMException
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from swav_plugin.host import lightning_internals as internals
from swav_plugin.host.lightning_internals import INTERNALS, SUPPORTED, LightningChanged

ROOT = Path(__file__).resolve().parents[2]


class Recorder(Logger):
    """Keeps every row handed to it as ``(step, metrics)``."""

    def __init__(self):
        super().__init__()
        self.rows = []

    name = "recorder"
    version = "0"

    def log_metrics(self, metrics, step=None):
        self.rows.append((step, {k: float(v) for k, v in metrics.items()}))

    def log_hyperparams(self, params, *args, **kwargs):
        pass


class Tiny(pl.LightningModule):
    """Logs ``step_x`` per step (the batch index) and ``epoch_y`` per epoch (always 7)."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        self.log("step_x", float(batch_idx), on_step=True, on_epoch=False)
        self.log("epoch_y", 7.0, on_step=False, on_epoch=True)
        return self.layer(batch[0]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class Probe(pl.Callback):
    """Calls ``action(trainer, batch_idx)`` after every batch, ``at_epoch_end(trainer)`` at
    every epoch end, and records what they return."""

    def __init__(self, action=None, at_epoch_end=None):
        self.action, self.at_epoch_end, self.seen = action, at_epoch_end, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.action:
            self.seen.append(self.action(trainer, batch_idx))

    def on_train_epoch_end(self, trainer, pl_module):
        if self.at_epoch_end:
            self.seen.append(self.at_epoch_end(trainer))


def fit(tmp_path, callback, logger=None, epochs=2, batches=3):
    data = DataLoader(TensorDataset(torch.randn(batches * 2, 2)), batch_size=2)
    trainer = pl.Trainer(default_root_dir=tmp_path, max_epochs=epochs, accelerator="cpu",
                         logger=logger or False, callbacks=[callback], log_every_n_steps=1,
                         enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False)
    trainer.fit(Tiny(), data)
    return trainer


def test_the_pinned_lightning_range_is_the_one_the_adapter_states_and_is_installed():
    pins = re.findall(r'"pytorch-lightning([^"]*)"', (ROOT / "pyproject.toml").read_text())
    assert pins == [SUPPORTED]
    assert pl.__version__ in SpecifierSet(SUPPORTED)


@pytest.mark.parametrize("path", INTERNALS)
def test_every_internal_exists_on_a_trainer(path, tmp_path):
    trainer = pl.Trainer(default_root_dir=tmp_path, logger=False)
    node = trainer
    for name in path.split("."):
        node = inspect.getattr_static(node, name, None)
        assert node is not None, f"Lightning {pl.__version__} has no Trainer.{path}"
        if isinstance(node, property):  # its value exists only while fitting
            break
    internals.check_internals(trainer)


def test_a_missing_internal_is_refused_in_one_line_naming_it(tmp_path):
    trainer = pl.Trainer(default_root_dir=tmp_path, logger=False)
    del trainer._signal_connector
    with pytest.raises(LightningChanged, match=(
            r"^pytorch-lightning \S+ has no Trainer\._signal_connector\.received_sigterm, which "
            r"swav-plugin's checkpoints rely on; pip install 'pytorch-lightning>=")):
        internals.check_internals(trainer)


def test_stop_at_next_step_raises_the_preemption_exception_after_that_step(tmp_path):
    def stop_after_second(trainer, batch_idx):
        if trainer.global_step == 2:
            internals.stop_at_next_step(trainer)
        return trainer.global_step

    probe = Probe(stop_after_second)
    with pytest.raises(SIGTERMException):
        fit(tmp_path, probe, epochs=1, batches=5)
    assert probe.seen == [1, 2]  # no third step


def test_log_step_row_now_hands_this_steps_row_to_the_loggers_inside_the_hook(tmp_path):
    recorder = Recorder()

    def log_now(trainer, batch_idx):
        before = len(recorder.rows)
        internals.log_step_row_now(trainer)
        return recorder.rows[before:]

    probe = Probe(log_now)
    fit(tmp_path, probe, recorder, epochs=1)
    assert probe.seen == [[(i, {"step_x": float(i), "epoch": 0.0})] for i in range(3)]


def test_log_epoch_row_now_hands_the_epoch_row_at_the_epochs_last_step(tmp_path):
    recorder = Recorder()

    def log_now(trainer):
        before = len(recorder.rows)
        internals.log_epoch_row_now(trainer)
        return recorder.rows[before:]

    probe = Probe(at_epoch_end=log_now)
    trainer = fit(tmp_path, probe, recorder, epochs=2)
    assert probe.seen == [[(2, {"epoch_y": 7.0, "epoch": 0.0})],
                          [(5, {"epoch_y": 7.0, "epoch": 1.0})]]
    assert trainer.global_step == 6


def test_batches_done_and_epochs_done_count_what_the_loop_processed(tmp_path):
    probe = Probe(lambda trainer, batch_idx: (internals.batches_done(trainer),
                                              internals.epochs_done(trainer), batch_idx))
    fit(tmp_path, probe, epochs=2, batches=3)
    assert probe.seen == [(1, 0, 0), (2, 0, 1), (3, 0, 2), (1, 1, 0), (2, 1, 1), (3, 1, 2)]
