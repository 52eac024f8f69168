"""Prototype inspection of a pretrained checkpoint: a UMAP plot and usage statistics.

    python eval/prototypes.py runs/demo/checkpoints/last.ckpt [--split train] [--output DIR]

Writes ``prototypes_umap.png`` and ``prototypes.json`` (usage, dead prototypes, entropy,
purity against the labels) into the output directory (default: RUN/eval) and prints its path.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from swav_plugin.evaluation.features import features_of, load_checkpoint
from swav_plugin.evaluation.prototypes import plot_umap, prototype_report
from swav_plugin.host.errors import ConfigError
from swav_plugin.host.runner import save_json_atomic


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a checkpoint written by swav-train")
    parser.add_argument("--split", default="train", help="data set split to embed")
    parser.add_argument("--head", type=int, default=0, help="prototype set (multi-head)")
    parser.add_argument("--max-points", type=int, default=3000, help="embeddings in the plot")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", help="output directory (default: RUN/eval)")
    parser.add_argument("--cache-dir", help="feature cache (default: RUN/eval/cache)")
    parser.add_argument("--no-cache", action="store_true", help="extract without caching")
    args = parser.parse_args(argv)
    run_dir = Path(args.checkpoint).parent.parent
    cache_dir = None if args.no_cache else (args.cache_dir or run_dir / "eval" / "cache")
    try:
        pretrained = load_checkpoint(args.checkpoint)
        method = pretrained.method
        if not hasattr(method, "head") or not hasattr(method.head, "prototypes"):
            raise ConfigError(f"'{args.checkpoint}' holds no SwAV head with prototypes")
        if not 0 <= args.head < len(method.head.prototypes):
            raise ConfigError(
                f"--head {args.head} does not exist; the checkpoint has "
                f"{len(method.head.prototypes)} prototype set(s)"
            )
        embeddings, labels = features_of(pretrained, args.split, "embeddings", cache_dir,
                                         args.batch_size, device=args.device)
    except ConfigError as exc:
        print(f"prototypes: error: {exc}", file=sys.stderr)
        return 2
    with torch.no_grad():
        prototypes = method.head.prototypes[args.head].weight.detach().cpu()
    report = prototype_report(embeddings, labels, prototypes)
    summary = report.summary()
    output = Path(args.output or run_dir / "eval")
    plot_umap(report, output / "prototypes_umap.png", max_points=args.max_points)
    save_json_atomic({"checkpoint": str(args.checkpoint), "split": args.split, **summary},
                     output / "prototypes.json")
    print(
        f"prototypes: {summary['used_prototypes']}/{summary['num_prototypes']} used, "
        f"{summary['dead_prototypes']} dead, assignment entropy "
        f"{summary['assignment_entropy']:.2f} of max {summary['assignment_entropy_max']:.2f}, "
        f"mean purity {summary['mean_purity']:.2f}"
    )
    print(f"plot written to {output / 'prototypes_umap.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
