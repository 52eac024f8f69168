"""Steps with non-finite gradients are undone, counted, and stop the run if they persist.

A NaN in one step's gradients would otherwise reach every parameter, the optimizer's momentum
and the method's buffers (batch-norm statistics, SwAV's queue), and the run would go on
training garbage for days. :class:`NonFiniteGuard` undoes such a step on the device: it keeps
a copy of the trainable state from before the step and, after the optimizer step, puts it back
where the step's gradients were not all finite (``torch.where`` on a flag that stays on the
device). A non-finite loss gives non-finite gradients, so it is caught the same way. The
decision never waits for the GPU; the longest run of consecutive bad steps is read back only
every ``max_in_a_row`` steps, so the run stops with :class:`TrainingStopped` within
``max_in_a_row`` steps of the ``max_in_a_row``-th bad one in a row; every checkpoint kept
holds good weights, since the bad steps were undone.

Under DDP the gradients are all-reduced before the check, so every rank skips the same steps.
With fp16 mixed precision, the GradScaler's own skipped steps (overflows while it calibrates
its scale) are counted too. Not undone: tensors on another device than the gradients (e.g.
Adam's step counter kept on the CPU; undoing it would need a read of the flag) and state kept
in Python (e.g. the fill count SwAV's queue mirrors on the host, which can run one batch ahead
during the queue's first fill).
"""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import Tensor


class TrainingStopped(RuntimeError):
    """Training cannot usefully go on (e.g. every step's gradients are NaN); one line says why."""


class NonFiniteGuard(Callback):
    """Skips and counts optimizer steps whose gradients are not all finite.

    Args:
        max_in_a_row: Stop the run after this many consecutive skipped steps.

    Logged (on logging steps): ``train/skipped_steps``, the total so far.
    """

    def __init__(self, max_in_a_row: int = 20) -> None:
        if max_in_a_row < 1:
            raise ValueError(f"max_in_a_row must be at least 1, got {max_in_a_row}")
        self.max_in_a_row = max_in_a_row
        self._saved: dict[tuple, Tensor] = {}
        self._finite: Tensor | None = None
        self._skipped: Tensor | None = None  # total, on the device
        self._streak: Tensor | None = None  # consecutive, on the device
        self._worst: Tensor | None = None  # longest streak since the last read
        self._resumed_skipped = 0  # skipped before the checkpoint this run resumed from

    @property
    def skipped(self) -> int:
        """Steps skipped so far in this run, resumes included (reads the device)."""
        return self._resumed_skipped + (0 if self._skipped is None else int(self._skipped))

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped}  # read once per checkpoint

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resumed_skipped = state_dict.get("skipped", 0)

    @staticmethod
    def _state(pl_module: pl.LightningModule, trainer: pl.Trainer) -> dict[tuple, Tensor]:
        """Every tensor an optimizer step and its forward pass change, by a stable key."""
        tensors: dict[tuple, Tensor] = {("p", n): p.data for n, p in
                                        pl_module.named_parameters()}
        tensors.update({("b", n): b for n, b in pl_module.named_buffers()})
        for o, optimizer in enumerate(trainer.optimizers):
            for i, p in enumerate(p for g in optimizer.param_groups for p in g["params"]):
                for key, value in optimizer.state.get(p, {}).items():
                    if isinstance(value, Tensor):
                        tensors[("o", o, i, key)] = value
        return tensors

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        state = self._state(pl_module, trainer)
        if state.keys() != self._saved.keys() or any(
            t.shape != self._saved[k].shape for k, t in state.items()
        ):
            self._saved = {k: t.detach().clone() for k, t in state.items()}
        else:
            torch._foreach_copy_(list(self._saved.values()), list(state.values()))
        self._finite = None
        if self._skipped is None:
            self._skipped, self._streak, self._worst = (
                torch.zeros((), dtype=torch.long, device=pl_module.device) for _ in range(3)
            )

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"]
                 if p.grad is not None]
        if grads:  # the max-norm overflows only if an element is inf (fp16 2-norms can)
            self._finite = torch.stack(torch._foreach_norm(grads, math.inf)).isfinite().all()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self._finite is None:  # no optimizer step this batch
            return
        finite = self._finite
        for key, now in self._state(pl_module, trainer).items():
            before = self._saved.get(key)
            if before is None:
                # created by this very step (an optimizer buffer at a parameter's first
                # update): zero is what the optimizers treat as "not started"
                before = torch.zeros_like(now)
            elif before.shape != now.shape:
                continue  # materialised by this step (a lazy module): nothing to go back to
            if now.device != finite.device:
                continue  # see the module docstring
            torch.where(finite, now, before, out=now)
        bad = (~finite).long()
        self._skipped += bad
        self._streak.mul_(bad).add_(bad)
        torch.maximum(self._worst, self._streak, out=self._worst)
        every = trainer.log_every_n_steps
        if every and trainer.global_step % every == 0:
            pl_module.log("train/skipped_steps", self._skipped.float() + self._resumed_skipped,
                          batch_size=1)
        if trainer.global_step % self.max_in_a_row == 0:
            worst = int(self._worst)  # the only read back: every max_in_a_row steps
            self._worst.zero_()
            if worst >= self.max_in_a_row:
                raise TrainingStopped(
                    f"{worst} optimizer steps in a row had non-finite gradients (up to step "
                    f"{trainer.global_step}; {self.skipped} skipped in all), so training "
                    "stopped; the checkpoints written before them are kept. Lower the learning "
                    "rate, check the data, or train in bf16 or fp32 rather than fp16"
                )
