"""What the evaluation tools share on the command line: arguments, run paths, errors."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import Tensor

from swav_plugin.evaluation.features import features_of, labelled_splits, load_checkpoint
from swav_plugin.host.atomic import save_json_atomic
from swav_plugin.host.errors import ConfigError


def tool_parser(doc: str, result_name: str) -> argparse.ArgumentParser:
    """A parser with the checkpoint, extraction, cache and output arguments of every tool."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("checkpoint", help="a checkpoint written by swav-train")
    parser.add_argument("--batch-size", type=int, default=256, help="extraction batch size")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--output", help=f"result path (default: RUN/eval/{result_name})")
    parser.add_argument("--cache-dir", help="feature cache (default: RUN/eval/cache)")
    parser.add_argument("--no-cache", action="store_true", help="extract without caching")
    return parser


def add_train_test_arguments(
    parser: argparse.ArgumentParser, train_help: str = "", test_help: str = ""
) -> None:
    """The splits of a train / test evaluation, and the random-initialisation baseline."""
    parser.add_argument("--train-split", default="train", help=train_help or None)
    parser.add_argument("--test-split", default="test", help=test_help or None)
    parser.add_argument("--compare-random", action="store_true",
                        help="also evaluate the same backbone at random initialisation")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random initialisation")


def train_test_features(
    args: argparse.Namespace, random_init: bool
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """(features, labels) of the train and test splits, trained or at random init (cached)."""
    pretrained = load_checkpoint(args.checkpoint, random_init=random_init, seed=args.seed)
    splits = (args.train_split, args.test_split)
    datasets = labelled_splits(pretrained.recipe, splits)
    train, test = (features_of(pretrained, split, "backbone", args.cache_dir, args.batch_size,
                               args.num_workers, args.device, dataset)
                   for split, dataset in zip(splits, datasets, strict=True))
    return train, test


def report_train_test(
    args: argparse.Namespace,
    header: str,
    evaluate: Callable[[argparse.Namespace, bool], dict[str, Any]],
    row: Callable[[dict[str, Any]], str],
    settings: dict[str, Any],
) -> int:
    """Evaluate the checkpoint (and the random baseline), print a row each, save the JSON."""
    result = {"checkpoint": str(args.checkpoint), **settings,
              "pretrained": evaluate(args, False)}
    if args.compare_random:
        result["random_init"] = evaluate(args, True)
    print(f"{header}, {args.test_split} split:")
    for name in ("pretrained", "random_init"):
        if name in result:
            print(f"  {name:<12} {row(result[name])}")
    save_json_atomic(result, args.output)
    print(f"result written to {args.output}")
    return 0


def finish_args(args: argparse.Namespace, result_name: str) -> argparse.Namespace:
    """Fill in the run-relative defaults: RUN/eval/RESULT and RUN/eval/cache."""
    eval_dir = Path(args.checkpoint).parent.parent / "eval"
    args.output = Path(args.output or eval_dir / result_name)
    args.cache_dir = None if args.no_cache else Path(args.cache_dir or eval_dir / "cache")
    return args


def run_tool(name: str, body: Callable[[], int]) -> int:
    """Run a tool's body; a bad input is one line on stderr and exit status 2."""
    try:
        return body()
    except ConfigError as exc:
        # one line even when a message quotes a library's many-line text
        print(f"{name}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
