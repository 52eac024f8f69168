"""Steps with non-finite gradients are undone, counted, and stop the run if they persist.

A NaN in one step's gradients would otherwise reach every parameter, the optimizer's momentum
and the method's buffers (batch-norm statistics, SwAV's queue), and the run would go on
training garbage for days. :class:`NonFiniteGuard` undoes such a step on the device: it keeps
a copy of the trainable state from before the step and, after the optimizer step, puts it back
where the step's gradients were not all finite (``torch.where`` on a flag that stays on the
device). A non-finite loss gives non-finite gradients, so it is caught the same way. The
decision never waits for the GPU; the longest run of consecutive bad steps is read back only
on the read steps (:mod:`.read_steps`: the logging steps), so the run stops with
:class:`TrainingStopped` at the first read step after ``max_in_a_row`` bad steps in a row;
every checkpoint kept holds good weights, since the bad steps were undone.

On a GPU the copy is one flat buffer per device and dtype, written and put back with a few
operations per step (:class:`StateCopy`) rather than one or two per tensor; the tensors are
listed once, and again only when the optimizer's state grows (a parameter's first update
creates its momentum).

Under DDP the gradients are all-reduced before the check, so every rank skips the same steps.
With fp16 mixed precision, the GradScaler's own skipped steps (overflows while it calibrates
its scale) are counted too. Not undone: tensors on another device than the gradients (e.g.
Adam's step counter kept on the CPU; undoing it would need a read of the flag), state kept
in Python (e.g. the fill count SwAV's queue mirrors on the host, which can run one batch ahead
during the queue's first fill), and buffers a module replaces by new tensors during training.
"""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import Tensor

from swav_plugin.host.errors import RunError
from swav_plugin.host.read_steps import is_read_step


class TrainingStopped(RunError):
    """Training cannot usefully go on (e.g. every step's gradients are NaN); one line says why."""


def _flat_alias(tensor: Tensor) -> Tensor | None:
    """A 1-D view of every element of a dense tensor (any dimension order, e.g. channels-last),
    in memory order; ``None`` when its memory has gaps or overlaps."""
    order = sorted(range(tensor.dim()), key=lambda d: tensor.stride(d), reverse=True)
    try:
        return tensor.permute(order).view(-1)
    except RuntimeError:
        return None


class StateCopy:
    """A saved copy of many tensors, put back where a flag on the device is false.

    On an accelerator the copy is one flat buffer per (device, dtype): :meth:`save` is one
    ``torch.cat`` per buffer, :meth:`restore_unless` a ``cat``, a ``where`` and a foreach
    copy, a few kernel launches for hundreds of tensors. On the CPU, where a launch costs
    little and every pass over the memory counts, the tensors are saved with one foreach copy
    and put back one ``where`` each. Tensors without a flat view (rare) go one by one.

    Args:
        tensors: The tensors to protect.
        flat: Use flat buffers (default: for the tensors not on the CPU).
    """

    def __init__(self, tensors: list[Tensor], flat: bool | None = None) -> None:
        groups: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
        loose: list[Tensor] = []
        for tensor in tensors:
            alias = _flat_alias(tensor) if (flat is None and tensor.device.type != "cpu"
                                            or flat) else None
            if alias is None:
                loose.append(tensor)
            else:
                groups.setdefault((tensor.device, tensor.dtype), []).append(alias)
        self._groups = [(flats, [f.numel() for f in flats], torch.cat(flats))
                        for flats in groups.values()]
        self._loose = loose
        self._loose_saved = [t.detach().clone() for t in loose]

    def save(self) -> None:
        """Copy the tensors' current values."""
        for flats, _, saved in self._groups:
            torch.cat(flats, out=saved)
        if self._loose:
            torch._foreach_copy_(self._loose_saved, self._loose)

    def restore_unless(self, keep: Tensor) -> None:
        """Where ``keep`` (a 0-dim bool on its device) is false, put the saved values back;
        tensors on other devices are left as they are."""
        for flats, sizes, saved in self._groups:
            if saved.device != keep.device:
                continue
            torch.where(keep, torch.cat(flats), saved, out=saved)
            torch._foreach_copy_(flats, saved.split(sizes))
        for tensor, saved in zip(self._loose, self._loose_saved, strict=True):
            if tensor.device == keep.device:
                torch.where(keep, tensor, saved, out=tensor)


def _optimizer_state(trainer: pl.Trainer) -> dict[tuple, Tensor]:
    """The optimizers' state tensors, by (optimizer, parameter position, key)."""
    found: dict[tuple, Tensor] = {}
    for o, optimizer in enumerate(trainer.optimizers):
        for i, p in enumerate(p for g in optimizer.param_groups for p in g["params"]):
            for key, value in optimizer.state.get(p, {}).items():
                if isinstance(value, Tensor):
                    found[(o, i, key)] = value
    return found


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
        self._copy: StateCopy | None = None
        self._listed: tuple[int, ...] | None = None  # optimizer state sizes when listed
        self._optimizer_keys: set[tuple] = set()
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
    def _state_sizes(trainer: pl.Trainer) -> tuple[int, ...]:
        return tuple(len(optimizer.state) for optimizer in trainer.optimizers)

    def _list_state(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Everything an optimizer step and its forward pass change: parameters, buffers and
        the optimizer state."""
        optimizer_state = _optimizer_state(trainer)
        tensors = [p.data for p in pl_module.parameters()]
        tensors += [b for b in pl_module.buffers()]
        self._copy = StateCopy(tensors + list(optimizer_state.values()))
        self._optimizer_keys = set(optimizer_state)
        self._listed = self._state_sizes(trainer)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._copy is None or self._state_sizes(trainer) != self._listed:
            self._list_state(trainer, pl_module)
        else:
            self._copy.save()
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
        if self._state_sizes(trainer) != self._listed:
            # state created by this very step (an optimizer buffer at a parameter's first
            # update): zero is what the optimizers treat as "not started"
            for key, value in _optimizer_state(trainer).items():
                if key not in self._optimizer_keys and value.device == finite.device:
                    torch.where(finite, value, torch.zeros_like(value), out=value)
        self._copy.restore_unless(finite)
        bad = (~finite).long()
        self._skipped += bad
        self._streak.mul_(bad).add_(bad)
        torch.maximum(self._worst, self._streak, out=self._worst)
        if not is_read_step(trainer):
            return
        pl_module.log("train/skipped_steps", self._skipped.float() + self._resumed_skipped,
                      batch_size=1)
        worst = int(self._worst)  # the only read back: on read steps
        self._worst.zero_()
        if worst >= self.max_in_a_row:
            raise TrainingStopped(
                f"{worst} optimizer steps in a row had non-finite gradients (up to step "
                f"{trainer.global_step}; {self.skipped} skipped in all), so training "
                "stopped; the checkpoints written before them are kept. Lower the learning "
                "rate, check the data, or train in bf16 or fp32 rather than fp16"
            )
