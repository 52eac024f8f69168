"""Training throughput on one device, like for like: this plugin's recipe step vs lightly's SwAV
vs our on-device ceiling.

    python benchmarks/throughput.py          # GPU: recipes/cifar10_multicrop.yaml as it is
    python benchmarks/throughput.py --device cpu --batch-size 8 --steps 3 --warmup 1 \
        --repeats 1 --workers 0 --precision 32 \
        --set method.head.num_prototypes=8 --set method.head.hidden_dim=64  # a CPU-sized check

The arms share the recipe's model sizes, batch, crops, colour augmentation, optimiser and
precision, and alternate (a, b, b', c, a, b, ...):

- (a) ours: the recipe's training step exactly as ``swav-train`` builds it (the runner's
  callbacks, optimiser and schedule, logging interval, ``data.augment``, memory format; the
  progress bar off, which redraws on logging steps only, reading what the logger reads), on
  random ``uint8`` images of the data set's shape held in memory;
- (b) lightly: SwAV from lightly's modules as its documentation assembles it
  (``SwaVProjectionHead``, ``SwaVPrototypes``, ``SwaVLoss``, one forward pass per crop) in a
  plain PyTorch loop, fed by lightly's ``SwaVTransform`` with the recipe's crops and colour
  settings in a DataLoader of ``--workers`` processes; lightly's ``LARS`` for a recipe with
  ``lars`` (SGD otherwise); the same autocast, with a GradScaler under fp16 as Lightning
  uses for (a); contiguous memory format, and (b') the same in channels-last;
- (c) ceiling: (a)'s module, callbacks and optimiser with the crops already on the device
  (no loading, no augmentation).

Both models use this package's CIFAR ResNet-18 (the recipe's backbone). Each arm trains
``--warmup`` steps first (by default enough for a loader to drain what its workers prefetched
while the first steps were slow: 2 × workers × prefetch factor), then ``--steps`` timed steps
(at least 200 by default). Pixel values do not change the cost: no data set can be downloaded
here. Prints images/s, the ratios a/b, a/b' and a/c, step time, peak memory and the share of
step time spent waiting for data.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from harness import (
    NATIVE_SIZE,
    OnDeviceBatches,
    RandomUint8,
    StepTimer,
    Timing,
    peak_memory_gib,
    pick_device,
    reset_peak_memory,
    synchronize,
)
from lightly.loss import SwaVLoss
from lightly.models.modules import SwaVProjectionHead, SwaVPrototypes
from lightly.transforms.swav_transform import SwaVTransform
from lightly.utils.lars import LARS
from torch import nn
from torch.utils.data import DataLoader, Dataset

from swav_plugin.host.build import build
from swav_plugin.host.data_wait import DataWaitMonitor
from swav_plugin.host.plugins import load_plugins
from swav_plugin.host.recipe import build_component
from swav_plugin.host.resolve import load_recipe, resolve

ROOT = Path(__file__).resolve().parents[1]
PREFETCH_FACTOR = 2  # the DataLoader's default


def benchmark_recipe(args: argparse.Namespace, output_dir: str) -> dict[str, Any]:
    """The recipe with random in-memory data, one device and ``warmup + steps`` steps."""
    recipe = copy.deepcopy(args.recipe_dict)
    data, trainer = recipe["data"], recipe["trainer"]
    steps = args.warmup + args.steps
    data.update(batch_size=args.batch_size, pin_memory=args.device == "cuda",
                dataset={"name": "benchmark_random_uint8", "size": args.image_size,
                         "num_samples": args.batch_size * (steps + 1)})  # no epoch end
    if args.workers is not None:
        data["num_workers"] = args.workers
    for key in ("devices", "num_nodes", "strategy", "max_epochs", "sync_batchnorm"):
        trainer.pop(key, None)
    trainer.update(accelerator="gpu" if args.device == "cuda" else "cpu", devices=1,
                   max_steps=steps, precision=args.precision, enable_model_summary=False,
                   enable_progress_bar=False)
    recipe["run"].update(output_dir=output_dir, resume=False)
    return resolve(recipe)


def run_ours(args: argparse.Namespace, ceiling: bool = False) -> Timing:
    """Arm (a), or with ``ceiling`` arm (c): the same module and trainer on ready crops."""
    with tempfile.TemporaryDirectory(prefix="throughput-") as tmp:
        recipe = benchmark_recipe(args, tmp)
        timer = StepTimer(args.warmup, args.device)
        method, data, trainer = build(recipe, extra_callbacks=[timer])
        if ceiling:
            crops = [torch.randn(n * args.batch_size, 3, size, size, device=args.device)
                     for n, size in args.crop_runs]
            labels = torch.zeros(args.batch_size, dtype=torch.long, device=args.device)
            data = OnDeviceBatches((crops, labels), args.warmup + args.steps, args.batch_size)
        trainer.fit(method, datamodule=data)
        wait = next(c for c in trainer.callbacks if isinstance(c, DataWaitMonitor))
        seconds = timer.elapsed / max(1, timer.timed_steps)
        return Timing(args.batch_size / seconds, 1000 * seconds, peak_memory_gib(args.device),
                      0.0 if ceiling else wait.share)


class LightlySwaV(nn.Module):
    """lightly's documented SwAV model: backbone → projection head → normalise → prototypes."""

    def __init__(self, backbone: nn.Module, head: dict[str, Any]) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection_head = SwaVProjectionHead(head["input_dim"], head["hidden_dim"],
                                                  head["output_dim"])
        self.prototypes = SwaVPrototypes(head["output_dim"], head["num_prototypes"],
                                         head["freeze_prototypes_iters"])

    def forward(self, x: torch.Tensor, step: int) -> torch.Tensor:
        x = self.projection_head(self.backbone(x).flatten(start_dim=1))
        return self.prototypes(nn.functional.normalize(x, dim=1, p=2), step)


