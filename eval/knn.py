"""kNN evaluation of a pretrained checkpoint (weighted kNN on backbone features, FAISS).

    python eval/knn.py runs/demo/checkpoints/last.ckpt [--compare-random] [--k 10 20 200]

Trains nothing: features of the recipe's data set (``--train-split`` as the bank,
``--test-split`` as queries) are extracted with a centre-crop transform and classified by
their neighbours. Prints a table and writes a JSON result beside the checkpoint's run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch.nn.functional as F
from torch import Tensor

from swav_plugin.evaluation.features import features_of, load_checkpoint
from swav_plugin.evaluation.knn import knn_accuracy, knn_search, recall_at_k
from swav_plugin.host.errors import ConfigError
from swav_plugin.host.runner import save_json_atomic


def evaluate(args: argparse.Namespace, random_init: bool) -> dict:
    pretrained = load_checkpoint(args.checkpoint, random_init=random_init, seed=args.seed)
    splits = {
        role: features_of(pretrained, split, "backbone", args.cache_dir, args.batch_size,
                          args.num_workers, args.device)
        for role, split in (("train", args.train_split), ("test", args.test_split))
    }
    accuracy = knn_accuracy(*splits["train"], *splits["test"], ks=args.k, temperature=args.t,
                            index=args.index, device=args.device)
    result: dict = {str(k): v for k, v in accuracy.items()}
    if args.index == "ivf":
        result["ivf_recall"] = ivf_recall(splits["train"][0], splits["test"][0], max(args.k),
                                          args.device)
    return result


def ivf_recall(bank: Tensor, queries: Tensor, k: int, device: str, sample: int = 1000) -> float:
    """Recall@k of the IVF index against exact search, on up to ``sample`` queries."""
    bank, queries = F.normalize(bank, dim=1), F.normalize(queries[:sample], dim=1)
    k = min(k, len(bank))
    _, exact = knn_search(bank, queries, k, index="flat", device=device)
    _, approximate = knn_search(bank, queries, k, index="ivf", device=device)
    return recall_at_k(approximate, exact)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a checkpoint written by swav-train")
    parser.add_argument("--k", type=int, nargs="+", default=[10, 20, 200])
    parser.add_argument("--t", type=float, default=0.07, help="vote temperature")
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--test-split", default="test")
    parser.add_argument("--compare-random", action="store_true",
                        help="also evaluate the same backbone at random initialisation")
    parser.add_argument("--index", choices=["flat", "ivf"], default="flat",
                        help="exact search, or approximate IVF (its recall is reported)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random initialisation")
    parser.add_argument("--output", help="JSON result path (default: RUN/eval/knn.json)")
    parser.add_argument("--cache-dir", help="feature cache (default: RUN/eval/cache)")
    parser.add_argument("--no-cache", action="store_true", help="extract without caching")
    args = parser.parse_args(argv)
    run_dir = Path(args.checkpoint).parent.parent
    args.cache_dir = None if args.no_cache else (args.cache_dir or run_dir / "eval" / "cache")
    try:
        result = {"checkpoint": str(args.checkpoint), "temperature": args.t,
                  "pretrained": evaluate(args, random_init=False)}
        if args.compare_random:
            result["random_init"] = evaluate(args, random_init=True)
    except ConfigError as exc:
        print(f"knn: error: {exc}", file=sys.stderr)
        return 2
    print(f"weighted kNN (T={args.t}), top-1 / top-5 %, {args.test_split} split:")
    for name in ("pretrained", "random_init"):
        if name in result:
            row = "  ".join(f"k={k}: {result[name][str(k)]['top1']:.2f} / "
                            f"{result[name][str(k)]['top5']:.2f}" for k in args.k)
            recall = result[name].get("ivf_recall")
            extra = "" if recall is None else f"  (IVF recall@{max(args.k)} vs exact: {recall:.3f})"
            print(f"  {name:<12} {row}{extra}")
    output = Path(args.output or run_dir / "eval" / "knn.json")
    save_json_atomic(result, output)
    print(f"result written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
