import pytest
import torch
import torch.nn.functional as F
from torchvision.models.resnet import BasicBlock

from swav_plugin.host.registry import BACKBONES
from swav_plugin.zoo.backbones import WidenedResNet50, resnet50


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


def official_layout(widen):
    """Key → shape of facebookresearch/swav ``src/resnet50.py``'s ``resnet50w{widen}`` without
    its heads, transcribed: ``num_out_filters = width_per_group * widen`` (64 · widen) for the
    stem and the first stage, doubled at each next stage; ``Bottleneck(inplanes, planes)``
    with ``width = planes`` (base_width 64) and an output of ``planes * 4``; a downsample
    ``conv1x1`` + BatchNorm at each stage's first block."""
    def bn(prefix, n):
        return {f"{prefix}.weight": (n,), f"{prefix}.bias": (n,), f"{prefix}.running_mean": (n,),
                f"{prefix}.running_var": (n,), f"{prefix}.num_batches_tracked": ()}

    width = 64 * widen
    shapes = {"conv1.weight": (width, 3, 7, 7), **bn("bn1", width)}
    inplanes = width
    for stage, blocks in enumerate((3, 4, 6, 3)):
        planes = width * 2**stage
        for index in range(blocks):
            p = f"layer{stage + 1}.{index}"
            shapes.update({f"{p}.conv1.weight": (planes, inplanes, 1, 1), **bn(f"{p}.bn1", planes),
                           f"{p}.conv2.weight": (planes, planes, 3, 3), **bn(f"{p}.bn2", planes),
                           f"{p}.conv3.weight": (4 * planes, planes, 1, 1),
                           **bn(f"{p}.bn3", 4 * planes)})
            if index == 0:
                shapes.update({f"{p}.downsample.0.weight": (4 * planes, inplanes, 1, 1),
                               **bn(f"{p}.downsample.1", 4 * planes)})
            inplanes = 4 * planes
    return shapes


@pytest.mark.parametrize("widen", [2, 4, 5])
def test_the_wide_resnets_have_the_official_key_layout(widen):
    with torch.device("meta"):
        model = BACKBONES.create(f"resnet50w{widen}")
        features = model(torch.empty(2, 3, 64, 64))
    layout = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert layout == official_layout(widen)
    assert model.num_features == 2048 * widen and features.shape == (2, 2048 * widen)


def test_the_official_layout_at_width_one_is_torchvisions_resnet50():
    with torch.device("meta"):
        torchvision_keys = {k: tuple(v.shape) for k, v in resnet50().state_dict().items()}
    assert torchvision_keys == official_layout(1)


def test_the_wide_stem_computes_the_official_padded_convolution():
    torch.manual_seed(0)
    model = WidenedResNet50(1)
    images = torch.rand(2, 3, 33, 33)
    official = F.conv2d(F.pad(images, (1, 1, 1, 1)), model.conv1.weight, stride=2, padding=2)
    torch.testing.assert_close(model.conv1(images), official)
