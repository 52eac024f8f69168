"""ResNet backbones from torchvision, returning pooled features (``fc`` removed).

Every backbone has a ``num_features`` attribute: the width of its output.
"""

from __future__ import annotations

import torchvision
from torch import nn

from swav_plugin.host.registry import BACKBONES


def _headless(model: torchvision.models.ResNet) -> torchvision.models.ResNet:
    model.num_features = model.fc.in_features
    model.fc = nn.Identity()
    return model


@BACKBONES.register("resnet18")
def resnet18(zero_init_residual: bool = False) -> nn.Module:
    """torchvision ResNet-18 (ImageNet stem), 512 output features."""
    return _headless(torchvision.models.resnet18(zero_init_residual=zero_init_residual))


@BACKBONES.register("resnet50")
def resnet50(zero_init_residual: bool = False) -> nn.Module:
    """torchvision ResNet-50, 2048 output features (the paper's backbone)."""
    return _headless(torchvision.models.resnet50(zero_init_residual=zero_init_residual))


@BACKBONES.register("resnet18_cifar")
def resnet18_cifar(zero_init_residual: bool = False) -> nn.Module:
    """ResNet-18 for small images: a 3×3 stride-1 stem and no max-pool; 512 features.

    The usual variant for 32 px images (solo-learn, lightly's CIFAR benchmarks), which keeps
    enough spatial resolution for the residual stages.
    """
    model = torchvision.models.resnet18(zero_init_residual=zero_init_residual)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return _headless(model)
