import subprocess
import sys

import pytest
import timm
import torch
import torchvision
from safetensors.torch import load_file

from swav_plugin.host.errors import ConfigError
from swav_plugin.host.export import export, main
from swav_plugin.host.registry import BACKBONES
from swav_plugin.zoo.backbones import resnet18, resnet18_cifar


def write_checkpoint(path, backbone, name):
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    state["head.prototypes.0.weight"] = torch.randn(10, 4)
    recipe = {"method": {"name": "swav", "backbone": {"name": name}},
              "data": {"dataset": {"name": "digits"}}}
    torch.save({"state_dict": state, "recipe": recipe}, path)
    return path


def test_exports_safetensors_and_state_dicts_torchvision_and_timm_load(tmp_path):
    backbone = resnet18()
    ckpt = write_checkpoint(tmp_path / "last.ckpt", backbone, "resnet18")
    files = export(ckpt, tmp_path / "out")
    assert {f.name: model for f, model in files.items()} == {
        "backbone.safetensors": "",
        "backbone_torchvision.pth": "torchvision.models.get_model('resnet18')",
        "backbone_timm.pth": "timm.create_model('resnet18', pretrained=False)"}
    safetensors, for_torchvision, for_timm = files
    weights = load_file(safetensors)
    for key, value in backbone.state_dict().items():
        assert torch.equal(weights[key], value)
    for model, path in ((torchvision.models.resnet18(), for_torchvision),
                        (timm.create_model("resnet18", pretrained=False), for_timm)):
        model.load_state_dict(torch.load(path, weights_only=True))  # strict
        assert torch.equal(model.conv1.weight, backbone.conv1.weight)
        assert not model.fc.weight.any()  # the classifier the backbone never had: zeros
    assert not list((tmp_path / "out").glob(".*.tmp"))


@pytest.mark.parametrize(("node", "library", "build"), [
    ({"name": "timm", "model": "convnext_atto"}, "timm",
     lambda: timm.create_model("convnext_atto", pretrained=False)),
    ({"name": "torchvision", "model": "mobilenet_v3_small"}, "torchvision",
     lambda: torchvision.models.mobilenet_v3_small()),
])
def test_library_backbones_export_for_their_library(tmp_path, node, library, build):
    backbone = BACKBONES.create(**node)
    ckpt = write_checkpoint(tmp_path / "last.ckpt", backbone, node["name"])
    content = torch.load(ckpt, weights_only=True)
    content["recipe"]["method"]["backbone"] = node
    torch.save(content, ckpt)
    files = {f.name: f for f in export(ckpt, tmp_path / "out")}
    model = build()
    model.load_state_dict(torch.load(files[f"backbone_{library}.pth"], weights_only=True))
    images = torch.randn(2, 3, 64, 64)
    assert not model.eval()(images).any()  # the classifier the backbone never had: zeros
    name = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)][-1]
    parent, _, attribute = name.rpartition(".")
    setattr(model.get_submodule(parent), attribute, torch.nn.Identity())
    torch.testing.assert_close(model(images), backbone.eval()(images))  # the trained trunk


def test_non_torchvision_backbone_gets_safetensors_only(tmp_path, capsys):
    ckpt = write_checkpoint(tmp_path / "last.ckpt", resnet18_cifar(), "resnet18_cifar")
    assert main([str(ckpt), "--output-dir", str(tmp_path / "out")]) == 0
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["backbone.safetensors"]
    assert "no torchvision or timm state dict: neither library has the backbone's architecture" \
        in capsys.readouterr().out


def test_checkpoint_carrying_code_is_refused_and_nothing_runs(tmp_path, capsys, code_payload):
    payload, marker = code_payload
    ckpt = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"backbone.w": torch.zeros(1)}, "payload": payload}, ckpt)
    assert main([str(ckpt), "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("swav-export: error: checkpoint") and "cannot be loaded safely" in err
    assert err.count("\n") == 1
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", None])
def test_truncated_or_missing_checkpoint_is_one_line(tmp_path, content):
    ckpt = tmp_path / "last.ckpt"
    if content is not None:
        ckpt.write_bytes(content)
    with pytest.raises(ConfigError, match="last.ckpt"):
        export(ckpt, tmp_path / "out")


def test_runs_as_a_module_with_help():
    proc = subprocess.run([sys.executable, "-m", "swav_plugin.host.export", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--output-dir" in proc.stdout
