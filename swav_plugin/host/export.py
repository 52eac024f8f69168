"""Export a trained backbone for use outside this package.

    swav-export runs/swav_imagenet/checkpoints/last.ckpt            # → runs/.../export/
    swav-export CKPT --output-dir weights/

Writes the method's ``backbone`` weights alone (the ``backbone.`` prefix removed):

- ``backbone.safetensors``: plain tensors, loadable without pickle by any framework;
- ``backbone_torchvision.pth``, when the backbone is a torchvision model (``resnet50``,
  ``resnet18``, ``{name: torchvision, model: ...}``): a state dict that
  ``torchvision.models.get_model(ARCH).load_state_dict(...)`` accepts as it is;
- ``backbone_timm.pth``, when timm has the same architecture (its ResNets share torchvision's
  keys; ``{name: timm, model: ...}``): one that ``timm.create_model(ARCH, pretrained=False)
  .load_state_dict(...)`` accepts as it is.

Each library's file is checked by loading it strictly into that library's model before it is
written. The libraries' models have a classifier the backbone lacks; it is included as zeros,
to be trained or replaced. ``export`` prints which ``ARCH`` each file is for.

The checkpoint is read with ``torch.load(weights_only=True)``: a file carrying pickled code is
refused, not run. Each file is written to a temporary name and renamed, so an interrupted
export never leaves half a file.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torchvision
from safetensors.torch import save_file
from torch import Tensor, nn

from swav_plugin.host.atomic import atomic_path
from swav_plugin.host.classifiers import last_linear
from swav_plugin.host.errors import ConfigError
from swav_plugin.host.training_checkpoint import read_training_checkpoint

try:
    import timm
except ImportError:  # an optional extra: without it there is no timm file to write
    timm = None

PREFIX = "backbone."


def backbone_weights(checkpoint: dict[str, Any]) -> dict[str, Tensor]:
    """The ``backbone.*`` tensors of a checkpoint's state dict, prefix removed."""
    weights = {
        key[len(PREFIX):]: value.contiguous()
        for key, value in checkpoint["state_dict"].items()
        if key.startswith(PREFIX)
    }
    if not weights:
        raise ConfigError("the checkpoint's method has no 'backbone' weights to export")
    return weights


def library_models(backbone: Mapping[str, Any]) -> dict[str, tuple[str, Callable[[], nn.Module]]]:
    """For each library with the recipe ``backbone``'s architecture: how to build it there
    (the call, with the backbone's options) and a builder of its full, classifier-bearing
    model."""
    name, model = backbone.get("name", ""), backbone.get("model", "")
    options = {k: v for k, v in backbone.items() if k not in ("name", "model")}
    vision = torchvision.models.list_models(module=torchvision.models)
    arch, kwargs = (model, options) if name in ("torchvision", "timm") else (name, {})
    shown = "".join(f", {k}={v!r}" for k, v in kwargs.items())
    found: dict[str, tuple[str, Callable[[], nn.Module]]] = {}
    if name in ("torchvision", *vision) and arch in vision:
        found["torchvision"] = (f"torchvision.models.get_model('{arch}'{shown})",
                                lambda: torchvision.models.get_model(arch, **kwargs))
    # timm's ResNets share torchvision's keys
    if timm is not None and name in ("timm", *vision) and timm.is_model(arch):
        found["timm"] = (f"timm.create_model('{arch}', pretrained=False{shown})",
                         lambda: timm.create_model(arch, pretrained=False, **kwargs))
    return found


def full_state_dict(model: nn.Module, weights: dict[str, Tensor]) -> dict[str, Tensor] | None:
    """``weights`` completed to what ``model`` loads strictly, the classifier the backbone
    lacks as zeros; ``None`` when they do not fit (another variant, e.g. a CIFAR stem)."""
    full = dict(weights)
    for key, value in model.state_dict().items():
        if key not in full:
            full[key] = torch.zeros_like(value)
    name = last_linear(model)
    classifier = {f"{name}.{key}" for key, _ in
                  model.get_submodule(name).named_parameters()} if name is not None else set()
    if set(full) - set(weights) != classifier:  # more is missing than the classifier
        return None
    try:
        model.load_state_dict(full, strict=True)
    except RuntimeError:
        return None
    return full


def export(checkpoint_path: str | Path, output_dir: str | Path | None = None) -> dict[Path, str]:
    """Write the backbone of ``checkpoint_path``; returns the files written, each with the
    model it loads into (empty for the safetensors file)."""
    path = Path(checkpoint_path)
    checkpoint = read_training_checkpoint(path)
    weights = backbone_weights(checkpoint)
    backbone = ((checkpoint.get("recipe") or {}).get("method") or {}).get("backbone") or {}
    out = Path(output_dir) if output_dir is not None else path.parent.parent / "export"
    out.mkdir(parents=True, exist_ok=True)
    metadata = {"source": path.resolve().name, "backbone": json.dumps(backbone)}
    written = {out / "backbone.safetensors": ""}
    with atomic_path(out / "backbone.safetensors") as tmp:
        save_file(weights, str(tmp), metadata=metadata)
    for library, (call, build) in library_models(backbone).items():
        full = full_state_dict(build(), weights)
        if full is None:
            continue
        target = out / f"backbone_{library}.pth"
        with atomic_path(target) as tmp:
            torch.save(full, tmp)
        written[target] = call
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``swav-export``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="swav-export", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a checkpoint written by swav-train")
    parser.add_argument("--output-dir", help="default: export/ beside the checkpoints folder")
    args = parser.parse_args(argv)
    try:
        written = export(args.checkpoint, args.output_dir)
    except ConfigError as exc:
        print(f"swav-export: error: {exc}", file=sys.stderr)
        return 2
    for file, model in written.items():
        print(f"swav-export: wrote {file}" + (f" (loads into {model})" if model else ""))
    if len(written) == 1:
        print("swav-export: no torchvision or timm state dict: neither library has the "
              "backbone's architecture")
    return 0


if __name__ == "__main__":
    sys.exit(main())
