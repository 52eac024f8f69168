"""Semi-supervised fine-tuning of pretrained weights on 1 % or 10 % of the labels.

    python eval/finetune.py runs/demo/checkpoints/last.ckpt --labels 10 --baselines
    python eval/finetune.py swav_800ep_pretrain.pth.tar --arch resnet50 \\
        --data dataset.name=image_folder dataset.root=/data/imagenet --test-split val \\
        --subset-file 10percent.txt --devices 8

The official ``eval_semisup.py`` protocol (:mod:`swav_plugin.evaluation.finetuning`): the whole
network and a new linear head, SGD (momentum 0.9, no weight decay), lr 0.01 trunk / 0.2 head at
10 % and 0.02 / 5 at 1 % (the official README's), x 0.2 after epochs 12 and 16 of 20, batch 32
per device, random resized crop + flip, centre-crop test after every epoch. Prints the best
epoch's top-1 / top-5 (the official report) and the last's.

The labelled images: on ImageNet, SimCLR's lists (``--subset-file``: ``1percent.txt`` /
``10percent.txt``, the ones the official code reads); elsewhere ``--labels`` % of each class of
``--train-split``, drawn with ``--seed``.

Baselines (``--baselines``): the same network from random initialisation fine-tuned alike
(supervised training on the same labels), a linear head on the raw pixels (same protocol), and
the fast linear probe (``eval/linear.py``'s) on the frozen features of the same labelled images
(``--compare-linear``).

Each run keeps ``last.ckpt`` of its latest epoch in ``RUN/eval/finetune_PCTpct/VARIANT/``; the
same command run again resumes it (as the official code restarts), ``--fresh`` starts over.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import Dataset, Subset

from swav_plugin.evaluation import cli
from swav_plugin.evaluation.arguments import (
    check_directory,
    check_training_devices,
    number,
    whole,
)
from swav_plugin.evaluation.eval_data import labelled_splits
from swav_plugin.evaluation.finetuning import (
    OFFICIAL_LEARNING_RATES,
    FineTuning,
    epoch_checkpoint,
)
from swav_plugin.evaluation.label_subsets import (
    balanced_subset,
    labels_of,
    read_subset_file,
    subset_by_names,
)
from swav_plugin.evaluation.linear import linear_probe
from swav_plugin.evaluation.pretrained import Pretrained
from swav_plugin.evaluation.supervised import best_and_last
from swav_plugin.host.checkpoint_files import CheckpointError, read_checkpoint
from swav_plugin.host.errors import ConfigError

LINEAR_ROW = "linear_probe"


def labelled_subset(args: argparse.Namespace, train: Dataset) -> tuple[list[int], str]:
    """The indices of the labelled training images, and how they were chosen."""
    if args.subset_file:
        indices = subset_by_names(train, read_subset_file(args.subset_file), args.subset_file)
        percent = 100 * len(indices) / len(train)
        if not args.labels / 2 <= percent <= args.labels * 2:
            raise ConfigError(
                f"'{args.subset_file}' lists {percent:.2g} % of split '{args.train_split}' but "
                f"--labels is {args.labels}; pass the --labels of that list (its learning rates "
                "and result names follow it)"
            )
        return indices, f"listed in {args.subset_file}"
    labels = labels_of(train)
    if labels is None:
        raise ConfigError(f"split '{args.train_split}' lists no labels to draw a class-balanced "
                          "subset from; give the labelled images with --subset-file")
    return (balanced_subset(labels, args.labels / 100, args.seed),
            f"{args.labels:g} % of each class, seed {args.seed}")


def splits(
    args: argparse.Namespace, recipe: dict[str, Any]
) -> tuple[Subset, Dataset, int, str]:
    """The labelled training subset, the test split, the number of classes and how the subset
    was chosen."""
    train, test, classes = cli.classified_splits(args, recipe)
    indices, how = labelled_subset(args, train)
    return Subset(train, indices), test, classes, how


def settings_of(
    args: argparse.Namespace, pretrained: Pretrained, variant: str, images: int
) -> dict[str, Any]:
    """What a run is started with, the weights by content; it resumes only under the same."""
    return {"weights": pretrained.digest(), "arch": args.arch,
            "data": list(args.data), "variant": variant, "labels": args.labels,
            "subset_file": args.subset_file, "images": images, "seed": args.seed,
            "epochs": args.epochs, "lr": args.lr, "lr_head": args.lr_head,
            "decay_epochs": list(args.decay_epochs), "gamma": args.gamma,
            "batch_size": args.batch_size, "min_scale": args.min_scale, "hflip": args.hflip,
            "train_split": args.train_split, "test_split": args.test_split,
            "devices": str(args.devices), "precision": args.precision,
            "limit_train_batches": args.limit_train_batches}


def resume_path(directory: Path, settings: dict[str, Any], fresh: bool) -> Path | None:
    """``directory/last.ckpt`` when it holds a run of these ``settings`` (None when there is
    none or ``fresh``); a run of other settings is refused, not overwritten."""
    last = directory / "last.ckpt"
    if fresh or not last.is_file():
        return None
    not_resumable = f"'{last}' is not a fine-tuning checkpoint that can be resumed"
    try:
        saved = read_checkpoint(last).get("protocol_settings")
    except CheckpointError as exc:  # torn or foreign: say which, keep it
        raise ConfigError(f"{not_resumable} ({exc}); pass --fresh to start over") from None
    if not isinstance(saved, dict):
        raise ConfigError(f"{not_resumable} (it records no fine-tuning settings); pass --fresh "
                          "to start over")
    if saved != settings:
        key = next(k for k in (*settings, *saved) if saved.get(k) != settings.get(k))
        raise ConfigError(
            f"'{last}' holds a fine-tuning run with other settings ({key}: {saved.get(key)!r} "
            f"there, {settings.get(key)!r} here); run with its settings to resume it, or pass "
            "--fresh to start over"
        )
    return last


def evaluate(args: argparse.Namespace, variant: str) -> dict[str, Any]:
    """One row: ``variant`` fine-tuned (resumed where a run of it stopped), or the linear
    probe."""
    if variant == LINEAR_ROW:
        return evaluate_linear(args)
    pretrained = cli.load(args, random_init=variant != "pretrained")
    backbone = cli.variant_backbone(pretrained, variant)
    train, test, num_classes, how = splits(args, pretrained.recipe)
    print(f"{variant}: fine-tuning on {len(train)} labelled images ({how})")
    loaders = cli.protocol_loaders(args, pretrained.recipe, train, test, drop_last=False)
    pl.seed_everything(args.seed, verbose=False)
    model = FineTuning(backbone, num_classes, lr=args.lr, lr_head=args.lr_head,
                       decay_epochs=args.decay_epochs, gamma=args.gamma)
    model.settings = settings_of(args, pretrained, variant, len(train))
    directory = args.checkpoint_dir / variant
    resume = resume_path(directory, model.settings, args.fresh)
    if resume:
        print(f"resuming {variant} from {resume}")
    cli.fit_protocol(args, model, loaders, resume, sync_batchnorm=True,
                     enable_checkpointing=True, callbacks=[epoch_checkpoint(directory)])
    return {**best_and_last(model.history), "epochs": args.epochs, "images": len(train),
            "subset": how,
            "global_batch": model.global_batch, "batch_size_per_device": args.batch_size,
            "lr": args.lr, "lr_head": args.lr_head}


def evaluate_linear(args: argparse.Namespace) -> dict[str, Any]:
    """The fast linear probe on the pretrained features of the labelled images only."""
    (train_x, train_y), test = cli.train_test_features(args, "pretrained")
    datasets = labelled_splits(cli.load(args).recipe, (args.train_split,))
    indices = torch.tensor(labelled_subset(args, datasets[0])[0])
    result = linear_probe(train_x[indices], train_y[indices], *test, device=args.device)
    return {**result.as_dict(), "images": len(indices)}


def row(result: dict[str, Any]) -> str:
    """A fine-tuning row (best and last epoch), or the linear probe's."""
    if "best_epoch" not in result:
        return (f"{result['top1']:.2f} / {result['top5']:.2f}  (fast linear probe, weight decay "
                f"{result['weight_decay']:g})")
    return (f"{cli.best_last_row(result)}  (global batch {result['global_batch']}, lr trunk "
            f"{result['lr']:g}, head {result['lr_head']:g})")


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The checked arguments, with the official learning rates of ``--labels`` filled in."""
    parser = cli.tool_parser(__doc__, "finetune_PCTpct.json")
    parser.set_defaults(batch_size=32)
    cli.add_train_test_arguments(parser)
    parser.set_defaults(seed=31)  # the official code's
    parser.add_argument("--labels", type=int, choices=sorted(OFFICIAL_LEARNING_RATES),
                        default=10, help="the labelled percentage (sets the official lrs)")
    parser.add_argument("--subset-file", help="the labelled images, one file name per line "
                        "(SimCLR's imagenet_subsets/1percent.txt, 10percent.txt)")
    parser.add_argument("--compare-linear", action="store_true",
                        help="also the fast linear probe on the same labelled images")
    parser.add_argument("--checkpoint-dir", help="where each run keeps last.ckpt (default: "
                        "RUN/eval/finetune_PCTpct)")
    parser.add_argument("--fresh", action="store_true",
                        help="start over instead of resuming a run's last.ckpt")
    group = cli.add_training_arguments(
        parser, "training (--batch-size is per device, 32 by default; the lrs are not scaled)")
    group.add_argument("--epochs", type=whole(1), default=20)
    group.add_argument("--lr", type=number(above=0),
                       help="trunk lr (default: the official for --labels)")
    group.add_argument("--lr-head", type=number(above=0),
                       help="head lr (default: the official)")
    group.add_argument("--decay-epochs", type=whole(1), nargs="+", default=[12, 16])
    group.add_argument("--gamma", type=number(above=0, at_most=1), default=0.2,
                       help="lr factor at each decay")
    args = parser.parse_args(argv)
    name = f"finetune_{args.labels}pct"
    linear = args.compare_linear or args.baselines
    args = cli.finish_args(args, f"{name}.json", cache=linear)  # the probe reads features
    check_training_devices(args)
    official = OFFICIAL_LEARNING_RATES[args.labels]
    args.lr = official[0] if args.lr is None else args.lr
    args.lr_head = official[1] if args.lr_head is None else args.lr_head
    args.checkpoint_dir = Path(args.checkpoint_dir or cli.eval_dir(args.checkpoint) / name)
    check_directory(args.checkpoint_dir, f"--checkpoint-dir '{args.checkpoint_dir}'")
    return args


def report(args: argparse.Namespace) -> int:
    """Fine-tune the weights and the chosen baselines, print and save the results."""
    extra = [LINEAR_ROW] if args.compare_linear or args.baselines else []
    protocol = (f"fine-tuning on {args.labels} % of the labels: whole network + new linear "
                "head, SGD momentum 0.9, step decay, centre-crop test (eval_semisup.py)")
    return cli.report_train_test(
        args, f"fine-tuning ({args.labels} % labels), top-1 / top-5 %", evaluate, row,
        {"protocol": protocol, "labels_percent": args.labels, "subset_file": args.subset_file,
         "seed": args.seed}, extra,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the tool on ``argv``; its exit status."""
    return cli.run_tool("finetune", lambda: report(parse(argv)))


if __name__ == "__main__":
    sys.exit(main())
