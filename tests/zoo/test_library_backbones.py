"""Backbones by name from timm and torchvision: built, classifier removed, trained a step."""

import pytest
import torch

from swav_plugin.host.errors import ConfigError
from swav_plugin.host.registry import BACKBONES
from swav_plugin.zoo import library_backbones
from tests.swav.test_module import fit, resolved

#: (backbone node, its width, the two crop sizes of multi-crop)
MODELS = {
    "timm resnet": ({"name": "timm", "model": "resnet10t"}, 512, (32, 16)),
    "timm convnext": ({"name": "timm", "model": "convnext_atto"}, 320, (64, 32)),
    "timm vit": ({"name": "timm", "model": "vit_tiny_patch16_224", "img_size": 32,
                  "patch_size": 8, "dynamic_img_size": True}, 192, (32, 16)),
    "torchvision mobilenet": ({"name": "torchvision", "model": "mobilenet_v3_small"}, 1024,
                              (32, 16)),
}


@pytest.mark.parametrize("kind", list(MODELS))
def test_a_model_by_name_trains_a_swav_step_on_two_crop_resolutions(tiny_recipe, kind):
    node, width, (large, small) = MODELS[kind]
    backbone = BACKBONES.create(**node)
    assert backbone.num_features == width
    for size in (large, small):  # pooled features at both resolutions, no classifier
        assert backbone.eval()(torch.randn(2, 3, size, size)).shape == (2, width)
    recipe = resolved(
        tiny_recipe, method__backbone=node, method__head__input_dim=None,
        data__dataset__image_size=large, trainer__limit_train_batches=1,
        data__transform__crops=[{"size": large, "count": 2, "scale": [0.5, 1.0]},
                                {"size": small, "count": 2, "scale": [0.2, 0.5]}])
    assert recipe["method"]["head"]["input_dim"] == width  # derived, and stated in the recipe
    method, trainer = fit(recipe)
    assert trainer.global_step == 1
    assert all(torch.isfinite(p).all() for p in method.backbone.parameters())


def test_torchvision_classifiers_in_other_places_are_removed():
    for model, width in (("resnet18", 512), ("convnext_tiny", 768), ("vit_b_16", 768)):
        backbone = BACKBONES.create("torchvision", model=model)
        assert backbone.num_features == width
        assert not [m for m in backbone.modules()
                    if isinstance(m, torch.nn.Linear) and m.out_features == 1000], model


@pytest.mark.parametrize(("name", "model", "message"), [
    ("timm", "convnext_atoo", r"^timm has no model 'convnext_atoo' \(did you mean convnext_atto"),
    ("torchvision", "resnet19", r"^torchvision has no model 'resnet19' \(did you mean resnet1"),
    ("torchvision", "zzz", r"^torchvision has no model 'zzz' \(\d+ models are known\); pick"),
])
def test_unknown_models_are_named_with_the_closest(name, model, message):
    with pytest.raises(ConfigError, match=message):
        BACKBONES.create(name, model=model)


def test_without_timm_installed_the_extra_is_named(monkeypatch):
    monkeypatch.setattr(library_backbones, "timm", None)
    with pytest.raises(ConfigError, match=r"needs the timm package; install it with pip install "
                       r"'swav-plugin\[timm\]'"):
        BACKBONES.create("timm", model="resnet10t")


def test_auxiliary_classifiers_are_left_out():
    backbone = BACKBONES.create("torchvision", model="googlenet")
    features = backbone.train()(torch.randn(2, 3, 64, 64))  # one tensor, not (logits, aux...)
    assert isinstance(features, torch.Tensor) and features.shape == (2, 1024)