def lightly_transform(groups: list[dict[str, Any]], mean: Any, std: Any) -> SwaVTransform:
    """lightly's SwaVTransform with the recipe's crops; its colour settings are per pipeline,
    so the recipe's must be the same in every crop group."""
    shared = ("hflip_prob", "color_jitter_prob", "brightness", "contrast", "saturation", "hue",
              "grayscale_prob", "blur_prob", "blur_sigma", "solarize_prob")
    for key in shared:
        if len({str(g[key]) for g in groups}) > 1:
            raise SystemExit(f"throughput.py: the crop groups differ in {key}; lightly's "
                             "SwaVTransform takes one value for all crops")
    g = groups[0]
    if g["solarize_prob"] > 0:
        raise SystemExit("throughput.py: lightly's SwaVTransform has no solarisation")
    return SwaVTransform(
        crop_sizes=[g["size"] for g in groups], crop_counts=[g["count"] for g in groups],
        crop_min_scales=[g["scale"][0] for g in groups],
        crop_max_scales=[g["scale"][1] for g in groups], hf_prob=g["hflip_prob"],
        cj_prob=g["color_jitter_prob"], cj_strength=1.0, cj_bright=g["brightness"],
        cj_contrast=g["contrast"], cj_sat=g["saturation"], cj_hue=g["hue"],
        random_gray_scale=g["grayscale_prob"], gaussian_blur=g["blur_prob"],
        sigmas=tuple(g["blur_sigma"]), normalize={"mean": list(mean), "std": list(std)},
    )


class Views(Dataset):
    def __init__(self, dataset: Dataset, transform: SwaVTransform) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[list[torch.Tensor], int]:
        image, label = self.dataset[i]
        return self.transform(image), label


def run_lightly(args: argparse.Namespace, channels_last: bool) -> Timing:
    """Arm (b), or (b') with ``channels_last``."""
    recipe = args.recipe_dict
    method, transform_node = recipe["method"], recipe["data"]["transform"]
    transform = build_component(transform_node, "transform")
    steps = args.warmup + args.steps
    dataset = RandomUint8(args.batch_size * (steps + 1), args.image_size)
    workers = args.workers if args.workers is not None else recipe["data"]["num_workers"]
    loader = DataLoader(Views(dataset, lightly_transform(transform.groups, transform.mean,
                                                         transform.std)),
                        batch_size=args.batch_size, shuffle=True, drop_last=True,
                        num_workers=workers, pin_memory=args.device == "cuda",
                        persistent_workers=workers > 0)
    backbone = build_component(method["backbone"], "backbone", "method.backbone")
    model = LightlySwaV(backbone, method["head"]).to(args.device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=memory_format)
    loss = method.get("loss", {})
    criterion = SwaVLoss(temperature=loss.get("temperature", 0.1),
                         sinkhorn_iterations=loss.get("sinkhorn_iterations", 3),
                         sinkhorn_epsilon=loss.get("epsilon", 0.05))
    lr = method.get("lr", 0.6) * args.batch_size / method.get("lr_batch_size", 256)
    options = {"lr": lr, "momentum": method.get("momentum", 0.9),
               "weight_decay": method.get("weight_decay", 1e-6)}
    if method.get("optimizer", "lars") == "lars":
        optimizer: torch.optim.Optimizer = LARS(
            model.parameters(), trust_coefficient=method.get("lars_trust_coefficient", 0.001),
            **options)
    else:
        optimizer = torch.optim.SGD(model.parameters(), **options)
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(args.precision)
    scaler = torch.amp.GradScaler(args.device, enabled=dtype == torch.float16)
    waited = total = 0.0
    step, start, batches = 0, 0.0, iter(loader)
    last = time.perf_counter()
    while step < steps:
        views, _ = next(batches)
        fetched = time.perf_counter()
        model.prototypes.normalize()
        with torch.autocast(args.device, dtype=dtype or torch.float32, enabled=dtype is not None):
            features = [model(v.to(args.device, non_blocking=True)
                              .contiguous(memory_format=memory_format), step) for v in views]
            value = criterion(features[:2], features[2:])
        scaler.scale(value).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
        step += 1
        now = time.perf_counter()
        if step == args.warmup:
            synchronize(args.device)
            reset_peak_memory(args.device)
            start = last = time.perf_counter()
            continue
        if step > args.warmup:
            waited += fetched - last
            total += now - last
        last = now
    synchronize(args.device)
    seconds = (time.perf_counter() - start) / args.steps
    return Timing(args.batch_size / seconds, 1000 * seconds, peak_memory_gib(args.device),
                  waited / total if total else 0.0)


