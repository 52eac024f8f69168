"""LARC: SGD with a layer-wise adaptive rate, as the official SwAV code trains [0, 1, 2].

The official ``main_swav.py`` wraps ``torch.optim.SGD(model.parameters(), lr, momentum=0.9,
weight_decay=wd)`` in apex's ``LARC(trust_coefficient=0.001, clip=False)`` [2]. For every
parameter ``p`` with gradient ``g`` (batch-norm weights and biases included):

    η_p = η ‖p‖ / (‖g‖ + wd ‖p‖ + ε)            if ‖p‖ ≠ 0 and ‖g‖ ≠ 0
    d   = η_p (g + wd p)                         (d = g, no weight decay, otherwise)
    v  ← μ v + d,    p ← p − lr v                (SGD's momentum, no dampening)

Two other real variants are options:

- ``clip=True`` (apex's clipping mode, solo-learn's ``clip_lr``): ``η_p ← min(η_p / lr, 1)``,
  so the parameter's rate is ``min(η_p, lr)`` instead of ``η_p · lr``;
- ``exclude_bias_norm=True`` (solo-learn's ``exclude_bias_n_norm`` [3]): one-dimensional
  parameters (biases, normalisation weights) get neither the adaptation nor weight decay.

Everything is computed with tensor operations (foreach norms, ``torch.where``), so a step
reads nothing back from the device; apex's, solo-learn's and lightly's versions compare each
norm with zero in Python, two device-to-host reads per parameter and step.

- [0]: LARS, You et al. 2017, https://arxiv.org/abs/1708.03888
- [1]: SwAV, 2020, https://arxiv.org/abs/2006.09882
- [2]: https://github.com/facebookresearch/swav (``main_swav.py``); NVIDIA apex
  (``apex/parallel/LARC.py``)
- [3]: https://github.com/vturrisi/solo-learn (``solo/utils/lars.py``)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor


class LARC(torch.optim.Optimizer):
    """SGD with momentum whose gradients are scaled per parameter by a LARS trust ratio.

    Args:
        params: Parameters or parameter groups (a group may set any of the options below).
        lr: Learning rate (the schedule's; each parameter's rate is scaled by its ratio).
        momentum: SGD momentum μ.
        weight_decay: Weight decay, on every parameter the ratio adapts.
        trust_coefficient: η (official SwAV: 0.001; solo-learn's CIFAR recipe: 0.02).
        clip: Clip the adaptive rate at the learning rate instead of scaling by it.
        exclude_bias_norm: One-dimensional parameters keep their plain gradient: no
            adaptation, no weight decay.
        eps: Added to the ratio's denominator.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
        clip: bool = False,
        exclude_bias_norm: bool = False,
        eps: float = 1e-8,
    ) -> None:
        for name, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay),
                            ("eps", eps)):
            if value < 0:
                raise ValueError(f"{name} must be 0 or more, got {value}")
        if trust_coefficient <= 0:
            raise ValueError(f"trust_coefficient must be positive, got {trust_coefficient}")
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                    "trust_coefficient": trust_coefficient, "clip": clip,
                    "exclude_bias_norm": exclude_bias_norm, "eps": eps}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """One optimizer step (``closure`` re-evaluates the loss, as in ``torch.optim``)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            directions = self._directions(group, params)
            self._momentum_step(group, params, directions)
        return loss

    @staticmethod
    def _directions(group: dict[str, Any], params: list[Tensor]) -> list[Tensor]:
        """``d`` of every parameter: the adapted, weight-decayed gradient, or the plain one."""
        adapt = [not (group["exclude_bias_norm"] and p.ndim == 1) for p in params]
        adapted = [p for p, a in zip(params, adapt, strict=True) if a]
        if not adapted:
            return [p.grad for p in params]
        grads = [p.grad for p in adapted]
        p_norm = torch.stack(torch._foreach_norm(adapted))
        g_norm = torch.stack(torch._foreach_norm(grads))
        wd = group["weight_decay"]
        ratio = group["trust_coefficient"] * p_norm / (g_norm + p_norm * wd + group["eps"])
        if group["clip"]:
            ratio = (ratio / group["lr"]).clamp(max=1.0)  # lr 0: inf, clamped to 1
        active = (p_norm != 0) & (g_norm != 0)
        ratio = torch.where(active, ratio, 1.0)
        decay = torch.where(active, wd, 0.0).to(p_norm.dtype)
        scaled = torch._foreach_mul(adapted, list(decay.unbind()))  # wd p, or 0
        torch._foreach_add_(scaled, grads)
        torch._foreach_mul_(scaled, list(ratio.unbind()))
        found = iter(scaled)
        return [next(found) if a else p.grad for p, a in zip(params, adapt, strict=True)]

    def _momentum_step(
        self, group: dict[str, Any], params: list[Tensor], directions: list[Tensor]
    ) -> None:
        """``v ← μ v + d`` (``v = d`` at a parameter's first step), ``p ← p − lr v``."""
        momentum, lr = group["momentum"], group["lr"]
        if momentum == 0:
            torch._foreach_add_(params, directions, alpha=-lr)
            return
        old, new = [], []
        for p, d in zip(params, directions, strict=True):
            state = self.state[p]
            if "momentum_buffer" in state:
                old.append(state["momentum_buffer"])
                new.append(d)
            else:
                state["momentum_buffer"] = d.clone()
        if old:
            torch._foreach_mul_(old, momentum)
            torch._foreach_add_(old, new)
        torch._foreach_add_(params, [self.state[p]["momentum_buffer"] for p in params],
                            alpha=-lr)
