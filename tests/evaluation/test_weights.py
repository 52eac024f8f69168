"""Weights of every origin the eval tools read, each written in its exact key layout (random
weights, the real shapes of a small architecture)."""

import json
import runpy
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

from swav_plugin.evaluation.weights import load_weights
from swav_plugin.host.errors import ConfigError
from swav_plugin.zoo.backbones import resnet18


def _torchvision_resnet18(seed=0):
    torch.manual_seed(seed)
    return torchvision.models.resnet18().state_dict()


def _official(backbone, hidden=32, output=16, prototypes=(20,)):
    """facebookresearch/swav's layout (src/resnet50.py under DistributedDataParallel): the
    backbone's keys, ``projection_head`` Linear / BatchNorm1d / ReLU / Linear and
    ``prototypes`` (one Linear, or a MultiPrototypes of ``prototypes{i}``), all prefixed
    ``module.``."""
    width = backbone["fc.weight"].shape[1]
    state = {k: v for k, v in backbone.items() if not k.startswith("fc.")}
    nn = torch.nn
    head = nn.Sequential(nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                         nn.Linear(hidden, output))
    head.train()(torch.randn(8, width))  # running statistics that are not the defaults
    state.update({f"projection_head.{k}": v for k, v in head.state_dict().items()})
    if len(prototypes) == 1:
        state["prototypes.weight"] = torch.randn(prototypes[0], output)
    else:
        for i, k in enumerate(prototypes):
            state[f"prototypes.prototypes{i}.weight"] = torch.randn(k, output)
    return {f"module.{k}": v for k, v in state.items()}


def _same(module, state, prefix=""):
    for key, value in module.state_dict().items():
        assert torch.equal(value, state[prefix + key]), key


def test_an_official_release_loads_backbone_and_head(tmp_path):
    backbone = _torchvision_resnet18()
    official = _official(backbone)
    torch.save(official, tmp_path / "swav_800ep_pretrain.pth.tar")
    weights, node = load_weights(tmp_path / "swav_800ep_pretrain.pth.tar", arch="resnet18")
    assert node == {"name": "weights",
                    "backbone": {"name": "resnet18", "zero_init_residual": False}}
    _same(weights.backbone, official, "module.")
    head = weights.head
    assert head.projection[0].weight.shape == (32, 512) and head.num_prototypes == [20]
    assert torch.equal(head.projection[3].weight, official["module.projection_head.3.weight"])
    assert torch.equal(head.projection[1].running_var,
                       official["module.projection_head.1.running_var"])
    assert torch.equal(head.prototypes[0].weight, official["module.prototypes.weight"])


def test_an_official_multi_prototype_head_keeps_every_set(tmp_path):
    torch.save(_official(_torchvision_resnet18(), prototypes=(20, 30, 7)), tmp_path / "w.pth")
    weights, _ = load_weights(tmp_path / "w.pth", arch="resnet18")
    assert weights.head.num_prototypes == [20, 30, 7]


@pytest.mark.parametrize("origin", ["torchvision", "timm"])
def test_a_torchvision_or_timm_resnet_loads_without_its_classifier(tmp_path, origin):
    torch.manual_seed(1)
    model = (torchvision.models.resnet18() if origin == "torchvision"
             else timm.create_model("resnet18", pretrained=False))
    state = model.state_dict()
    torch.save(state, tmp_path / "w.pth")
    weights, _ = load_weights(tmp_path / "w.pth", arch="resnet18")
    assert not hasattr(weights, "head")
    _same(weights.backbone, state)
    images = torch.rand(2, 3, 64, 64)
    model.eval()
    expected = model.forward_features(images).mean((2, 3)) if origin == "timm" else \
        torch.nn.Sequential(*list(model.children())[:-1])(images).flatten(1)
    torch.testing.assert_close(weights.backbone(images), expected)


@pytest.mark.parametrize("wrapper", ["state_dict", "model"])
def test_a_state_dict_under_a_wrapper_key_is_found(tmp_path, wrapper):
    state = _torchvision_resnet18()
    torch.save({wrapper: state, "epoch": 100}, tmp_path / "w.pth")
    weights, _ = load_weights(tmp_path / "w.pth", arch="resnet18")
    _same(weights.backbone, state)


