import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from swav_plugin.evaluation.linear_protocol import LinearProtocol


class TinyBackbone(nn.Module):
    num_features = 4

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.conv(x)).mean((2, 3))


def test_only_the_classifier_learns_and_batchnorm_statistics_stay(tmp_path):
    g = torch.Generator().manual_seed(0)
    images, labels = torch.randn(64, 3, 8, 8, generator=g), torch.arange(64) % 3
    backbone = TinyBackbone()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    model = LinearProtocol(backbone, num_classes=3, lr=0.5)
    classifier_before = model.classifier.weight.detach().clone()
    assert model.classifier.weight.std() < 0.05 and torch.all(model.classifier.bias == 0)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, DataLoader(TensorDataset(images, labels), batch_size=16, shuffle=True))
    for name, value in backbone.state_dict().items():  # weights and running statistics
        assert torch.equal(value, before[name]), name
    assert not torch.equal(model.classifier.weight, classifier_before)
    assert not backbone.training and model.classifier.training
    # lr 0.5 per 256, batch 16 on one device: 0.03125 at the start, cosine to 0 at the end
    assert trainer.optimizers[0].param_groups[0]["initial_lr"] == 0.5 * 16 / 256
    assert trainer.optimizers[0].param_groups[0]["lr"] < 1e-6
    metrics = trainer.validate(model, DataLoader(TensorDataset(images, labels), batch_size=10),
                               verbose=False)[0]
    logits = model(images)
    expected = 100 * (logits.argmax(1) == labels).float().mean().item()
    assert abs(metrics["linear/top1"] - expected) < 1e-4  # sample-weighted over uneven batches


def test_use_bn_standardises_features_before_the_classifier():
    model = LinearProtocol(TinyBackbone(), num_classes=3, use_bn=True)
    norm = model.feature_norm
    assert isinstance(norm, nn.BatchNorm1d) and not norm.affine
    model.train()
    model.backbone.eval()
    features = model.backbone(torch.randn(32, 3, 8, 8)) * 50 + 7
    normalised = norm(features)
    torch.testing.assert_close(normalised.mean(0), torch.zeros(4), atol=1e-5, rtol=0)
    assert isinstance(LinearProtocol(TinyBackbone(), 3).feature_norm, nn.Identity)


def test_every_epoch_is_validated_and_kept_for_the_best_and_last(tmp_path):
    g = torch.Generator().manual_seed(1)
    images, labels = torch.randn(60, 3, 8, 8, generator=g), torch.arange(60) % 3
    model = LinearProtocol(TinyBackbone(), num_classes=3, lr=2.0)
    trainer = pl.Trainer(max_epochs=3, accelerator="cpu", logger=False, num_sanity_val_steps=2,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)
    test = DataLoader(TensorDataset(images[:25], labels[:25]), batch_size=10)  # uneven batches
    trainer.fit(model, DataLoader(TensorDataset(images, labels), batch_size=20), test)
    assert [entry["epoch"] for entry in model.history] == [1, 2, 3]  # the sanity check left out
    logits = model(images[:25])
    hits = (logits.topk(3, dim=1).indices == labels[:25, None])
    assert abs(model.history[-1]["top1"] - 100 * hits[:, 0].float().mean().item()) < 1e-4
    assert model.history[-1]["top5"] == 100.0  # 3 classes: always within the top 5
    assert model.global_batch == 20 and model.scaled_lr == 2.0 * 20 / 256
