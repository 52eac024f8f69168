"""Non-finite steps are undone and counted; a run of them stops training, keeping checkpoints."""

import pytest
import pytorch_lightning as pl
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from swav_plugin.host.checkpoint_files import read_checkpoint, step_checkpoints
from swav_plugin.host.health import NonFiniteGuard, StateCopy, TrainingStopped
from swav_plugin.host.registry import METHODS
from swav_plugin.host.runner import main


class Poisoned(pl.LightningModule):
    """Linear + batch norm under SGD with momentum and weight decay; NaN loss at ``bad`` steps."""

    def __init__(self, bad: list[int] | None = None) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 1))
        self.bad = set(bad or ())

    def training_step(self, batch, batch_idx):
        x = batch[0].flatten(1)[:, :4]
        loss = self.net(x).pow(2).mean()
        if self.global_step in self.bad:
            loss = loss * torch.tensor(float("nan"))
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)


class StateRecorder(pl.Callback):
    """Every tensor the guard protects, before and after each step."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.before = self.state(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append((self.before, self.state(trainer, pl_module)))

    def on_fit_start(self, trainer, pl_module):
        self.steps = []

    @staticmethod
    def state(trainer, pl_module):
        state = {k: v.clone() for k, v in pl_module.state_dict().items()}
        for p, s in trainer.optimizers[0].state.items():
            state[f"momentum{id(p)}"] = s["momentum_buffer"].clone()
        return state


def fit(module, steps, guard):
    recorder = StateRecorder()
    loader = DataLoader(TensorDataset(torch.randn(8 * steps, 4)), batch_size=8)
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[guard, recorder],
                         log_every_n_steps=1)
    trainer.fit(module, loader)
    return recorder.steps


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_non_finite_steps_change_nothing_and_are_counted():
    guard = NonFiniteGuard(max_in_a_row=3)
    steps = fit(Poisoned(bad={0, 3, 4}), 8, guard)
    for step, (before, after) in enumerate(steps):
        if step in (3, 4):  # parameters, batch-norm statistics and momentum all as before
            assert same(before, after)
        elif step != 0:
            assert not same(before, after)
    # the momentum a bad first step would have created starts from zero: as never started
    assert all(torch.isfinite(t).all() for t in steps[-1][1].values())
    assert guard.skipped == 3


def test_without_the_guard_one_nan_step_ruins_every_parameter():
    loader = DataLoader(TensorDataset(torch.randn(16, 4)), batch_size=8)
    module = Poisoned(bad={0})
    pl.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
               enable_progress_bar=False, enable_model_summary=False).fit(module, loader)
    assert all(torch.isnan(p).all() for p in module.parameters())


def test_a_run_of_non_finite_steps_stops_training():
    guard = NonFiniteGuard(max_in_a_row=3)
    with pytest.raises(TrainingStopped, match=r"[3-5] optimizer steps in a row had non-finite"):
        fit(Poisoned(bad=range(2, 100)), 50, guard)
    assert guard.skipped == 3  # read back at every step: the trainer logs every step


@pytest.fixture
def poisoned_method():
    METHODS.register("poisoned_for_test")(Poisoned)
    yield
    METHODS.unregister("poisoned_for_test")


def test_runner_stops_in_one_line_keeping_the_last_good_checkpoint(
    poisoned_method, tmp_path, capsys
):
    recipe = {
        "method": {"name": "poisoned_for_test", "bad": list(range(4, 100))},
        "data": {"dataset": {"name": "digits", "image_size": 8},
                 "transform": {"name": "center_crop", "size": 8, "crop_fraction": 1.0},
                 "batch_size": 64, "num_workers": 0, "pin_memory": False},
        "trainer": {"max_epochs": 3, "accelerator": "cpu", "enable_progress_bar": False,
                    "enable_model_summary": False, "log_every_n_steps": 3},
        "run": {"output_dir": str(tmp_path / "run"), "checkpoint_every_n_steps": 2,
                "keep_checkpoints": 3, "max_nonfinite_steps": 4},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main([str(path)]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if "swav-train" in line]
    assert len(err) == 1 and err[0].startswith("swav-train: error: ")
    assert "optimizer steps in a row had non-finite gradients" in err[0]
    # 4 bad steps in a row (4-7) are read at the read step 9 (log_every_n_steps: 3)
    assert "(up to step 9;" in err[0]
    # the steps from 4 on were undone: every checkpoint kept holds the weights of step 4
    directory = tmp_path / "run" / "checkpoints"
    kept = [read_checkpoint(p) for p in step_checkpoints(directory)]
    assert [c["global_step"] for c in kept] == [8, 6, 4]
    for later in kept[:2]:
        assert all(torch.equal(later["state_dict"][k], v)
                   for k, v in kept[2]["state_dict"].items())


@pytest.mark.parametrize("flat", [True, False])
def test_state_copy_puts_back_channels_last_strided_and_integer_tensors(flat):
    conv = torch.randn(4, 3, 5, 5).to(memory_format=torch.channels_last)
    gappy = torch.randn(6, 8)[:, ::2]  # no flat view: always kept one by one
    tensors = [conv, gappy, torch.randn(7), torch.tensor(3)]
    start = [t.clone() for t in tensors]
    copy = StateCopy(tensors, flat=flat)  # saves the values it is made with
    for t in tensors:  # what a bad step leaves behind: other values, NaN and inf
        t.add_(1)
    conv[0, 0, 0, 0], gappy[0, 0] = float("nan"), float("inf")
    copy.restore_unless(torch.tensor(False))
    assert all(torch.equal(t, s) for t, s in zip(tensors, start, strict=True))
    copy.save()
    for t in tensors:  # a good step
        t.add_(1)
    copy.restore_unless(torch.tensor(True))
    assert all(torch.equal(t, s + 1) for t, s in zip(tensors, start, strict=True))
    assert conv.is_contiguous(memory_format=torch.channels_last)
