"""Rehearse a recipe before launch: everything built, random data, a few real optimizer steps.

``swav-train RECIPE --dry-run`` builds the method, the transform, the collate and the trainer
exactly as a real run would, replaces only the data set with random images large enough for
the transform's crops, and runs ``--steps`` optimizer steps on one device of whatever kind is
present. It prints the shapes of every batch tensor, the time and peak memory of each step and
the loss, and writes nothing into the recipe's run directory.

The launch's world size (``trainer.devices × trainer.num_nodes``) is handed to the method's
``check_launch`` and ``plan_launch``, so that its start-up checks and learning-rate scaling
are those of the real launch even though the rehearsal runs on one device.
"""

from __future__ import annotations

import copy
import math
import resource
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from swav_plugin.host.build import build
from swav_plugin.host.errors import ConfigError
from swav_plugin.host.random_images import RANDOM_IMAGES
from swav_plugin.host.recipe import build_component, resolve_component
from swav_plugin.host.sections import launch_world_size

#: Reduced precisions a CPU rehearsal replaces with fp32: fp16 does not run there and bf16 is
#: emulated, many times slower than fp32, on CPUs without native bf16 (AVX2 machines). The
#: rehearsal checks shapes, memory and the launch; mixed precision is checked on the GPU.
_CPU_PRECISION = {p: "32" for p in ("16-mixed", "16", "16-true", "bf16-mixed", "bf16",
                                    "bf16-true")}


def describe_batch(batch: Any) -> str:
    """Shapes of the tensors in a (nested) batch, equal shapes counted: ``2×(64, 3, 224, 224)``."""
    shapes: list[tuple[int, ...]] = []

    def walk(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            shapes.append(tuple(value.shape))
        elif isinstance(value, Mapping):
            for v in value.values():
                walk(v)
        elif isinstance(value, Sequence) and not isinstance(value, str):
            for v in value:
                walk(v)

    walk(batch)
    runs: list[list[Any]] = []
    for shape in shapes:
        if runs and runs[-1][1] == shape:
            runs[-1][0] += 1
        else:
            runs.append([1, shape])
    return ", ".join(f"{n}×{tuple(s)}" if n > 1 else str(tuple(s)) for n, s in runs)


@dataclass
class StepRecord:
    """One rehearsed optimizer step."""

    seconds: float
    peak_memory_bytes: int
    memory_kind: str
    loss: float
    batch: str


class DryRunReport(Callback):
    """Records time, peak memory, loss and batch shapes of every training step."""

    def __init__(self) -> None:
        self.steps: list[StepRecord] = []
        self._start = 0.0
        self._batch = ""

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch = describe_batch(batch)
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)
        self._start = time.perf_counter()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        device = pl_module.device
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            peak, kind = torch.cuda.max_memory_allocated(device), "GPU allocated"
        else:
            # ru_maxrss is in KiB on Linux and bytes on macOS; it is the process's peak so far.
            scale = 1 if sys.platform == "darwin" else 1024
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
            kind = "process RSS"
        loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
        value = float(loss.detach()) if isinstance(loss, torch.Tensor) else math.nan
        self.steps.append(
            StepRecord(time.perf_counter() - self._start, peak, kind, value, self._batch)
        )


def rehearsal_recipe(recipe: dict[str, Any], steps: int, output_dir: str) -> dict[str, Any]:
    """The recipe with random data, one device, ``steps`` steps and a throw-away output dir."""
    rehearsal = copy.deepcopy(recipe)
    data = rehearsal["data"]
    transform = build_component(data["transform"], "transform") if data.get("transform") else None
    sizes = getattr(transform, "crop_sizes", None) or [224]
    # A little larger than the largest crop, so that random resized crops really crop.
    node = {"name": RANDOM_IMAGES, "num_samples": data["batch_size"] * steps,
            "size": math.ceil(max(sizes) * 1.15)}
    data["dataset"] = resolve_component(node, "dataset", "data.dataset")
    data["num_workers"] = 0
    data["pin_memory"] = torch.cuda.is_available()
    trainer = rehearsal["trainer"]
    for key in ("devices", "num_nodes", "strategy", "max_time", "limit_train_batches"):
        trainer.pop(key, None)
    trainer.update(accelerator="auto", devices=1, max_epochs=1, max_steps=steps,
                   enable_progress_bar=False, enable_model_summary=False)
    precision = str(trainer.get("precision", "32"))
    if not torch.cuda.is_available() and precision in _CPU_PRECISION:
        trainer["precision"] = _CPU_PRECISION[precision]
    rehearsal["run"]["output_dir"] = output_dir
    return rehearsal


def dry_run(recipe: dict[str, Any], steps: int = 2) -> list[StepRecord]:
    """Rehearse a resolved recipe (see the module docstring); returns the step records."""
    if steps < 1:
        raise ConfigError(f"--steps must be at least 1, got {steps}")
    planned = launch_world_size(recipe["trainer"])
    report = DryRunReport()
    with tempfile.TemporaryDirectory(prefix="dry-run-") as tmp:
        rehearsal = rehearsal_recipe(recipe, steps, tmp)
        method, data, trainer = build(rehearsal, extra_callbacks=[report],
                                      planned_world_size=planned)
        print(f"dry run: {steps} step(s) on {trainer.strategy.root_device}, precision "
              f"{rehearsal['trainer'].get('precision', '32')}, random {data.dataset.size} px "
              f"images; launch world size {planned or 'unknown'}")
        trainer.fit(method, datamodule=data)
    for i, step in enumerate(report.steps, 1):
        print(f"  step {i}: {step.seconds:.2f} s, peak {step.memory_kind} "
              f"{step.peak_memory_bytes / 2**30:.2f} GiB, loss {step.loss:.4f}; "
              f"batch {step.batch}")
    return report.steps
