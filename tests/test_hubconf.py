"""torch.hub entry points of the repository (hubconf.py), loaded from this checkout."""

import importlib.util
from pathlib import Path

import torch
import torchvision
from safetensors.torch import save_file

from swav_plugin.host.registry import BACKBONES

ROOT = Path(__file__).resolve().parents[1]


def test_every_registered_backbone_is_an_entry_point():
    # what torch.hub.list reports: hubconf's public callables (its own list() takes GitHub
    # repositories only)
    spec = importlib.util.spec_from_file_location("hubconf", ROOT / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    names = {n for n in dir(hubconf) if callable(getattr(hubconf, n)) and not n.startswith("_")}
    assert {"resnet18", "resnet50", "resnet50w2", "resnet50w4", "resnet50w5"} <= names
    assert names <= set(BACKBONES.names())  # nothing else is offered as an entry point
    assert hubconf.dependencies == ["torch", "torchvision"]


def test_an_exported_file_becomes_the_backbone(tmp_path):
    torch.manual_seed(0)
    state = {k: v for k, v in torchvision.models.resnet18().state_dict().items()
             if not k.startswith("fc.")}
    save_file(state, str(tmp_path / "backbone.safetensors"))
    backbone = torch.hub.load(str(ROOT), "resnet18", source="local",
                              weights=tmp_path / "backbone.safetensors")
    assert not backbone.training and backbone.num_features == 512
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, state[key]), key
    fresh = torch.hub.load(str(ROOT), "resnet18", source="local")
    assert not torch.equal(fresh.conv1.weight, state["conv1.weight"])
