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

import pytorch_lightning as pl

from swav_plugin.evaluation import cli
from swav_plugin.evaluation.arguments import check_training_devices, number, whole
from swav_plugin.evaluation.linear import linear_probe
from swav_plugin.evaluation.linear_protocol import LinearProtocol
from swav_plugin.evaluation.supervised import best_and_last
from swav_plugin.host.errors import ConfigError


def evaluate_fast(args: argparse.Namespace, variant: str) -> dict:
    train, test = cli.train_test_features(args, variant)
    result = linear_probe(*train, *test, weight_decays=args.weight_decays,
                          max_iter=args.max_iter, device=args.device)
    return result.as_dict()


def evaluate_standard(args: argparse.Namespace, variant: str) -> dict:
    pretrained = cli.load(args, random_init=variant != "pretrained")
    backbone = cli.variant_backbone(pretrained, variant)
    train, test, classes = cli.classified_splits(args, pretrained.recipe)
    if len(train) < args.batch_size:
        raise ConfigError(
            f"--batch-size {args.batch_size} is more than the {len(train)} images of split "
            f"'{args.train_split}': the standard protocol drops the last partial batch, so no "
            f"step would be taken; pass a --batch-size of at most {len(train)}"
        )
    loaders = cli.protocol_loaders(args, pretrained.recipe, train, test, drop_last=True)
    pl.seed_everything(args.seed, verbose=False)
    model = LinearProtocol(backbone, classes, lr=args.lr,
                           weight_decay=args.linear_weight_decay, use_bn=args.use_bn)
    cli.fit_protocol(args, model, loaders)
    return {**best_and_last(model.history),
            "epochs": args.epochs, "lr": args.lr, "lr_batch_size": 256,
            "global_batch": model.global_batch, "scaled_lr": model.scaled_lr,
            "batch_size_per_device": args.batch_size, "weight_decay": args.linear_weight_decay,
            "use_bn": args.use_bn, "min_scale": args.min_scale, "hflip": args.hflip}


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The checked arguments."""
    parser = cli.tool_parser(__doc__, "linear.json")
    cli.add_train_test_arguments(parser)
    parser.add_argument("--mode", choices=["fast", "standard"], default="fast")
    fast = parser.add_argument_group("fast mode")
    fast.add_argument("--weight-decays", type=number(at_least=0), nargs="+",
                      default=[0.0, 1e-5, 1e-4, 1e-3, 1e-2], help="the sweep")
    fast.add_argument("--max-iter", type=whole(1), default=200,
                      help="L-BFGS iterations per fit")
    title = "standard mode (--batch-size is per device; the global batch is it x the devices)"
    standard = cli.add_training_arguments(parser, title)
    standard.add_argument("--epochs", type=whole(1), default=100)
    standard.add_argument("--lr", type=number(above=0), default=0.3,
                          help="for a global batch of 256")
    standard.add_argument("--linear-weight-decay", type=number(at_least=0), default=1e-6)
    standard.add_argument("--use-bn", action="store_true",
                          help="BatchNorm (no affine) on the features before the classifier")
    args = parser.parse_args(argv)
    cli.finish_args(args, "linear.json", cache=args.mode == "fast")  # standard mode reads images
    if args.mode == "standard":
        check_training_devices(args)
    return args


def report(args: argparse.Namespace) -> int:
    """Probe the checkpoint and the chosen baselines, print and save the results."""
    if args.mode == "fast":
        protocol = ("fast: L-BFGS on cached centre-crop features, weight decay chosen on 10 % "
                    "of train")
        evaluate, row = evaluate_fast, lambda r: (
            f"{r['top1']:.2f} / {r['top5']:.2f}  (weight decay {r['weight_decay']:g})")
    else:
        protocol = ("standard: frozen backbone, random resized crop + flip, SGD momentum 0.9, "
                    "cosine, centre-crop test")
        evaluate, row = evaluate_standard, lambda r: (
            f"{cli.best_last_row(r)}  (global batch {r['global_batch']}: lr {r['lr']:g} x "
            f"{r['global_batch']}/256 = {r['scaled_lr']:g})")
    return cli.report_train_test(args, f"linear probe ({args.mode}), top-1 / top-5 %",
                                 evaluate, row, {"protocol": protocol})


def main(argv: list[str] | None = None) -> int:
    """Run the tool on ``argv``; its exit status."""
    return cli.run_tool("linear", lambda: report(parse(argv)))


if __name__ == "__main__":
    sys.exit(main())
