"""Semi-supervised fine-tuning: what trains, at which rates, and what a resume keeps."""

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from swav_plugin.evaluation.finetuning import FineTuning, epoch_checkpoint
from swav_plugin.evaluation.pretrained import RawPixels
from swav_plugin.evaluation.supervised import best_and_last
from tests.evaluation.test_linear_protocol import TinyBackbone


def data(seed=0, n=48):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 3, 8, 8, generator=g), torch.arange(n) % 3)


def trainer(tmp_path, epochs, **options):
    return pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False,
                      enable_checkpointing=bool(options.get("callbacks")),
                      enable_progress_bar=False, enable_model_summary=False,
                      num_sanity_val_steps=0, default_root_dir=tmp_path, **options)


def test_the_whole_network_trains_at_two_rates_decayed_after_the_given_epochs(tmp_path):
    torch.manual_seed(0)
    backbone = TinyBackbone()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    model = FineTuning(backbone, 3, lr=0.05, lr_head=0.5, decay_epochs=[1, 2], gamma=0.2)
    assert model.classifier.bias.abs().sum() > 0  # PyTorch's default init, as the official head
    run = trainer(tmp_path, 3)
    run.fit(model, DataLoader(data(), batch_size=16, shuffle=True),
            DataLoader(data(1, 20), batch_size=8))
    for name, value in backbone.state_dict().items():  # weights and batch-norm statistics
        if name != "bn.num_batches_tracked":
            assert not torch.equal(value, before[name]), name
    trunk, head = run.optimizers[0].param_groups
    assert trunk["params"] == list(backbone.parameters())
    assert head["params"] == list(model.classifier.parameters())
    assert (trunk["momentum"], trunk["weight_decay"]) == (0.9, 0.0)
    # three epochs, decays after epochs 1 and 2: x 0.2 twice, unscaled by the batch of 16
    assert abs(trunk["lr"] - 0.05 * 0.04) < 1e-12 and abs(head["lr"] - 0.5 * 0.04) < 1e-12
    assert model.global_batch == 16
    assert [entry["epoch"] for entry in model.history] == [1, 2, 3]


def test_a_backbone_without_parameters_trains_the_head_alone(tmp_path):
    model = FineTuning(RawPixels(3 * 8 * 8), 3)
    run = trainer(tmp_path, 1)
    run.fit(model, DataLoader(data(), batch_size=16), DataLoader(data(1, 8), batch_size=8))
    (group,) = run.optimizers[0].param_groups
    assert group["lr"] == 0.2 and group["params"] == list(model.classifier.parameters())


def test_history_and_settings_come_back_with_a_resume(tmp_path):
    train, test = DataLoader(data(), batch_size=16), DataLoader(data(1, 20), batch_size=8)
    torch.manual_seed(0)
    first = FineTuning(TinyBackbone(), 3, decay_epochs=[1])
    first.settings = {"lr": 0.01, "images": 48}
    written = []

    class AtEpochStart(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch:  # what an interruption now would leave
                written.append(torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True))

    trainer(tmp_path, 2, callbacks=[epoch_checkpoint(tmp_path / "ckpt"), AtEpochStart()]).fit(
        first, train, test)
    assert written[0]["validation_history"] == first.history[:1]
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["last.ckpt"]
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert saved["protocol_settings"] == first.settings
    assert saved["validation_history"] == first.history  # saved after the epoch's validation

    resumed = FineTuning(TinyBackbone(), 3, decay_epochs=[1])
    run = trainer(tmp_path, 3)
    run.fit(resumed, train, test, ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert resumed.history[:2] == first.history and len(resumed.history) == 3
    assert resumed.settings == first.settings
    assert abs(run.optimizers[0].param_groups[0]["lr"] - 0.01 * 0.2) < 1e-12  # the decay kept


def test_best_is_the_first_epoch_of_the_highest_top1_and_last_is_beside_it():
    history = [{"epoch": 1, "top1": 50.0, "top5": 90.0}, {"epoch": 2, "top1": 70.0, "top5": 91.0},
               {"epoch": 3, "top1": 70.0, "top5": 99.0}, {"epoch": 4, "top1": 60.0, "top5": 95.0}]
    assert best_and_last(history) == {"top1": 70.0, "top5": 91.0, "best_epoch": 2,
                                      "last": {"top1": 60.0, "top5": 95.0}}
