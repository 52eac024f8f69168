"""Host reads of device values per training step, for a recipe run through the runner.

    python benchmarks/device_reads.py                       # the demo recipe, 42 steps, CPU
    python benchmarks/device_reads.py --recipe recipes/cifar10_multicrop.yaml --device cuda \
        --sync-debug

Trains the recipe as ``swav-train`` does (every callback of the runner, the recipe's
optimiser, logging interval and checkpoints) with
:class:`~swav_plugin.host.device_reads.DeviceReadCounter`, and prints the reads per step on
the logging steps, the checkpoint steps and all other steps, with their commonest sources.
Recipes whose data set must be downloaded train on random images of its shape instead. On a
CPU every tensor is a host tensor: the loading runs in worker processes (at least one), where
nothing is counted. With ``--sync-debug`` on a GPU, every step after the first that neither
logs, checkpoints nor ends an epoch runs under ``torch.cuda.set_sync_debug_mode("error")``: any
operation that waits for the device there (a read, also inside a C++ operation, or a blocking
copy) fails the run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from harness import NATIVE_SIZE, pick_device

from swav_plugin.host.device_reads import DeviceReadCounter
from swav_plugin.host.plugins import load_plugins
from swav_plugin.host.read_steps import DEFAULT_INTERVAL
from swav_plugin.host.resolve import load_recipe
from swav_plugin.host.runner import run

ROOT = Path(__file__).resolve().parents[1]
DOWNLOADED = ("cifar10", "cifar100", "stl10", "image_folder")


class SyncDebug(pl.Callback):
    """``set_sync_debug_mode("error")`` during the steps that must not wait for the device."""

    def __init__(self, log_every: int, checkpoint_every: int | None, batches: int) -> None:
        self.log_every, self.checkpoint_every, self.batches = log_every, checkpoint_every, batches

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        done = trainer.global_step + 1  # counting the step about to run
        reads = (done == 1 or done % self.log_every == 0 or batch_idx + 1 == self.batches
                 or bool(self.checkpoint_every) and done % self.checkpoint_every == 0)
        torch.cuda.set_sync_debug_mode(0 if reads else "error")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        torch.cuda.set_sync_debug_mode(0)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        torch.cuda.set_sync_debug_mode(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "demo_digits.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a recipe override, as swav-train takes them (repeatable)")
    parser.add_argument("--device", default="cpu", help="auto, cuda or cpu")
    parser.add_argument("--steps", type=int, default=42, help="optimizer steps to train")
    parser.add_argument("--sync-debug", action="store_true",
                        help="on a GPU: fail on any device wait outside the reading steps")
    parser.add_argument("--output", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    if args.sync_debug and device != "cuda":
        parser.error("--sync-debug needs a GPU")
    load_plugins()
    recipe = load_recipe(args.recipe, args.set)
    data, trainer = recipe["data"], recipe["trainer"]
    if data["dataset"]["name"] in DOWNLOADED:
        size = NATIVE_SIZE.get(data["dataset"]["name"], 224)
        data["dataset"] = {"name": "benchmark_random_uint8", "size": size,
                           "num_samples": data["batch_size"] * (args.steps + 1)}
    data["num_workers"] = max(1, data.get("num_workers", 1))
    for key in ("devices", "num_nodes", "strategy", "sync_batchnorm"):
        trainer.pop(key, None)
    trainer.update(accelerator="gpu" if device == "cuda" else "cpu", devices=1,
                   max_steps=args.steps, enable_model_summary=False)
    if device == "cpu" and "16" in str(trainer.get("precision", "32")):
        trainer["precision"] = "32"  # a GPU precision: fp32 on the CPU, as a dry run does
    counter = DeviceReadCounter()
    callbacks: list[pl.Callback] = [counter]
    with tempfile.TemporaryDirectory(prefix="device-reads-") as tmp:
        recipe["run"].update(output_dir=tmp, resume=False)
        if args.sync_debug:
            batches = data["dataset"].get("num_samples", 0) // data["batch_size"] or 10**9
            callbacks.append(SyncDebug(trainer.get("log_every_n_steps", 50) or DEFAULT_INTERVAL,
                                       recipe["run"].get("checkpoint_every_n_steps"), batches))
        done = run(recipe, extra_callbacks=callbacks)
    kinds = counter.step_kinds(done.global_step)
    rows = {kind: {"steps": len(steps),
                   "reads_per_step": (sum(len(counter.by_step.get(s, [])) for s in steps)
                                      / len(steps) if steps else 0.0),
                   "max_reads": max((len(counter.by_step.get(s, [])) for s in steps), default=0)}
            for kind, steps in kinds.items()}
    print(f"\n{args.recipe.name} on {device}, {done.global_step} steps"
          f"{', sync debug: no wait outside the reading steps' if args.sync_debug else ''}")
    print("| steps | count | reads per step | most in one step |")
    print("|---|---|---|---|")
    for kind, row in rows.items():
        print(f"| {kind} | {row['steps']} | {row['reads_per_step']:.1f} | {row['max_reads']} |")
    if args.output:
        args.output.write_text(json.dumps({"recipe": args.recipe.name, "device": device,
                                           "steps": done.global_step, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
