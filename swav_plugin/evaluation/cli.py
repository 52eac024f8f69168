"""What the evaluation tools share on the command line: arguments, run paths, errors.

Every argument is checked when it is parsed (:mod:`swav_plugin.evaluation.arguments`), and the
result, cache and checkpoint directories are tried before any feature is extracted; a bad
input is one line and exit status 2 (:func:`run_tool`), a failure to write a result one line
and exit status 1.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.exceptions import MisconfigurationException
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from swav_plugin.evaluation.arguments import (
    PRECISIONS,
    SEED_RANGE,
    ToolParser,
    accelerator,
    batches,
    check_directory,
    check_output_file,
    device,
    devices,
    lightning_devices,
    number,
    whole,
)
from swav_plugin.evaluation.eval_data import eval_transform_node, labelled_splits
from swav_plugin.evaluation.features import features_of
from swav_plugin.evaluation.pretrained import Pretrained, load_pretrained, raw_pixels
from swav_plugin.evaluation.supervised import ValidatedClassifier, train_transform
from swav_plugin.host.atomic import save_json_atomic
from swav_plugin.host.checkpoint_io import VerifiedCheckpointIO
from swav_plugin.host.dataset_views import TransformedDataset
from swav_plugin.host.errors import ConfigError, RunError, one_line, storage_errors
from swav_plugin.host.recipe import build_component


def tool_parser(doc: str, result_name: str) -> argparse.ArgumentParser:
    """A parser with the checkpoint, extraction, cache and output arguments of every tool."""
    parser = ToolParser(description=doc.splitlines()[0])
    parser.add_argument("checkpoint", help="the weights: a swav-train checkpoint, swav-export's "
                        "safetensors, an official SwAV release, a torchvision / timm state dict")
    parser.add_argument("--arch", help="the backbone of a file without a recipe (a registered "
                        "backbone, e.g. resnet50, resnet50w2)")
    parser.add_argument("--data", nargs="+", default=[], metavar="KEY=VALUE|YAML",
                        help="the data to evaluate on: a data YAML and / or changes to the "
                        "checkpoint's data section, e.g. dataset.name=image_folder "
                        "dataset.root=/data/imagenet (default: the checkpoint's data)")
    parser.add_argument("--batch-size", type=whole(1), default=256,
                        help="extraction batch size")
    parser.add_argument("--num-workers", type=whole(0), default=0, help="DataLoader workers")
    parser.add_argument("--device", type=device, default="auto",
                        help="auto (a GPU when there is one), cpu, cuda, cuda:N or mps")
    parser.add_argument("--output", help=f"result path (default: RUN/eval/{result_name})")
    parser.add_argument("--cache-dir", help="feature cache (default: RUN/eval/cache)")
    parser.add_argument("--no-cache", action="store_true", help="extract without caching")
    return parser


#: What a train / test evaluation compares: the checkpoint's backbone and the baselines.
VARIANTS = ("pretrained", "random_init", "raw_pixels")


def add_train_test_arguments(
    parser: argparse.ArgumentParser, train_help: str = "", test_help: str = ""
) -> None:
    """The splits of a train / test evaluation, and the baselines."""
    parser.add_argument("--train-split", default="train", help=train_help or None)
    parser.add_argument("--test-split", default="test", help=test_help or None)
    parser.add_argument("--compare-random", action="store_true",
                        help="also evaluate the same backbone at random initialisation")
    parser.add_argument("--compare-pixels", action="store_true",
                        help="also evaluate the raw pixels (the evaluation transform's, "
                             "flattened) with the same protocol")
    parser.add_argument("--baselines", action="store_true",
                        help="both baselines: --compare-random --compare-pixels")
    parser.add_argument("--seed", type=whole(*SEED_RANGE), default=0,
                        help="seed of the random initialisation")


def variants(args: argparse.Namespace) -> list[str]:
    """The rows an evaluation prints, in :data:`VARIANTS` order."""
    chosen = {"pretrained": True, "random_init": args.compare_random or args.baselines,
              "raw_pixels": args.compare_pixels or args.baselines}
    return [v for v in VARIANTS if chosen[v]]


def train_test_features(
    args: argparse.Namespace, variant: str
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """(features, labels) of the train and test splits for one of :data:`VARIANTS`:
    backbone features, trained or at random init, or the raw pixels (cached)."""
    pretrained = load(args, random_init=variant != "pretrained")
    output = "pixels" if variant == "raw_pixels" else "backbone"
    splits = (args.train_split, args.test_split)
    datasets = labelled_splits(pretrained.recipe, splits)
    train, test = (features_of(pretrained, split, output, args.cache_dir, args.batch_size,
                               args.num_workers, args.device, dataset)
                   for split, dataset in zip(splits, datasets, strict=True))
    return train, test


def report_train_test(
    args: argparse.Namespace,
    header: str,
    evaluate: Callable[[argparse.Namespace, str], dict[str, Any]],
    row: Callable[[dict[str, Any]], str],
    settings: dict[str, Any],
    extra: Sequence[str] = (),
) -> int:
    """Evaluate the checkpoint, the chosen baselines and the tool's ``extra`` rows, print a row
    each, save the JSON."""
    chosen = [*variants(args), *extra]
    result = {"checkpoint": str(args.checkpoint), **settings,
              **{variant: evaluate(args, variant) for variant in chosen}}
    print(f"{header}, {args.test_split} split:")
    for name in chosen:
        print(f"  {name:<12} {row(result[name])}")
    write_result(args.output, lambda path: save_json_atomic(result, path))
    print(f"result written to {args.output}")
    return 0


def add_training_arguments(
    parser: argparse.ArgumentParser, title: str
) -> argparse._ArgumentGroup:
    """A group (returned, for the protocol's own options) of where and how a supervised
    protocol trains (Lightning's devices, precision) and of its augmentation."""
    group = parser.add_argument_group(title)
    group.add_argument("--accelerator", type=accelerator, default="auto",
                       help="auto, cpu, gpu (= cuda) or mps")
    group.add_argument("--devices", type=devices, default="auto", help="e.g. 8, 0,1 or auto")
    group.add_argument("--precision", choices=PRECISIONS, default="32", metavar="PRECISION",
                       help=f"one of {', '.join(PRECISIONS)}; e.g. bf16-mixed on a GPU")
    group.add_argument("--limit-train-batches", type=batches, default=1.0,
                       help="fraction (or number) of training batches per epoch")
    group.add_argument("--min-scale", type=number(above=0, at_most=1), default=0.08,
                       help="smallest area of the random resized crop (torchvision's default)")
    group.add_argument("--no-hflip", dest="hflip", action="store_false",
                       help="no horizontal flips (for data that is not mirror-symmetric)")
    return group


def variant_backbone(pretrained: Pretrained, variant: str) -> nn.Module:
    """What a supervised protocol trains on for one of :data:`VARIANTS`: the raw pixels, or
    the backbone (trained or at random init, as ``pretrained`` was loaded)."""
    return raw_pixels(pretrained.recipe) if variant == "raw_pixels" else pretrained.method.backbone


def classified_splits(
    args: argparse.Namespace, recipe: dict[str, Any]
) -> tuple[Dataset, Dataset, int]:
    """The ``--train-split`` and ``--test-split`` data sets and their number of classes."""
    train, test = labelled_splits(recipe, (args.train_split, args.test_split))
    classes = getattr(train, "classes", None)
    if not classes:
        raise ConfigError(f"split '{args.train_split}' has no class names; pick a labelled split")
    return train, test, len(classes)


def best_last_row(result: dict[str, Any]) -> str:
    """A supervised protocol's row: the best epoch (official) and the last."""
    return (f"best {result['top1']:.2f} / {result['top5']:.2f} (epoch {result['best_epoch']} of "
            f"{result['epochs']}), last {result['last']['top1']:.2f} / "
            f"{result['last']['top5']:.2f}")


def protocol_loaders(
    args: argparse.Namespace,
    recipe: dict[str, Any],
    train: Dataset,
    test: Dataset,
    drop_last: bool,
) -> tuple[DataLoader, DataLoader]:
    """Shuffled, augmented training batches and centre-cropped test batches of
    ``--batch-size`` each (per device), at the recipe's evaluation size and normalisation."""
    node = eval_transform_node(recipe)
    augmented = train_transform(node["size"], node["mean"], node["std"], args.min_scale,
                                args.hflip)
    test_transform = build_component(node, "transform")
    return (DataLoader(TransformedDataset(train, augmented), batch_size=args.batch_size,
                       shuffle=True, num_workers=args.num_workers, drop_last=drop_last),
            DataLoader(TransformedDataset(test, test_transform), batch_size=args.batch_size,
                       num_workers=args.num_workers))


def fit_protocol(
    args: argparse.Namespace,
    model: ValidatedClassifier,
    loaders: tuple[DataLoader, DataLoader],
    ckpt_path: str | Path | None = None,
    **trainer_options: Any,
) -> None:
    """Train ``model`` for ``--epochs`` with Lightning, validating after every epoch; resumed
    from ``ckpt_path`` when given. Checkpoints are written and read verified
    (:class:`VerifiedCheckpointIO`): a storage failure is a :class:`RunError` naming the file."""
    limit = args.limit_train_batches
    options = {"logger": False, "enable_checkpointing": False, **trainer_options}
    try:
        trainer = pl.Trainer(max_epochs=args.epochs, accelerator=args.accelerator,
                             devices=lightning_devices(args.devices), precision=args.precision,
                             enable_model_summary=False, plugins=[VerifiedCheckpointIO()],
                             limit_train_batches=int(limit) if limit > 1 else limit,
                             num_sanity_val_steps=0, **options)
        with warnings.catch_warnings():
            # a frozen backbone is in eval mode on purpose (its batch-norm statistics stay)
            warnings.filterwarnings("ignore", r"Found \d+ module\(s\) in eval mode")
            trainer.fit(model, train_dataloaders=loaders[0], val_dataloaders=loaders[1],
                        ckpt_path=ckpt_path)
    except MisconfigurationException as exc:
        # what only Lightning can judge, as the fraction of batches that leaves none
        raise ConfigError(f"Lightning refused the training settings: {exc}") from None


def load(args: argparse.Namespace, random_init: bool = False) -> Pretrained:
    """The tool's weights (``checkpoint``, ``--arch``, ``--data``), or the same architecture
    at random init (seeded by ``--seed``, which the tools comparing with it have)."""
    seed = args.seed if random_init else 0
    return load_pretrained(args.checkpoint, args.arch, args.data, random_init, seed)


def eval_dir(checkpoint: str | Path) -> Path:
    """Where results go by default: RUN/eval for RUN/checkpoints/FILE, else eval/ beside the
    file."""
    folder = Path(checkpoint).parent
    return (folder.parent if folder.name == "checkpoints" else folder) / "eval"


def finish_args(
    args: argparse.Namespace, result_name: str, cache: bool = True
) -> argparse.Namespace:
    """Fill in the defaults: RUN/eval/RESULT and RUN/eval/cache (:func:`eval_dir`), the device
    (``auto``: ``cuda`` when there is one); then try writing the result (a directory when
    ``result_name`` is empty) and, when the tool will use it (``cache``), the feature cache."""
    folder = eval_dir(args.checkpoint)
    args.output = Path(args.output or folder / result_name)
    args.cache_dir = None if args.no_cache else Path(args.cache_dir or folder / "cache")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if result_name:
        check_output_file(args.output, f"--output '{args.output}'")
    else:
        check_directory(args.output, f"--output '{args.output}'")
    if cache and args.cache_dir is not None:
        check_directory(args.cache_dir, f"--cache-dir '{args.cache_dir}'")
    return args


def write_result(path: Path, write: Callable[[Path], None]) -> None:
    """``write(path)``; a storage failure (a full disk) becomes a one-line :class:`RunError`
    naming ``path`` (the writers are atomic: the file is left as it was)."""
    with storage_errors("result not written:", path):
        write(path)


def run_tool(name: str, body: Callable[[], int]) -> int:
    """Run a tool's body; a bad input is one line on stderr and exit status 2, a failure at run
    time one line and exit status 1."""
    try:
        return body()
    except (ConfigError, RunError) as exc:
        print(f"{name}: error: {one_line(exc)}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
