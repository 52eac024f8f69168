import pytest
import torch
from torchvision.models.resnet import BasicBlock

from swav_plugin.host.registry import BACKBONES


@pytest.mark.parametrize(
    ("name", "size", "width"),
    [("resnet18", 64, 512), ("resnet50", 64, 2048), ("resnet18_cifar", 16, 512),
     ("resnet_small", 8, 128)],
)
def test_backbone_returns_pooled_features_of_its_declared_width(name, size, width):
    model = BACKBONES.create(name).eval()
    with torch.no_grad():
        features = model(torch.randn(2, 3, size, size))
    assert model.num_features == width
    assert features.shape == (2, width)


def test_cifar_variant_keeps_resolution_in_the_stem():
    cifar, imagenet = BACKBONES.create("resnet18_cifar"), BACKBONES.create("resnet18")
    assert cifar.conv1.kernel_size == (3, 3) and cifar.conv1.stride == (1, 1)
    assert isinstance(cifar.maxpool, torch.nn.Identity)
    assert imagenet.conv1.stride == (2, 2)
    x = torch.randn(1, 3, 32, 32)
    stem = torch.nn.Sequential(cifar.conv1, cifar.bn1, cifar.relu, cifar.maxpool)
    assert stem(x).shape[-1] == 32


def test_solo_learn_stem_pads_by_two():
    cifar = BACKBONES.create("resnet18_cifar", stem_padding=2)
    assert cifar.conv1(torch.randn(1, 3, 32, 32)).shape[-1] == 34


def test_small_resnet_stages_halve_the_resolution_after_the_first():
    model = BACKBONES.create("resnet_small", widths=[8, 16, 24], blocks=[2, 1, 1])
    blocks = [m for m in model.features if isinstance(m, BasicBlock)]
    assert [b.conv1.stride for b in blocks] == [(1, 1), (1, 1), (2, 2), (2, 2)]
    assert model.num_features == 24 and model(torch.randn(3, 3, 8, 8)).shape == (3, 24)


@pytest.mark.parametrize(("widths", "blocks"), [([8, 16], [1]), ([], []), ([8, 0], [1, 1])])
def test_small_resnet_refuses_inconsistent_stages(widths, blocks):
    with pytest.raises(ValueError, match="widths and blocks"):
        BACKBONES.create("resnet_small", widths=widths, blocks=blocks)
