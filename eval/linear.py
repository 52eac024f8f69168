"""Linear probe of a pretrained checkpoint on its frozen backbone: fast or standard protocol.

    python eval/linear.py runs/demo/checkpoints/last.ckpt [--baselines]
    python eval/linear.py RUN/checkpoints/last.ckpt --mode standard --devices 8

``fast`` (default): features of ``--train-split`` / ``--test-split`` from the shared, cached
extraction path; a multinomial logistic regression fitted by L-BFGS on standardised features
after a weight-decay sweep on a held-out tenth of the training split
(:mod:`swav_plugin.evaluation.linear`). Minutes even at ImageNet scale once features exist.

``standard``: the official protocol through Lightning (random resized crop + flip on the fly,
SGD with momentum and a cosine schedule, 100 epochs, lr 0.3 per 256 images, weight decay
1e-6; :mod:`swav_plugin.evaluation.linear_protocol`), on one or several devices.

The baselines (``--baselines``: the same backbone at random initialisation, and the raw
pixels) go through the same protocol. Prints top-1 / top-5 and the hyper-parameters, and
writes a JSON result beside the run.
"""

from __future__ import annotations

import argparse
import sys
import warnings

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from swav_plugin.evaluation import cli
from swav_plugin.evaluation.features import (
    eval_transform_node,
    labelled_splits,
    raw_pixels,
)
from swav_plugin.evaluation.linear import linear_probe
from swav_plugin.evaluation.linear_protocol import LinearProtocol, train_transform
from swav_plugin.host.data import TransformedDataset
from swav_plugin.host.errors import ConfigError
from swav_plugin.host.recipe import build_component


def evaluate_fast(args: argparse.Namespace, variant: str) -> dict:
    train, test = cli.train_test_features(args, variant)
    result = linear_probe(*train, *test, weight_decays=args.weight_decays,
                          max_iter=args.max_iter, device=args.device)
    return result.as_dict()


def evaluate_standard(args: argparse.Namespace, variant: str) -> dict:
    pretrained = cli.load(args, random_init=variant != "pretrained")
    backbone = (raw_pixels(pretrained.recipe) if variant == "raw_pixels"
                else pretrained.method.backbone)
    node = eval_transform_node(pretrained.recipe)
    train, test = labelled_splits(pretrained.recipe, (args.train_split, args.test_split))
    classes = getattr(train, "classes", None)
    if not classes:
        raise ConfigError(f"split '{args.train_split}' has no class names; pick a labelled split")
    augmented = train_transform(node["size"], node["mean"], node["std"])
    loaders = [
        DataLoader(TransformedDataset(data, transform), batch_size=args.batch_size,
                   shuffle=shuffle, num_workers=args.num_workers, drop_last=shuffle)
        for data, transform, shuffle in (
            (train, augmented, True), (test, build_component(node, "transform"), False))
    ]
    pl.seed_everything(args.seed, verbose=False)
    model = LinearProtocol(backbone, len(classes), lr=args.lr,
                           weight_decay=args.linear_weight_decay, use_bn=args.use_bn)
    trainer = pl.Trainer(max_epochs=args.epochs, accelerator=args.accelerator,
                         devices=args.devices, precision=args.precision, logger=False,
                         enable_checkpointing=False, enable_model_summary=False,
                         limit_train_batches=args.limit_train_batches, num_sanity_val_steps=0)
    with warnings.catch_warnings():
        # the frozen backbone is in eval mode on purpose (its batch-norm statistics stay)
        warnings.filterwarnings("ignore", r"Found \d+ module\(s\) in eval mode")
        trainer.fit(model, train_dataloaders=loaders[0], val_dataloaders=loaders[1])
    best = max(model.history, key=lambda entry: entry["top1"])  # the official report
    last = model.history[-1]
    return {"top1": best["top1"], "top5": best["top5"], "best_epoch": best["epoch"],
            "last": {"top1": last["top1"], "top5": last["top5"]},
            "epochs": args.epochs, "lr": args.lr, "lr_batch_size": 256,
            "global_batch": model.global_batch, "scaled_lr": model.scaled_lr,
            "batch_size_per_device": args.batch_size, "weight_decay": args.linear_weight_decay,
            "use_bn": args.use_bn}


def main(argv: list[str] | None = None) -> int:
    parser = cli.tool_parser(__doc__, "linear.json")
    cli.add_train_test_arguments(parser)
    parser.add_argument("--mode", choices=["fast", "standard"], default="fast")
    fast = parser.add_argument_group("fast mode")
    fast.add_argument("--weight-decays", type=float, nargs="+",
                      default=[0.0, 1e-5, 1e-4, 1e-3, 1e-2], help="the sweep")
    fast.add_argument("--max-iter", type=int, default=200, help="L-BFGS iterations per fit")
    standard = parser.add_argument_group(
        "standard mode (--batch-size is per device; the global batch is it x the devices)")
    standard.add_argument("--epochs", type=int, default=100)
    standard.add_argument("--lr", type=float, default=0.3, help="for a global batch of 256")
    standard.add_argument("--linear-weight-decay", type=float, default=1e-6)
    standard.add_argument("--use-bn", action="store_true",
                          help="BatchNorm (no affine) on the features before the classifier")
    standard.add_argument("--accelerator", default="auto")
    standard.add_argument("--devices", default="auto", help="e.g. 8, or auto")
    standard.add_argument("--precision", default="32", help="e.g. bf16-mixed on a GPU")
    standard.add_argument("--limit-train-batches", type=float, default=1.0,
                          help="fraction (or number) of training batches per epoch")
    args = cli.finish_args(parser.parse_args(argv), "linear.json")
    if args.devices.isdigit():
        args.devices = int(args.devices)
    if args.limit_train_batches > 1:
        args.limit_train_batches = int(args.limit_train_batches)
    if args.mode == "fast":
        protocol = ("fast: L-BFGS on cached centre-crop features, weight decay chosen on 10 % "
                    "of train")
        evaluate, row = evaluate_fast, lambda r: (
            f"{r['top1']:.2f} / {r['top5']:.2f}  (weight decay {r['weight_decay']:g})")
    else:
        protocol = ("standard: frozen backbone, random resized crop + flip, SGD momentum 0.9, "
                    "cosine, centre-crop test")
        evaluate, row = evaluate_standard, lambda r: (
            f"best {r['top1']:.2f} / {r['top5']:.2f} (epoch {r['best_epoch']} of "
            f"{r['epochs']}), last {r['last']['top1']:.2f} / {r['last']['top5']:.2f}  (global "
            f"batch {r['global_batch']}: lr {r['lr']:g} x {r['global_batch']}/256 = "
            f"{r['scaled_lr']:g})")
    return cli.run_tool("linear", lambda: cli.report_train_test(
        args, f"linear probe ({args.mode}), top-1 / top-5 %", evaluate, row,
        {"protocol": protocol},
    ))


if __name__ == "__main__":
    sys.exit(main())