def test_the_exported_safetensors_name_their_backbone(tmp_path):
    backbone = resnet18()
    save_file({k: v.contiguous() for k, v in backbone.state_dict().items()},
              str(tmp_path / "backbone.safetensors"),
              metadata={"backbone": '{"name": "resnet18", "zero_init_residual": false}'})
    weights, node = load_weights(tmp_path / "backbone.safetensors")
    assert node["backbone"]["name"] == "resnet18"
    _same(weights.backbone, backbone.state_dict())


def test_random_init_builds_the_architecture_without_the_weights(tmp_path):
    state = _torchvision_resnet18()
    torch.save(_official(state), tmp_path / "w.pth")
    weights, _ = load_weights(tmp_path / "w.pth", arch="resnet18", random_init=True, seed=3)
    assert not torch.equal(weights.backbone.conv1.weight, state["conv1.weight"])
    again, _ = load_weights(tmp_path / "w.pth", arch="resnet18", random_init=True, seed=3)
    assert torch.equal(weights.backbone.conv1.weight, again.backbone.conv1.weight)


def test_a_file_without_a_recipe_needs_its_architecture(tmp_path):
    torch.save(_torchvision_resnet18(), tmp_path / "w.pth")
    with pytest.raises(ConfigError, match=r"carries no recipe naming its architecture; pass "
                                          r"--arch NAME \(registered backbones: .*resnet50"):
        load_weights(tmp_path / "w.pth")


def test_weights_of_another_architecture_name_the_first_bad_key(tmp_path):
    torch.save(torchvision.models.resnet50().state_dict(), tmp_path / "w.pth")
    with pytest.raises(ConfigError, match=r"do not fit backbone 'resnet18' .*: 0 missing, \d+ "
                                          r"unexpected and \d+ mismatched keys \(e.g. "
                                          r"'layer1.0.conv1.weight' is \(64, 64, 1, 1\) in the "
                                          r"file, \(64, 64, 3, 3\) in the model\); check --arch"):
        load_weights(tmp_path / "w.pth", arch="resnet18")


def test_an_unknown_architecture_lists_the_registered_ones(tmp_path):
    torch.save(_torchvision_resnet18(), tmp_path / "w.pth")
    with pytest.raises(ConfigError, match="resnet18"):
        load_weights(tmp_path / "w.pth", arch="resnet5O")


def test_a_mapping_without_tensors_is_refused(tmp_path):
    torch.save({"epoch": 3, "args": "x"}, tmp_path / "w.pth")
    with pytest.raises(ConfigError, match=r"holds no tensors \(keys: epoch, args\)"):
        load_weights(tmp_path / "w.pth", arch="resnet18")


# --- the eval tools on such files ------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
#: digits at 16 px, evaluated at 16 px: small enough for a ResNet-18 on the CPU
DIGITS = ["dataset.name=digits", "dataset.image_size=16", "transform.crops=[{size: 16}]"]


def _run(capsys, tool, *args):
    capsys.readouterr()
    status = runpy.run_path(str(ROOT / "eval" / f"{tool}.py"))["main"]([str(a) for a in args])
    captured = capsys.readouterr()
    assert status == 0, captured.err[-3000:]
    return captured.out


def test_knn_evaluates_an_official_release_on_data_of_its_own(tmp_path, capsys):
    path = tmp_path / "weights" / "swav_800ep_pretrain.pth.tar"
    path.parent.mkdir()
    torch.save(_official(_torchvision_resnet18()), path)
    out = _run(capsys, "knn", path, "--arch", "resnet18", "--data", *DIGITS, "--k", "5",
               "--compare-random", "--no-cache", "--device", "auto")
    result = json.loads((tmp_path / "weights" / "eval" / "knn.json").read_text())  # beside it
    assert set(result) >= {"pretrained", "random_init"} and "  pretrained " in out
    assert 0 <= result["pretrained"]["5"]["top1"] <= 100


@pytest.mark.slow
def test_prototypes_inspects_the_head_of_an_official_release(tmp_path, capsys):
    path = tmp_path / "swav.pth"
    torch.save(_official(_torchvision_resnet18(), prototypes=(12,)), path)
    out = _run(capsys, "prototypes", path, "--arch", "resnet18", "--data", *DIGITS,
               "--split", "test", "--max-points", "200", "--no-cache")
    summary = json.loads((tmp_path / "eval" / "prototypes.json").read_text())
    assert summary["num_prototypes"] == 12 and "prototypes:" in out
