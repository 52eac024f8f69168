"""Images per second per core of every ImageNet data pipeline, on one folder of JPEGs.

    python benchmarks/loader.py                          # 200 generated JPEGs, all pipelines
    python benchmarks/loader.py --folder /data/imagenet/train/n01440764 --images 300
    python benchmarks/loader.py --images 20 --output runs/loader.json

Each pipeline runs in this process on one thread (``torch.set_num_threads(1)``; PIL decodes
on one), over the same files in the same order, after one untimed pass over the first few,
so its images/s is its images/s per core (the median of ``--rounds`` timings, the pipelines
taken in alternating order; a ratio is the median of the rounds' ratios): a DataLoader with
``W`` workers gets about ``W`` times that. The multi-crop pipelines make SwAV's ImageNet
crops, 2 × 224 px at scale (0.14, 1) and 6 × 96 px at (0.05, 0.14), with the official colour
distortion (jitter 0.8 / 0.8 / 0.8 / 0.2 at p 0.8, grey 0.2, blur p 0.5 with σ in (0.1, 2))
and flips:

- ``pil_decode``, ``tv_decode``: decoding alone, PIL's and ``torchvision.io.decode_jpeg``'s;
- ``cpu_before``: this package's ``augment: cpu`` as it was before its PIL blur and ``uint8``
  crops, rebuilt from torchvision parts: torchvision's tensor ``GaussianBlur`` with a kernel of
  10 % of the crop, float crops normalised in the worker;
- ``cpu``: ``augment: cpu`` as the image folder runs it (``load_rgb``, then
  ``MultiCropTransform``; ``uint8`` crops, normalised later on the device);
- ``lightly``: lightly's ``SwaVTransform`` with the same crops;
- ``official``: the official ``src/multicropdataset.py``'s shape: torchvision's crop, flip,
  jitter and grey, PIL's ``GaussianBlur``, ``ToTensor`` and ``Normalize``;
- ``gpu_prepare``: ``augment: gpu``'s CPU side for data sets that cannot hand over encoded
  files (``load_rgb``, then ``GPUMultiCrop.prepare``: the resize to ``load_size``);
- ``encoded_read``: what a worker does when the batch is decoded on the device
  (``read_encoded``: the file's bytes and its header's size, no decode);
- ``encoded_decode``: the training process's share of that path when it has no GPU
  (``decode_jpeg`` and the resize to ``load_size`` on the CPU).

Generated files have ImageNet's usual sizes (500 × 375, 375 × 500, 500 × 333, ...; mixed
portrait, landscape and square) and smooth content with some texture, saved at quality 90.
The figures vary with the CPU; the ratios between pipelines much less.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torchvision
from harness import write_jpegs
from lightly.transforms.swav_transform import SwaVTransform
from PIL import Image
from torchvision import transforms as T

from swav_plugin.swav.gpu_multicrop import GPUMultiCrop
from swav_plugin.swav.multicrop import (
    IMAGENET_CROPS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MultiCropTransform,
    PILGaussianBlur,
)
from swav_plugin.zoo.encoded import EncodedImage, collate_encoded, decode_resized, read_encoded
from swav_plugin.zoo.rgb import load_rgb

WARMUP = 5


def torchvision_multicrop(blur: str) -> Callable[[Image.Image], list[torch.Tensor]]:
    """The official pipeline's shape from torchvision parts, ``blur`` ``pil`` (the official
    code's ``PILRandomGaussianBlur``) or ``tensor`` (torchvision's ``GaussianBlur``, kernel
    10 % of the crop, as this package blurred before)."""
    pipelines = []
    for group in IMAGENET_CROPS:
        size = group["size"]
        blur_op = (PILGaussianBlur((0.1, 2.0)) if blur == "pil" else
                   T.GaussianBlur(max(3, int(0.1 * size) // 2 * 2 + 1), sigma=(0.1, 2.0)))
        pipeline = T.Compose([
            T.RandomResizedCrop(size, scale=group["scale"]),
            T.RandomHorizontalFlip(0.5),
            T.RandomApply([T.ColorJitter(0.8, 0.8, 0.8, 0.2)], p=0.8),
            T.RandomGrayscale(0.2),
            T.RandomApply([blur_op], p=0.5),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ])
        pipelines += [pipeline] * group["count"]

    def crops(image: Image.Image) -> list[torch.Tensor]:
        return [pipeline(image) for pipeline in pipelines]

    return crops


def pipelines() -> dict[str, Callable[[Path], Any]]:
    """Name → what one file costs in that pipeline, from its path to what a worker returns."""
    ours = MultiCropTransform()
    gpu = ours.batch_augmentation()
    before, official = torchvision_multicrop("tensor"), torchvision_multicrop("pil")
    lightly = SwaVTransform(crop_sizes=(224, 96), crop_counts=(2, 6),
                            crop_min_scales=(0.14, 0.05), crop_max_scales=(1.0, 0.14))
    return {
        "pil_decode": lambda path: Image.open(path).convert("RGB"),
        "tv_decode": lambda path: torchvision.io.decode_jpeg(torchvision.io.read_file(str(path))),
        "cpu_before": lambda path: before(load_rgb(path)),
        "cpu": lambda path: ours(load_rgb(path)),
        "lightly": lambda path: lightly(load_rgb(path)),
        "official": lambda path: official(load_rgb(path)),
        "gpu_prepare": lambda path: gpu.prepare(load_rgb(path)),
        "encoded_read": read_encoded,
        "encoded_decode": lambda path: decode_on_cpu(gpu, read_encoded(path)),
    }


def decode_on_cpu(gpu: GPUMultiCrop, image: EncodedImage) -> list[torch.Tensor]:
    """What the training process does with a file of the device path when it trains on the
    CPU: decode it there and resize it to ``load_size``."""
    height, width = gpu.prepared_size(torch.tensor([image.height]), torch.tensor([image.width]))
    return decode_resized(collate_encoded([image], height, width), "cpu", _refuse)


def _refuse(index: int, reason: str) -> None:
    raise RuntimeError(f"a generated JPEG did not decode: {reason}")


LABELS = {
    "pil_decode": "PIL full decode only",
    "tv_decode": "`torchvision.io.decode_jpeg` on the CPU, decode only",
    "cpu_before": "ours before (tensor blur, float crops), `augment: cpu`",
    "cpu": "ours, `augment: cpu` (`MultiCropTransform`, uint8 crops)",
    "lightly": "lightly's `SwaVTransform` (same crops)",
    "official": "the official pipeline's shape (torchvision ops, PIL blur)",
    "gpu_prepare": "ours, `augment: gpu`, CPU side of a decoded data set (decode, resize)",
    "encoded_read": "device decode, CPU side (file bytes + header, no decode)",
    "encoded_decode": "device decode done on a CPU (decode_jpeg + resize, no GPU)",
}


def cpu_name() -> str:
    """The CPU model (Linux), else what ``platform`` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def images_per_second(run: Callable[[Path], Any], paths: list[Path]) -> float:
    torch.manual_seed(0)
    for path in paths[:WARMUP]:
        run(path)
    start = time.perf_counter()
    for path in paths:
        run(path)
    return len(paths) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200, help="files to time (default 200)")
    parser.add_argument("--folder", type=Path, help="time these JPEGs (the first --images, "
                        "sorted) instead of generated ones")
    parser.add_argument("--only", action="append", choices=sorted(LABELS),
                        help="time only these pipelines (repeatable)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="times every pipeline is timed, in alternating order (default 3)")
    parser.add_argument("--output", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    if args.images < 1:
        parser.error("--images must be at least 1")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="loader-") as tmp:
        if args.folder is not None:
            if not args.folder.is_dir():
                parser.error(f"--folder {args.folder} is not a directory")
            paths = sorted(p for p in args.folder.rglob("*")
                           if p.suffix.lower() in (".jpg", ".jpeg"))[:args.images]
            if not paths:
                parser.error(f"--folder {args.folder} holds no .jpg / .jpeg files")
        else:
            paths = write_jpegs(Path(tmp), args.images)
        sizes = sorted({Image.open(p).size for p in paths})
        shown = ", ".join(f"{w}x{h}" for w, h in sizes[:6]) + (", ..." if len(sizes) > 6 else "")
        print(f"{len(paths)} JPEGs, {len(sizes)} sizes ({shown}); one process, one thread; "
              f"{cpu_name()}, torch {torch.__version__}")
        chosen = {name: run for name, run in pipelines().items()
                  if not args.only or name in args.only}
        # rounds in alternating order, so that a machine slowing down or speeding up during
        # the run weighs on every pipeline alike
        rounds: dict[str, list[float]] = {name: [] for name in chosen}
        for r in range(args.rounds):
            order = list(chosen) if r % 2 == 0 else list(reversed(chosen))
            for name in order:
                print(f"loader: round {r + 1}/{args.rounds} {name} ...", file=sys.stderr,
                      flush=True)
                rounds[name].append(images_per_second(chosen[name], paths))
    rates = {name: statistics.median(values) for name, values in rounds.items()}
    print(f"\n| pipeline | img/s/core (median of {args.rounds}) | min - max |\n|---|---|---|")
    for name, rate in rates.items():
        low, high = min(rounds[name]), max(rounds[name])
        print(f"| {LABELS[name]} | {rate:.1f} | {low:.1f} - {high:.1f} |")
    ratios = {}
    for key, (ours, theirs) in {"cpu_over_before": ("cpu", "cpu_before"),
                                "cpu_over_official": ("cpu", "official")}.items():
        if ours in rates and theirs in rates:
            ratios[key] = statistics.median(
                a / b for a, b in zip(rounds[ours], rounds[theirs], strict=True))
    if ratios:
        print("\n" + "; ".join(f"{k.replace('_', ' ')}: {v:.2f}x" for k, v in ratios.items())
              + " (median of the rounds' ratios)")
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"images": len(paths), "sizes": sizes, "cpu": cpu_name(),
                                           "rounds": args.rounds, "images_per_s_per_core": rates,
                                           "per_round": rounds, **ratios}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
