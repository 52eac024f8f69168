"""Operations and time per batch of ``data.augment: gpu`` for a recipe: on the device, and in
the DataLoader worker that draws the batch's random parameters.

    python benchmarks/augment_ops.py                  # recipes/cifar10_multicrop.yaml, CPU
    python benchmarks/augment_ops.py --device cuda --recipe recipes/cifar10_multicrop.yaml \
        --recipe recipes/stl10.yaml

For each recipe: its transform's batched version and its per-device batch size, on random
``uint8`` images of the data set's size (CIFAR 32 px, STL-10 96 px, digits its ``image_size``,
an image folder the transform's ``load_size``). The draws are made on the CPU, as a worker
makes them; the crops on ``--device``, as the training process makes them after the batch is
moved there. Reported for each: the ATen operations (on a GPU, kernel launches, each costing
the host a few microseconds whatever its size) and the median time of ``--repeats`` batches.
The budget for ``cifar10_multicrop.yaml``: at most 150 operations on the device per batch.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from aten_ops import AtenOps
from harness import NATIVE_SIZE, pick_device, synchronize
from lightning_fabric.utilities.apply_func import move_data_to_device

from swav_plugin.host.plugins import load_plugins
from swav_plugin.host.recipe import build_component
from swav_plugin.host.resolve import load_recipe

ROOT = Path(__file__).resolve().parents[1]
DEVICE_BUDGET = {"cifar10_multicrop.yaml": 150}


def image_size(dataset: dict[str, Any], transform: Any) -> int:
    if dataset["name"] == "digits":
        return dataset.get("image_size", 8)
    return NATIVE_SIZE.get(dataset["name"], transform.load_size)


def median_ms(fn: Any, device: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def measure(path: Path, device: str, repeats: int) -> dict[str, Any]:
    recipe = load_recipe(path, [])
    data = recipe["data"]
    transform = build_component(data["transform"], "transform")
    augmentation = transform.batch_augmentation()
    batch, size = data["batch_size"], image_size(data["dataset"], transform)
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0)).to(device)
    generator = torch.Generator().manual_seed(1)

    def draw() -> Any:
        return augmentation.draw(batch, size, size, generator)

    draws = move_data_to_device(draw(), device)  # as Lightning moves a batch
    augmentation(images, draws)  # warm-up
    with AtenOps() as on_worker:
        draw()
    with AtenOps() as on_device:
        crops = augmentation(images, draws)
    return {
        "recipe": path.name,
        "batch": batch,
        "image_size": size,
        "crops": [list(c.shape) for c in crops],
        "device_ops": on_device.total,
        "device_ops_budget": DEVICE_BUDGET.get(path.name),
        "device_ops_by_name": dict(on_device.counts.most_common()),
        "device_ms": median_ms(lambda: augmentation(images, draws), device, repeats),
        "worker_ops": on_worker.total,
        "worker_ms": median_ms(draw, "cpu", repeats),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", type=Path, action="append",
                        help="a recipe with data.augment: gpu (repeatable; default "
                             "cifar10_multicrop.yaml)")
    parser.add_argument("--device", default="cpu", help="auto, cuda or cpu (the crops' device)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    load_plugins()
    rows = [measure(path, device, args.repeats)
            for path in args.recipe or [ROOT / "recipes" / "cifar10_multicrop.yaml"]]
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(f"augment: gpu per batch; crops on {name}, draws on the CPU (a worker), "
          f"{torch.get_num_threads()} CPU threads, median of {args.repeats}")
    print("| recipe | batch | ops on the device | budget | device ms | ops in the worker "
          "| worker ms |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        budget = r["device_ops_budget"] or "-"
        print(f"| {r['recipe']} | {r['batch']} × {r['image_size']} px | {r['device_ops']} | "
              f"{budget} | {r['device_ms']:.1f} | {r['worker_ops']} | {r['worker_ms']:.1f} |")
    if args.output:
        args.output.write_text(json.dumps({"device": name, "rows": rows}, indent=2))
    over = [r["recipe"] for r in rows
            if r["device_ops_budget"] and r["device_ops"] > r["device_ops_budget"]]
    if over:
        print(f"over the budget of device operations: {', '.join(over)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
