"""Export a trained backbone for use outside this package.

    swav-export runs/swav_imagenet/checkpoints/last.ckpt            # → runs/.../export/
    swav-export CKPT --output-dir weights/

Writes the method's ``backbone`` weights alone (the ``backbone.`` prefix removed):

- ``backbone.safetensors``: plain tensors, loadable without pickle by any framework;
- ``backbone_torchvision.pth``, when the recipe's backbone is a torchvision model
  (``resnet50``, ``resnet18``): a state dict that ``torchvision.models.resnet50()
  .load_state_dict(...)`` accepts as it is, checked before it is written. torchvision's model
  has a classifier the backbone lacks; it is included as zeros (``fc``), to be trained or
  replaced.

The checkpoint is read with ``torch.load(weights_only=True)``: a file carrying pickled code is
refused, not run. Each file is written to a temporary name and renamed, so an interrupted
export never leaves half a file.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import Tensor

from swav_plugin.host.atomic import atomic_path
from swav_plugin.host.checkpointing import read_training_checkpoint
from swav_plugin.host.errors import ConfigError

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


def torchvision_state_dict(name: str, weights: dict[str, Tensor]) -> dict[str, Tensor] | None:
    """``weights`` completed to what ``torchvision.models.<name>()`` loads strictly, or ``None``
    when ``name`` is not a torchvision model or the shapes differ (e.g. a CIFAR stem)."""
    if name not in torchvision.models.list_models(module=torchvision.models):
        return None
    model = torchvision.models.get_model(name)
    full = dict(weights)
    fc = getattr(model, "fc", None)
    if isinstance(fc, torch.nn.Linear) and "fc.weight" not in full:
        full["fc.weight"] = torch.zeros_like(fc.weight)
        full["fc.bias"] = torch.zeros_like(fc.bias)
    try:
        model.load_state_dict(full, strict=True)
    except RuntimeError:
        return None
    return full


def export(checkpoint_path: str | Path, output_dir: str | Path | None = None) -> list[Path]:
    """Write the backbone of ``checkpoint_path``; returns the files written."""
    from safetensors.torch import save_file

    path = Path(checkpoint_path)
    checkpoint = read_training_checkpoint(path)
    weights = backbone_weights(checkpoint)
    backbone = ((checkpoint.get("recipe") or {}).get("method") or {}).get("backbone") or {}
    name = backbone.get("name", "")
    out = Path(output_dir) if output_dir is not None else path.parent.parent / "export"
    out.mkdir(parents=True, exist_ok=True)
    metadata = {"source": path.resolve().name, "backbone": json.dumps(backbone)}
    written = [out / "backbone.safetensors"]
    with atomic_path(written[0]) as tmp:
        save_file(weights, str(tmp), metadata=metadata)
    full = torchvision_state_dict(name, weights)
    if full is not None:
        written.append(out / "backbone_torchvision.pth")
        with atomic_path(written[1]) as tmp:
            torch.save(full, tmp)
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
    for file in written:
        print(f"swav-export: wrote {file}")
    if len(written) == 1:
        print("swav-export: no torchvision state dict: the backbone is not a torchvision model")
    return 0


if __name__ == "__main__":
    sys.exit(main())
