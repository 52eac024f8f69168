"""ResNet backbones returning pooled features: torchvision's (``fc`` removed), the paper's
wide ResNet-50s in the official layout, and small ResNets for tiny images.

Every backbone has a ``num_features`` attribute: the width of its output.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck

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


class WidenedResNet50(nn.Module):
    """ResNet-50 with every width multiplied by ``widen``: the paper's RN50-w2, w4 and w5 as
    facebookresearch/swav ``src/resnet50.py`` builds them, with its layer names and shapes,
    so that the official weights load key for key.

    Not torchvision's ``wide_resnet50_2``, which widens only the inner convolutions of each
    bottleneck: here the stem, every bottleneck and every stage's output are ``widen`` times
    as wide, and ``num_features`` is 2048 × ``widen``. The official stem zero-pads by one in
    a layer of its own, then convolves with padding 2; one convolution with padding 3 is the
    same function, and has the same weights.
    """

    def __init__(self, widen: int, zero_init_residual: bool = False) -> None:
        super().__init__()
        if widen < 1:
            raise ValueError(f"widen must be positive, got {widen}")
        width = 64 * widen
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        channels = width
        for stage, blocks in enumerate((3, 4, 6, 3)):
            planes, stride = width * 2**stage, 1 if stage == 0 else 2
            layers = []
            for index in range(blocks):
                downsample = None
                if index == 0 and (stride != 1 or channels != planes * Bottleneck.expansion):
                    downsample = nn.Sequential(
                        nn.Conv2d(channels, planes * Bottleneck.expansion, kernel_size=1,
                                  stride=stride, bias=False),
                        nn.BatchNorm2d(planes * Bottleneck.expansion),
                    )
                layers.append(Bottleneck(channels, planes, stride if index == 0 else 1,
                                         downsample))
                channels = planes * Bottleneck.expansion
            setattr(self, f"layer{stage + 1}", nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = channels
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, Bottleneck) and zero_init_residual:
                nn.init.zeros_(module.bn3.weight)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


@BACKBONES.register("resnet50w2")
def resnet50w2(zero_init_residual: bool = False) -> nn.Module:
    """The paper's RN50-w2 (official layout), 4096 output features."""
    return WidenedResNet50(2, zero_init_residual)


@BACKBONES.register("resnet50w4")
def resnet50w4(zero_init_residual: bool = False) -> nn.Module:
    """The paper's RN50-w4 (official layout), 8192 output features."""
    return WidenedResNet50(4, zero_init_residual)


@BACKBONES.register("resnet50w5")
def resnet50w5(zero_init_residual: bool = False) -> nn.Module:
    """The paper's RN50-w5 (official layout), 10240 output features."""
    return WidenedResNet50(5, zero_init_residual)


@BACKBONES.register("resnet18_cifar")
def resnet18_cifar(zero_init_residual: bool = False, stem_padding: int = 1) -> nn.Module:
    """ResNet-18 for small images: a 3×3 stride-1 stem and no max-pool; 512 features.

    The usual variant for 32 px images (solo-learn, lightly's CIFAR benchmarks), which keeps
    enough spatial resolution for the residual stages. ``stem_padding: 2`` is solo-learn's
    stem exactly (its feature maps are 34 px for a 32 px image).
    """
    if stem_padding < 0:
        raise ValueError(f"stem_padding must be 0 or more, got {stem_padding}")
    model = torchvision.models.resnet18(zero_init_residual=zero_init_residual)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=stem_padding, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return _headless(model)


class SmallResNet(nn.Module):
    """A narrow ResNet of torchvision ``BasicBlock`` stages for tiny images (8–32 px).

    A 3×3 stride-1 stem, then one stage per width (the first at stride 1, the others at
    stride 2), global average pooling. ``num_features`` is the last width.
    """

    def __init__(self, widths: Sequence[int], blocks: Sequence[int]) -> None:
        super().__init__()
        if not widths or len(widths) != len(blocks):
            raise ValueError(
                f"widths and blocks need one entry per stage, got {list(widths)} and {list(blocks)}"
            )
        if min(widths) < 1 or min(blocks) < 1:
            raise ValueError(
                f"widths and blocks must be positive, got {list(widths)} and {list(blocks)}"
            )
        layers: list[nn.Module] = [
            nn.Conv2d(3, widths[0], kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        ]
        channels = widths[0]
        for stage, (width, count) in enumerate(zip(widths, blocks, strict=True)):
            for index in range(count):
                stride = 2 if stage > 0 and index == 0 else 1
                downsample = None
                if stride != 1 or channels != width:
                    downsample = nn.Sequential(
                        nn.Conv2d(channels, width, kernel_size=1, stride=stride, bias=False),
                        nn.BatchNorm2d(width),
                    )
                layers.append(BasicBlock(channels, width, stride, downsample))
                channels = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.num_features = channels
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


@BACKBONES.register("resnet_small")
def resnet_small(
    widths: Sequence[int] = (32, 64, 128), blocks: Sequence[int] = (1, 1, 1)
) -> nn.Module:
    """A narrow ResNet for tiny images (the digits demo): ``widths[-1]`` output features."""
    return SmallResNet(widths, blocks)
