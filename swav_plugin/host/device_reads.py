"""Find what makes a training step wait for the device: the host reads of tensor values.

``.item()``, ``bool(t)``, ``int(t)``, ``float(t)``, ``.tolist()``, ``.cpu()``, ``.numpy()`` and
``operator.index(t)`` copy a value to the host, and on a GPU each waits until the device has
run everything queued before it: one such read per step makes every step synchronous.
:class:`DeviceReadCounter` counts them from any module (the method, Lightning, lightly, torch)
by the optimizer step they happen in, from the start of a step's batch to the start of the
next (so Lightning's own work after the step hooks is included; epoch ends are left out),
with the file and line that asked. List it in a recipe to check a run::

    callbacks:
      - {name: device_read_counter}

It sees the reads made through these Python methods only. A wait inside a C++ operation
(``torch.allclose``, ``torch.equal``, boolean-mask indexing, ``nonzero``, a blocking copy to
or from the GPU) is not counted: on a GPU, ``torch.cuda.set_sync_debug_mode("error")`` is the
complete check (``benchmarks/device_reads.py --sync-debug``). On a CPU every tensor is a host
tensor, so reads that would not stall a GPU are counted too (e.g. of the CPU tensors a data
loader makes in the main process with ``num_workers: 0``).
"""

from __future__ import annotations

import collections
import os
import traceback
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_info

from swav_plugin.host.read_steps import is_read_step
from swav_plugin.host.registry import CALLBACKS

#: The ``torch.Tensor`` methods that copy a value to the host.
READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "cpu", "numpy")
_TENSOR_FILE = f"torch{os.sep}_tensor.py"


def _caller() -> str | None:
    """``path:line`` of the innermost frame outside this module and torch's tensor class;
    ``None`` inside an ``on_train_epoch_end`` hook (callbacks run it in their list order, so
    one listed before the counter would run it while the counter still counts the step)."""
    frames = traceback.extract_stack()[:-2]
    if any(frame.name == "on_train_epoch_end" for frame in frames):
        return None
    for frame in reversed(frames):
        if not frame.filename.endswith((_TENSOR_FILE, __file__)):
            return f"{frame.filename.rpartition('site-packages' + os.sep)[2]}:{frame.lineno}"
    return "?"


@CALLBACKS.register("device_read_counter")
class DeviceReadCounter(Callback):
    """Counts host reads of tensor values per optimizer step; prints a summary after fit.

    Attributes:
        by_step: For each step (numbered by ``global_step`` at its start), the reads made in
            it as ``(method, "path:line")`` pairs.
        read_steps: The steps on which the runner's callbacks may read (:mod:`.read_steps`).
        checkpoint_steps: The steps that saved a checkpoint (outside an epoch's end).
    """

    def __init__(self) -> None:
        self.by_step: dict[int, list[tuple[str, str]]] = collections.defaultdict(list)
        self.read_steps: set[int] = set()
        self.checkpoint_steps: set[int] = set()
        self._step: int | None = None
        self._originals: dict[str, Any] = {}

    def _install(self) -> None:
        for name in READS:
            original = getattr(torch.Tensor, name)
            self._originals[name] = original

            def read(tensor: torch.Tensor, *args: Any, _name: str = name,
                     _original: Any = original, **kwargs: Any) -> Any:
                where = _caller() if self._step is not None else None
                if where is not None:
                    self.by_step[self._step].append((_name, where))
                return _original(tensor, *args, **kwargs)

            setattr(torch.Tensor, name, read)

    def _uninstall(self) -> None:
        for name, original in self._originals.items():
            setattr(torch.Tensor, name, original)
        self._originals.clear()
        self._step = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._install()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._uninstall()  # also after an exception

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._step = trainer.global_step

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if is_read_step(trainer):
            self.read_steps.add(trainer.global_step - 1)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self._step is not None:
            self.checkpoint_steps.add(self._step)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._step = None  # the epoch's end (its checkpoint, its metrics) is not a step

    def step_kinds(self, steps: int) -> dict[str, list[int]]:
        """The first ``steps`` steps by kind: ``first`` (step 0, which may run one-time
        checks), ``logging`` (read steps), ``checkpoint`` (the other steps that saved one)
        and ``other``."""
        logging = sorted(s for s in self.read_steps if 0 < s < steps)
        checkpoint = sorted(s for s in self.checkpoint_steps - self.read_steps if 0 < s < steps)
        special = {0} | self.read_steps | self.checkpoint_steps
        other = [s for s in range(steps) if s not in special]
        return {"first": [0][:steps], "other": other, "logging": logging,
                "checkpoint": checkpoint}

    def summary(self, steps: int) -> str:
        """Reads per step of each kind of step, and the commonest sources of each."""
        lines = []
        for label, chosen in self.step_kinds(steps).items():
            reads = [r for s in chosen for r in self.by_step.get(s, [])]
            per_step = len(reads) / len(chosen) if chosen else 0.0
            lines.append(f"device reads: {per_step:.1f} per step on {len(chosen)} {label} steps")
            for (name, where), count in collections.Counter(reads).most_common(5):
                lines.append(f"  {count} x {name} at {where}")
        return "\n".join(lines)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        rank_zero_info(self.summary(trainer.global_step))
