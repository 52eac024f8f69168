"""Training throughput: this plugin vs lightly's SwAV vs our GPU-only ceiling.

    python benchmarks/throughput.py                      # GPU: lightly's CIFAR-10 benchmark setting
    python benchmarks/throughput.py --device cpu --batch-size 32 --steps 6 --workers 1  # toy

The three runs share model, batch, crops and precision, and alternate (a, b, c, a, b, c, ...):

- (a) ours: :class:`SwAV` trained by Lightning, fed by ``data.augment: gpu`` (uint8 batches
  from memory, multi-crop on the device), channels-last;
- (b) lightly: SwAV assembled from lightly's public modules as lightly's documentation example
  does (projection head, prototypes, ``SwaVLoss``, one forward per crop, a plain PyTorch loop),
  fed by lightly's ``SwaVTransform`` with the settings of lightly's CIFAR-10 benchmark
  (``crop_max_scales=[1.0]`` added: lightly 1.6.0 refuses to build it otherwise) in a
  DataLoader with ``--workers`` processes;
- (c) ceiling: (a)'s model and step with the crops already on the device (no data loading,
  no augmentation).

Both models use the CIFAR ResNet-18 of this package and the head of lightly's benchmark
(512 → 512 → 128, 512 prototypes unless ``--prototypes``), SGD. The data are random ``uint8``
images of CIFAR's shape (no data set can be downloaded here; pixel values do not change the
cost). Prints images/s,
the ratios a/b and a/c, step time, peak memory and the share of time spent waiting for data.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from harness import OnDeviceBatches, Timing, fit_timed, peak_memory_gib, pick_device, synchronize
from torch import nn
from torch.utils.data import DataLoader

from swav_plugin.host.data import DataModule
from swav_plugin.swav.head import SwAVHead
from swav_plugin.swav.loss import SwAVLoss
from swav_plugin.swav.module import SwAV
from swav_plugin.swav.multicrop import MultiCropTransform
from swav_plugin.zoo.backbones import resnet18_cifar
from swav_plugin.zoo.datasets import ImageArrayDataset

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
PRECISIONS = {"32": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def random_images(n: int, size: int, seed: int = 0) -> ImageArrayDataset:
    pixels = np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return ImageArrayDataset(pixels, np.zeros(n, dtype=np.int64), ["random"])


def our_transform(args: argparse.Namespace) -> MultiCropTransform:
    # lightly's CIFAR-10 benchmark augmentation: colour strength 0.5, no blur
    return MultiCropTransform(
        crops=[{"size": args.crop_size, "count": args.crops, "scale": (0.14, 1.0)}],
        brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, blur_prob=0.0,
        mean=CIFAR_MEAN, std=CIFAR_STD,
    )


def our_module(args: argparse.Namespace) -> SwAV:
    head = SwAVHead(512, 512, 128, num_prototypes=args.prototypes, freeze_prototypes_iters=0)
    return SwAV(resnet18_cifar(), head, SwAVLoss(), optimizer="sgd", lr=0.06,
                lr_batch_size=args.batch_size, warmup_epochs=0, weight_decay=5e-4,
                channels_last=args.channels_last, compile_backbone=args.compile)


def run_ours(args: argparse.Namespace, dataset: ImageArrayDataset) -> Timing:
    data = DataModule(dataset, our_transform(args), batch_size=args.batch_size,
                      num_workers=0, pin_memory=args.device == "cuda", augment="gpu")
    return fit_timed(our_module(args), data, steps=args.steps, warmup=args.warmup,
                     batch_size=args.batch_size, device=args.device, precision=args.precision)


def run_ceiling(args: argparse.Namespace) -> Timing:
    generator = torch.Generator(device=args.device).manual_seed(0)
    crops = torch.randn(args.crops * args.batch_size, 3, args.crop_size, args.crop_size,
                        generator=generator, device=args.device)
    labels = torch.zeros(args.batch_size, dtype=torch.long, device=args.device)
    data = OnDeviceBatches(([crops], labels), args.steps, args.batch_size)
    return fit_timed(our_module(args), data, steps=args.steps, warmup=args.warmup,
                     batch_size=args.batch_size, device=args.device, precision=args.precision)


class LightlySwaV(nn.Module):
    """lightly's documented SwAV model: backbone → projection head → normalise → prototypes."""

    def __init__(self, backbone: nn.Module, prototypes: int) -> None:
        from lightly.models.modules import SwaVProjectionHead, SwaVPrototypes

        super().__init__()
        self.backbone = backbone
        self.projection_head = SwaVProjectionHead(512, 512, 128)
        self.prototypes = SwaVPrototypes(128, n_prototypes=prototypes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.projection_head(self.backbone(x).flatten(start_dim=1))
        return self.prototypes(nn.functional.normalize(x, dim=1, p=2))


def run_lightly(args: argparse.Namespace, dataset: ImageArrayDataset) -> Timing:
    from lightly.loss import SwaVLoss
    from lightly.transforms.swav_transform import SwaVTransform

    transform = SwaVTransform(
        crop_sizes=[args.crop_size], crop_counts=[args.crops], crop_min_scales=[0.14],
        crop_max_scales=[1.0], cj_strength=0.5, gaussian_blur=0.0,
        normalize={"mean": list(CIFAR_MEAN), "std": list(CIFAR_STD)},
    )

    class Views(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(dataset)

        def __getitem__(self, i: int):  # noqa: ANN204 - (views, label)
            image, label = dataset[i]
            return transform(image), label

    loader = DataLoader(Views(), batch_size=args.batch_size, shuffle=True, drop_last=True,
                        num_workers=args.workers, pin_memory=args.device == "cuda",
                        persistent_workers=args.workers > 0)
    model = LightlySwaV(resnet18_cifar(), args.prototypes).to(args.device)
    criterion = SwaVLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06, momentum=0.9, weight_decay=5e-4)
    dtype = PRECISIONS[args.precision]
    waited = total = 0.0
    step, start, batches = 0, 0.0, iter(loader)
    last = time.perf_counter()
    while step < args.steps:
        try:
            views, _ = next(batches)
        except StopIteration:
            batches = iter(loader)
            views, _ = next(batches)
        fetched = time.perf_counter()
        model.prototypes.normalize()
        with torch.autocast(args.device, dtype=dtype or torch.float32, enabled=dtype is not None):
            features = [model(v.to(args.device, non_blocking=True)) for v in views]
            loss = criterion(features[:2], features[2:])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        step += 1
        now = time.perf_counter()
        if step == args.warmup:
            synchronize(args.device)
            if args.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            start = last = time.perf_counter()
            continue
        if step > args.warmup:
            waited += fetched - last
            total += now - last
        last = now
    synchronize(args.device)
    seconds = (time.perf_counter() - start) / (args.steps - args.warmup)
    return Timing(args.batch_size / seconds, 1000 * seconds, peak_memory_gib(args.device),
                  waited / total if total else 0.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cuda or cpu")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--prototypes", type=int, default=512,
                        help="at most the batch size (512 in lightly's benchmark)")
    parser.add_argument("--crops", type=int, default=2, help="global crops per image")
    parser.add_argument("--crop-size", type=int, default=32)
    parser.add_argument("--precision", default="bf16-mixed", choices=sorted(PRECISIONS))
    parser.add_argument("--steps", type=int, default=60, help="steps per run, warm-up included")
    parser.add_argument("--warmup", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds")
    parser.add_argument("--workers", type=int, default=16, help="lightly's DataLoader workers")
    parser.add_argument("--images", type=int, default=50_000, help="random images in memory")
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    parser.add_argument("--compile", action="store_true", help="torch.compile our backbone")
    parser.add_argument("--output", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    args.device = pick_device(args.device)
    if args.warmup >= args.steps:
        parser.error("--warmup must be smaller than --steps")
    if args.images < args.batch_size:
        parser.error("--images must be at least --batch-size")
    dataset = random_images(args.images, args.crop_size)
    runs: dict[str, list[Timing]] = {"ours": [], "lightly": [], "ceiling": []}
    for round_ in range(args.repeats):
        for name, run in (("ours", lambda: run_ours(args, dataset)),
                          ("lightly", lambda: run_lightly(args, dataset)),
                          ("ceiling", lambda: run_ceiling(args))):
            runs[name].append(run())
            print(f"round {round_ + 1}/{args.repeats} {name}: "
                  f"{runs[name][-1].images_per_s:,.0f} images/s", file=sys.stderr)
    rows = {}
    for name, timings in runs.items():
        rows[name] = {
            "images_per_s": statistics.median(t.images_per_s for t in timings),
            "step_ms": statistics.median(t.step_ms for t in timings),
            "peak_gib": max(t.peak_gib for t in timings),
            "data_wait_share": statistics.median(t.data_wait_share for t in timings),
        }
    ratio_b = rows["ours"]["images_per_s"] / rows["lightly"]["images_per_s"]
    ratio_c = rows["ours"]["images_per_s"] / rows["ceiling"]["images_per_s"]
    device = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    memory = "GPU memory" if args.device == "cuda" else "process RSS"
    print(f"\n{device}, {torch.get_num_threads()} CPU threads; batch {args.batch_size}, "
          f"{args.crops}x{args.crop_size} px crops, precision {args.precision}, median of "
          f"{args.repeats} alternating runs of {args.steps - args.warmup} timed steps")
    print(f"| run | images/s | step ms | peak {memory} GiB | data wait share |")
    print("|---|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['images_per_s']:,.0f} | {row['step_ms']:.1f} | "
              f"{row['peak_gib']:.2f} | {100 * row['data_wait_share']:.0f} % |")
    print(f"a/b (ours / lightly) = {ratio_b:.2f}; a/c (ours / ceiling) = {ratio_c:.2f}")
    if args.output:
        result = {"device": device, "settings": {k: str(v) for k, v in vars(args).items()},
                  "runs": rows, "ours_over_lightly": ratio_b, "ours_over_ceiling": ratio_c}
        args.output.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
