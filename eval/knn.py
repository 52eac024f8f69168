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

from swav_plugin.evaluation.features import (
    dataset_from_recipe,
    eval_transform_from_recipe,
    extract_features,
    load_checkpoint,
)
from swav_plugin.evaluation.knn import knn_accuracy
from swav_plugin.host.errors import ConfigError
from swav_plugin.host.runner import save_json_atomic


def evaluate(args: argparse.Namespace, random_init: bool) -> dict:
    pretrained = load_checkpoint(args.checkpoint, random_init=random_init, seed=args.seed)
    recipe, backbone = pretrained.recipe, pretrained.method.backbone
    transform = eval_transform_from_recipe(recipe)
    label = "random init" if random_init else "pretrained"
    splits = {}
    for role, split in (("train", args.train_split), ("test", args.test_split)):
        dataset = dataset_from_recipe(recipe, split)
        splits[role] = extract_features(
            backbone, dataset, transform, args.batch_size, args.num_workers, args.device,
            desc=f"{label} {split}",
        )
    accuracy = knn_accuracy(*splits["train"], *splits["test"], ks=args.k, temperature=args.t)
    return {str(k): v for k, v in accuracy.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a checkpoint written by swav-train")
    parser.add_argument("--k", type=int, nargs="+", default=[10, 20, 200])
    parser.add_argument("--t", type=float, default=0.07, help="vote temperature")
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--test-split", default="test")
    parser.add_argument("--compare-random", action="store_true",
                        help="also evaluate the same backbone at random initialisation")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random initialisation")
    parser.add_argument("--output", help="JSON result path (default: RUN/eval/knn.json)")
    args = parser.parse_args(argv)
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
            row = "  ".join(f"k={k}: {v['top1']:.2f} / {v['top5']:.2f}"
                            for k, v in result[name].items())
            print(f"  {name:<12} {row}")
    output = Path(args.output or Path(args.checkpoint).parent.parent / "eval" / "knn.json")
    save_json_atomic(result, output)
    print(f"result written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
