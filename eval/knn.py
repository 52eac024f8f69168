"""kNN evaluation of a pretrained checkpoint (weighted kNN on backbone features, FAISS).

    python eval/knn.py runs/demo/checkpoints/last.ckpt [--baselines] [--k 10 20 200]

Trains nothing: features of the recipe's data set (``--train-split`` as the bank,
``--test-split`` as queries) are extracted with a centre-crop transform (or read from the
feature cache) and classified by their neighbours; the baselines (``--baselines``: the same
backbone at random initialisation, and the raw pixels) by the same protocol. Prints a table
and writes a JSON result (top-1, top-5, per-class top-1 and the k that voted, for every k)
beside the run.
"""

from __future__ import annotations

import argparse
import sys

import torch.nn.functional as F
from torch import Tensor

from swav_plugin.evaluation import cli
from swav_plugin.evaluation.arguments import number, whole
from swav_plugin.evaluation.knn import knn_accuracy, knn_search, recall_at_k


def evaluate(args: argparse.Namespace, variant: str) -> dict:
    train, test = cli.train_test_features(args, variant)
    accuracy = knn_accuracy(*train, *test, ks=args.k, temperature=args.t, index=args.index,
                            device=args.device)
    result: dict = {str(k): v for k, v in accuracy.items()}
    if args.index == "ivf":
        result["ivf_recall"] = ivf_recall(train[0], test[0], max(args.k), args.device)
    return result


def ivf_recall(bank: Tensor, queries: Tensor, k: int, device: str, sample: int = 1000) -> float:
    """Recall@k of the IVF index against exact search, on up to ``sample`` queries."""
    bank, queries = F.normalize(bank, dim=1), F.normalize(queries[:sample], dim=1)
    k = min(k, len(bank))
    _, exact = knn_search(bank, queries, k, index="flat", device=device)
    _, approximate = knn_search(bank, queries, k, index="ivf", device=device)
    return recall_at_k(approximate, exact)


def k_cell(k: int, used: int) -> str:
    """``k=K``, and the k that voted when the bank has fewer than K features."""
    return f"k={k}" if used == k else f"k={k} (clamped to the bank's {used})"


def row(args: argparse.Namespace, result: dict) -> str:
    cells = "  ".join(f"{k_cell(k, result[str(k)]['k_used'])}: {result[str(k)]['top1']:.2f} / "
                      f"{result[str(k)]['top5']:.2f}" for k in args.k)
    recall = result.get("ivf_recall")
    if recall is None:
        return cells
    searched = result[str(max(args.k))]["k_used"]
    return f"{cells}  (IVF recall@{searched} vs exact: {recall:.3f})"


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The checked arguments (a repeated k counts once)."""
    parser = cli.tool_parser(__doc__, "knn.json")
    cli.add_train_test_arguments(parser, "the bank", "the queries")
    parser.add_argument("--k", type=whole(1), nargs="+", default=[10, 20, 200],
                        help="neighbours that vote (clamped to the bank's size)")
    parser.add_argument("--t", type=number(above=0), default=0.07, help="vote temperature")
    parser.add_argument("--index", choices=["flat", "ivf"], default="flat",
                        help="exact search, or approximate IVF (its recall is reported)")
    args = cli.finish_args(parser.parse_args(argv), "knn.json")
    args.k = list(dict.fromkeys(args.k))
    return args


def report(args: argparse.Namespace) -> int:
    """Evaluate the checkpoint and the chosen baselines by kNN, print and save the results."""
    return cli.report_train_test(
        args, f"weighted kNN (T={args.t}), top-1 / top-5 %", evaluate,
        lambda result: row(args, result), {"temperature": args.t, "index": args.index},
    )


def main(argv: list[str] | None = None) -> int:
    """Run the tool on ``argv``; its exit status."""
    return cli.run_tool("knn", lambda: report(parse(argv)))


if __name__ == "__main__":
    sys.exit(main())
