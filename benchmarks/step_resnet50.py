"""One GPU's SwAV step with the ImageNet recipe: ResNet-50, 2×224 + 6×96 crops, 3000
prototypes, a full queue of 3840, LARS, on random crops already on the device, and, with
``--jpegs N``, the same step fed from N JPEG files through the recipe's data path.

    python benchmarks/step_resnet50.py                          # GPU, 64 images per step, bf16
    python benchmarks/step_resnet50.py --jpegs 2048 --workers 8 # ... and fed from JPEG files
    python benchmarks/step_resnet50.py --device cpu --batch-size 2 --steps 3 --warmup 1 \
        --global-size 64 --local-size 32 --precision 32          # a CPU-sized check

Reports images/s and peak memory per device, the model FLOPs of one step (forward + backward,
counted by ``torch.utils.flop_counter``) and the model FLOPs utilisation: achieved FLOP/s over
the device's peak (``--peak-tflops``; known for H100 / H200 in bf16, otherwise give it).

With ``--jpegs``, the files are generated in ImageNet's usual sizes (as ``loader.py`` makes
them) in a temporary image folder, read by ``--workers`` DataLoader workers as
``data.augment: gpu`` reads them (the bytes only), decoded, resized and cropped on the device;
the JPEG-fed images/s is reported beside the device-resident one, as a ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import pytorch_lightning as pl
import torch
from harness import OnDeviceBatches, Timing, fit_timed, pick_device, write_jpegs
from torch.utils.flop_counter import FlopCounterMode

from swav_plugin.host.data import DataModule
from swav_plugin.swav.head import SwAVHead
from swav_plugin.swav.loss import SwAVLoss
from swav_plugin.swav.module import SwAV
from swav_plugin.swav.multicrop import IMAGENET_CROPS, MultiCropTransform
from swav_plugin.swav.queue import SwAVQueue
from swav_plugin.zoo.backbones import resnet50
from swav_plugin.zoo.images import SkippingImageFolder

#: dense bf16 tensor-core peak, TFLOP/s (NVIDIA data sheets, SXM parts)
PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}


def peak_tflops(device: str, precision: str, given: float | None) -> float | None:
    if given is not None:
        return given
    if device != "cuda" or precision != "bf16-mixed":
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def step_flops(module: SwAV, groups: list[torch.Tensor], batch_size: int) -> int:
    """FLOPs of one forward + backward of backbone, head and loss."""
    with FlopCounterMode(display=False) as counter:
        features = torch.cat([module.backbone(g) for g in groups])
        _, scores = module.head(features)
        module.loss(scores, batch_size).loss.backward()
    module.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cuda or cpu")
    parser.add_argument("--batch-size", type=int, default=64, help="images per device")
    parser.add_argument("--global-size", type=int, default=224)
    parser.add_argument("--local-size", type=int, default=96)
    parser.add_argument("--local-crops", type=int, default=6)
    parser.add_argument("--precision", default="bf16-mixed", choices=["32", "bf16-mixed",
                                                                      "16-mixed"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--peak-tflops", type=float, help="the device's peak, for the MFU")
    parser.add_argument("--jpegs", type=int, default=0,
                        help="also time the step fed from this many generated JPEG files")
    parser.add_argument("--workers", type=int, default=8, help="DataLoader workers (--jpegs)")
    parser.add_argument("--output", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    if args.warmup >= args.steps:
        parser.error("--warmup must be smaller than --steps")
    if args.jpegs and args.jpegs < args.batch_size:
        parser.error("--jpegs must be at least --batch-size (one batch of files)")
    b = args.batch_size
    generator = torch.Generator(device=device).manual_seed(0)
    groups = [
        torch.randn(2 * b, 3, args.global_size, args.global_size, generator=generator,
                    device=device),
        torch.randn(args.local_crops * b, 3, args.local_size, args.local_size,
                    generator=generator, device=device),
    ]
    labels = torch.zeros(b, dtype=torch.long, device=device)

    def module(queue: SwAVQueue | None = None) -> SwAV:
        head = SwAVHead(2048, 2048, 128, num_prototypes=3000, freeze_prototypes_iters=0)
        return SwAV(resnet50(), head, SwAVLoss(), queue, lr=4.8, lr_batch_size=4096,
                    warmup_epochs=0, channels_last=args.channels_last,
                    compile_backbone=args.compile)

    flops = step_flops(module().to(device), groups, b)
    # The official batch-256 recipe's queue (3840), already full as from its epoch 15 on:
    # every step then scores the queue and balances 3840 + B samples per crop.
    def timed(data: pl.LightningDataModule) -> Timing:
        queue = SwAVQueue(length=3840, start_epoch=0)
        queue.allocate(2, 3840, 128)
        queue.push(torch.nn.functional.normalize(torch.randn(2, 3840, 128), dim=-1))
        return fit_timed(module(queue), data, steps=args.steps, warmup=args.warmup,
                         batch_size=b, device=device, precision=args.precision)

    timing = timed(OnDeviceBatches((groups, labels), args.steps, b))
    from_files = None
    if args.jpegs:
        with tempfile.TemporaryDirectory(prefix="step-jpegs-") as tmp:
            (Path(tmp) / "images").mkdir()
            write_jpegs(Path(tmp) / "images", args.jpegs)
            crops = [{**IMAGENET_CROPS[0], "size": args.global_size},
                     {**IMAGENET_CROPS[1], "size": args.local_size, "count": args.local_crops}]
            files = DataModule(SkippingImageFolder(tmp), MultiCropTransform(crops=crops),
                               batch_size=b, num_workers=args.workers,
                               pin_memory=device == "cuda", augment="gpu")
            from_files = timed(files)
    achieved = flops * timing.images_per_s / b / 1e12
    peak = peak_tflops(device, args.precision, args.peak_tflops)
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    mfu = f"{100 * achieved / peak:.1f} %" if peak else "n/a (peak unknown: --peak-tflops)"
    print(f"{name}; ResNet-50, {b} images x (2x{args.global_size} + {args.local_crops}x"
          f"{args.local_size}) per step, precision {args.precision}, channels-last "
          f"{args.channels_last}, compile {args.compile}")
    print(f"images/s: {timing.images_per_s:,.1f}; step: {timing.step_ms:.1f} ms; "
          f"peak memory: {timing.peak_gib:.2f} GiB; model FLOPs per step: {flops / 1e12:.3g} "
          f"TFLOP; achieved: {achieved:.3g} TFLOP/s; MFU: {mfu}")
    fed = {}
    if from_files is not None:
        fed = {"jpeg_images_per_s": from_files.images_per_s,
               "jpeg_data_wait_share": from_files.data_wait_share,
               "jpeg_over_device": from_files.images_per_s / timing.images_per_s}
        print(f"fed from {args.jpegs} JPEG files by {args.workers} workers (augment: gpu): "
              f"{from_files.images_per_s:,.1f} images/s, {fed['jpeg_over_device']:.2f} x the "
              f"device-resident step; data wait {100 * from_files.data_wait_share:.0f} %")
    if args.output:
        args.output.write_text(json.dumps({
            "device": name, "settings": {k: str(v) for k, v in vars(args).items()},
            "images_per_s": timing.images_per_s, "step_ms": timing.step_ms,
            "peak_gib": timing.peak_gib, "flops_per_step": flops,
            "achieved_tflops": achieved, "peak_tflops": peak, **fed,
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
