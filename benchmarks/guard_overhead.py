"""Host cost per step of the non-finite guard at ResNet-50 size, against a per-tensor guard.

    python benchmarks/guard_overhead.py                     # ResNet-50 + SwAV head, LARC
    python benchmarks/guard_overhead.py --arch resnet18 --repeats 5

The guard (:class:`~swav_plugin.host.health.NonFiniteGuard`) copies the trainable state before
each step and puts it back after a step with non-finite gradients, without reading the flag.
Measured for the ImageNet recipe's model (ResNet-50, SwAV head 2048 → 2048 → 128, 3000
prototypes, LARC momentum), per step of its three hooks: the ATen operations (kernel launches
on a GPU) on ``meta`` tensors, laid out as on an accelerator (one flat copy per dtype), and the
time on the CPU (where the guard goes tensor by tensor: there a pass over the memory costs
more than a launch) and on a GPU when there is one. The baseline, measured in the same run, is
the guard as this package had it: the state listed again every step, one ``torch.where`` per
tensor.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from aten_ops import AtenOps
from harness import synchronize
from torch import Tensor, nn

from swav_plugin.host.health import NonFiniteGuard
from swav_plugin.swav.head import SwAVHead
from swav_plugin.zoo import backbones
from swav_plugin.zoo.larc import LARC


class Model(nn.Module):
    """Backbone and SwAV head, with the ``device`` and ``log`` a LightningModule has."""

    def __init__(self, arch: str, device: str) -> None:
        super().__init__()
        with torch.device(device):
            self.backbone = getattr(backbones, arch)()
            width = self.backbone.num_features
            self.head = SwAVHead(width, 2048, 128, 3000)
        self.device = torch.device(device)

    def log(self, *args: Any, **kwargs: Any) -> None:
        """Nothing is logged: the timed steps are not logging steps."""


class PerTensorGuard:
    """The baseline, as this package's guard was: the state listed again at every step as a
    dict, saved with one foreach copy and put back with one ``torch.where`` per tensor."""

    def __init__(self) -> None:
        self._saved: dict[tuple, Tensor] = {}
        self._finite: Tensor | None = None

    @staticmethod
    def _state(pl_module: nn.Module, trainer: Any) -> dict[tuple, Tensor]:
        tensors: dict[tuple, Tensor] = {("p", n): p.data for n, p in pl_module.named_parameters()}
        tensors.update({("b", n): b for n, b in pl_module.named_buffers()})
        for o, optimizer in enumerate(trainer.optimizers):
            for i, p in enumerate(p for g in optimizer.param_groups for p in g["params"]):
                for key, value in optimizer.state.get(p, {}).items():
                    if isinstance(value, Tensor):
                        tensors[("o", o, i, key)] = value
        return tensors

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, i: int) -> None:
        state = self._state(pl_module, trainer)
        if state.keys() != self._saved.keys():
            self._saved = {k: t.detach().clone() for k, t in state.items()}
        else:
            torch._foreach_copy_(list(self._saved.values()), list(state.values()))

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        self._finite = torch.stack(torch._foreach_norm(grads, math.inf)).isfinite().all()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, out: Any, b: Any, i: int) -> None:
        for key, now in self._state(pl_module, trainer).items():
            torch.where(self._finite, now, self._saved[key], out=now)


def step_hooks(
    guard: NonFiniteGuard | PerTensorGuard, trainer: Any, model: Model, optimizer: LARC
) -> None:
    guard.on_train_batch_start(trainer, model, None, 0)
    guard.on_before_optimizer_step(trainer, model, optimizer)
    guard.on_train_batch_end(trainer, model, None, None, 0)


def measure(arch: str, device: str, repeats: int) -> dict[str, Any]:
    model = Model(arch, device)
    optimizer = LARC(model.parameters(), lr=0.1, weight_decay=1e-6)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()  # the momentum buffers exist, as after the first step
    trainer = SimpleNamespace(optimizers=[optimizer], global_step=1, log_every_n_steps=50)
    result: dict[str, Any] = {"device": device, "tensors": sum(
        1 for _ in model.parameters()) + sum(1 for _ in model.buffers()) + len(optimizer.state)}
    for name, guard in (("guard", NonFiniteGuard()), ("per_tensor", PerTensorGuard())):
        step_hooks(guard, trainer, model, optimizer)  # lists the state, allocates the copies
        with AtenOps() as ops:
            step_hooks(guard, trainer, model, optimizer)
        times = []
        for _ in range(repeats if device != "meta" else 0):
            synchronize(device)
            start = time.perf_counter()
            step_hooks(guard, trainer, model, optimizer)
            synchronize(device)
            times.append(1000 * (time.perf_counter() - start))
        result[name] = {"aten_ops": ops.total,
                        "ms_per_step": statistics.median(times) if times else None}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet50", help="a backbone of swav_plugin.zoo")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--output", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    devices = ["meta", "cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = [measure(args.arch, device, args.repeats) for device in devices]
    print(f"non-finite guard per step, {args.arch} + SwAV head (3000 prototypes) + LARC "
          f"momentum, {rows[0]['tensors']} tensors; median of {args.repeats}, "
          f"{torch.get_num_threads()} CPU threads")
    print("| tensors on | guard: ops | ms | per-tensor baseline: ops | ms |")
    print("|---|---|---|---|---|")
    for r in rows:
        ours, base = r["guard"], r["per_tensor"]
        label = {"meta": "meta (as on a GPU; no data)", "cpu": "cpu",
                 "cuda": torch.cuda.get_device_name() if r["device"] == "cuda" else ""}[
                     r["device"]]

        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value:.2f}"

        print(f"| {label} | {ours['aten_ops']} | {ms(ours['ms_per_step'])} | "
              f"{base['aten_ops']} | {ms(base['ms_per_step'])} |")
    if args.output:
        args.output.write_text(json.dumps({"arch": args.arch, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