def crop_runs(groups: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """(crops, size) of each run of equal-sized crops, as the collate groups them."""
    runs: list[list[int]] = []
    for g in groups:
        if runs and runs[-1][1] == g["size"]:
            runs[-1][0] += g["count"]
        else:
            runs.append([g["count"], g["size"]])
    return [(n, s) for n, s in runs]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "cifar10_multicrop.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a recipe override, as swav-train takes them (repeatable)")
    parser.add_argument("--device", default="auto", help="auto, cuda or cpu")
    parser.add_argument("--batch-size", type=int, help="default: the recipe's")
    parser.add_argument("--precision", help="default: the recipe's trainer.precision")
    parser.add_argument("--steps", type=int, default=200, help="timed steps of each run")
    parser.add_argument("--warmup", type=int,
                        help="steps before timing (default: 2 x workers x prefetch factor, "
                             "at least 20)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds")
    parser.add_argument("--workers", type=int,
                        help="DataLoader workers of every arm (default: 16 for lightly's "
                             "per-image transform, the recipe's for ours)")
    parser.add_argument("--output", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    args.device = pick_device(args.device)
    load_plugins()
    args.recipe_dict = load_recipe(args.recipe, args.set)
    transform = build_component(args.recipe_dict["data"]["transform"], "transform")
    dataset = args.recipe_dict["data"]["dataset"]
    args.image_size = NATIVE_SIZE.get(dataset["name"], dataset.get("image_size", 32))
    args.crop_runs = crop_runs(transform.groups)
    args.batch_size = args.batch_size or args.recipe_dict["data"]["batch_size"]
    args.precision = args.precision or str(args.recipe_dict["trainer"].get("precision", "32"))
    if args.recipe_dict["method"].get("queue", {}).get("length", 0):
        parser.error("the lightly arm has no queue: use a recipe without one")
    lightly_workers = args.workers if args.workers is not None else 16
    if args.warmup is None:
        args.warmup = max(20, 2 * lightly_workers * PREFETCH_FACTOR)
    arms = {
        "ours": lambda: run_ours(args),
        "lightly": lambda: run_lightly(args, channels_last=False),
        "lightly_channels_last": lambda: run_lightly(args, channels_last=True),
        "ceiling": lambda: run_ours(args, ceiling=True),
    }
    runs: dict[str, list[Timing]] = {name: [] for name in arms}
    for round_ in range(args.repeats):
        for name, arm in arms.items():
            runs[name].append(arm())
            print(f"round {round_ + 1}/{args.repeats} {name}: "
                  f"{runs[name][-1].images_per_s:,.0f} images/s", file=sys.stderr)
    rows = {name: {"images_per_s": statistics.median(t.images_per_s for t in timings),
                   "step_ms": statistics.median(t.step_ms for t in timings),
                   "peak_gib": max(t.peak_gib for t in timings),
                   "data_wait_share": statistics.median(t.data_wait_share for t in timings)}
            for name, timings in runs.items()}
    ours = rows["ours"]["images_per_s"]
    ratios = {"ours_over_lightly": ours / rows["lightly"]["images_per_s"],
              "ours_over_lightly_channels_last":
                  ours / rows["lightly_channels_last"]["images_per_s"],
              "ours_over_ceiling": ours / rows["ceiling"]["images_per_s"]}
    device = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    memory = "GPU memory" if args.device == "cuda" else "process RSS"
    crops = " + ".join(f"{n}x{s}" for n, s in args.crop_runs)
    print(f"\n{device}, {torch.get_num_threads()} CPU threads; {args.recipe.name}, batch "
          f"{args.batch_size}, {crops} px crops, precision {args.precision}; median of "
          f"{args.repeats} alternating runs of {args.steps} timed steps after {args.warmup}")
    print(f"| run | images/s | step ms | peak {memory} GiB | data wait share |")
    print("|---|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['images_per_s']:,.0f} | {row['step_ms']:.1f} | "
              f"{row['peak_gib']:.2f} | {100 * row['data_wait_share']:.0f} % |")
    print(f"a/b (ours / lightly) = {ratios['ours_over_lightly']:.2f}; a/b' (ours / lightly "
          f"channels-last) = {ratios['ours_over_lightly_channels_last']:.2f}; a/c (ours / "
          f"ceiling) = {ratios['ours_over_ceiling']:.2f}")
    if args.output:
        settings = {k: str(v) for k, v in vars(args).items() if k != "recipe_dict"}
        args.output.write_text(json.dumps({"device": device, "settings": settings, "runs": rows,
                                           **ratios}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
