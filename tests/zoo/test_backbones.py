import pytest
import torch

from swav_plugin.host.registry import BACKBONES


@pytest.mark.parametrize(
    ("name", "size", "width"),
    [("resnet18", 64, 512), ("resnet50", 64, 2048), ("resnet18_cifar", 16, 512)],
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
