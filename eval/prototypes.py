"""Prototype inspection of a pretrained checkpoint: a UMAP plot and usage statistics.

    python eval/prototypes.py runs/demo/checkpoints/last.ckpt [--split train] [--output DIR]

Writes ``prototypes_umap.png`` (UMAP of prototypes among embeddings), ``prototypes_usage.png``
(samples per prototype, purity), ``prototypes_nearest.png`` (the images nearest to the most
used prototypes) and ``prototypes.json`` (usage, dead prototypes, entropy, purity against the
labels) into the output directory (default: RUN/eval) and prints their paths.
"""

from __future__ import annotations

import argparse
import sys

import torch

from swav_plugin.evaluation.arguments import whole
from swav_plugin.evaluation.cli import finish_args, load, run_tool, tool_parser, write_result
from swav_plugin.evaluation.eval_data import labelled_splits
from swav_plugin.evaluation.features import features_of
from swav_plugin.evaluation.prototypes import (
    plot_nearest_images,
    plot_umap,
    plot_usage,
    prototype_report,
)
from swav_plugin.host.atomic import save_json_atomic
from swav_plugin.host.errors import ConfigError


def report(args: argparse.Namespace) -> int:
    """Embed the split, plot and summarise the prototypes' use."""
    pretrained = load(args)
    method = pretrained.method
    if not hasattr(method, "head") or not hasattr(method.head, "prototypes"):
        raise ConfigError(f"'{args.checkpoint}' holds no SwAV head with prototypes")
    if args.head >= len(method.head.prototypes):
        raise ConfigError(
            f"--head {args.head} does not exist; the checkpoint has "
            f"{len(method.head.prototypes)} prototype set(s)"
        )
    (dataset,) = labelled_splits(pretrained.recipe, [args.split])
    embeddings, labels = features_of(pretrained, args.split, "embeddings", args.cache_dir,
                                     args.batch_size, args.num_workers, args.device, dataset)
    with torch.no_grad():
        prototypes = method.head.prototypes[args.head].weight.detach().cpu()
    prototype_set = prototype_report(embeddings, labels, prototypes)
    summary = prototype_set.summary()
    output = args.output
    # the summary first: it takes no plotting, and a full disk is found before the UMAP
    write_result(output / "prototypes.json", lambda path: save_json_atomic(
        {"checkpoint": str(args.checkpoint), "split": args.split, **summary}, path))
    write_result(output / "prototypes_umap.png",
                 lambda path: plot_umap(prototype_set, path, max_points=args.max_points))
    write_result(output / "prototypes_usage.png", lambda path: plot_usage(prototype_set, path))
    write_result(output / "prototypes_nearest.png", lambda path: plot_nearest_images(
        prototype_set, lambda i: dataset[i][0], dataset.classes, path, top=args.grid_rows,
        per=args.grid_columns))
    print(
        f"prototypes: {summary['used_prototypes']}/{summary['num_prototypes']} used, "
        f"{summary['dead_prototypes']} dead, assignment entropy "
        f"{summary['assignment_entropy']:.2f} of max {summary['assignment_entropy_max']:.2f}, "
        f"mean purity {summary['mean_purity']:.2f}"
    )
    for name in ("prototypes_umap.png", "prototypes_usage.png", "prototypes_nearest.png"):
        print(f"plot written to {output / name}")
    print(f"summary written to {output / 'prototypes.json'}")
    return 0


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The checked arguments (``--output`` is a directory here)."""
    parser = tool_parser(__doc__, "")
    parser.add_argument("--split", default="train", help="data set split to embed")
    parser.add_argument("--head", type=whole(0), default=0, help="prototype set (multi-head)")
    parser.add_argument("--max-points", type=whole(1), default=3000,
                        help="embeddings in the plot")
    parser.add_argument("--grid-rows", type=whole(1), default=8,
                        help="prototypes in the image grid")
    parser.add_argument("--grid-columns", type=whole(1), default=8,
                        help="images per prototype")
    return finish_args(parser.parse_args(argv), "")


def main(argv: list[str] | None = None) -> int:
    """Run the tool on ``argv``; its exit status."""
    return run_tool("prototypes", lambda: report(parse(argv)))


if __name__ == "__main__":
    sys.exit(main())
