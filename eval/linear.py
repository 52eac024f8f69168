"""Linear probe of a pretrained checkpoint on frozen, cached backbone features (fast mode).

    python eval/linear.py runs/demo/checkpoints/last.ckpt [--compare-random]

Features of ``--train-split`` and ``--test-split`` come from the shared (cached) extraction
path; a multinomial logistic regression is fitted by L-BFGS on standardised features after a
weight-decay sweep on a held-out tenth of the training split (see
:mod:`swav_plugin.evaluation.linear`). Prints top-1 / top-5 and the chosen weight decay and
writes a JSON result beside the checkpoint's run.
"""

from __future__ import annotations

import argparse
import sys

from swav_plugin.evaluation import cli
from swav_plugin.evaluation.linear import linear_probe


def evaluate(args: argparse.Namespace, random_init: bool) -> dict:
    train, test = cli.train_test_features(args, random_init)
    result = linear_probe(*train, *test, weight_decays=args.weight_decays,
                          max_iter=args.max_iter, device=args.device)
    return result.as_dict()


def main(argv: list[str] | None = None) -> int:
    parser = cli.tool_parser(__doc__, "linear.json")
    cli.add_train_test_arguments(parser)
    parser.add_argument("--weight-decays", type=float, nargs="+",
                        default=[0.0, 1e-5, 1e-4, 1e-3, 1e-2], help="the sweep")
    parser.add_argument("--max-iter", type=int, default=200, help="L-BFGS iterations per fit")
    args = cli.finish_args(parser.parse_args(argv), "linear.json")
    protocol = "fast: L-BFGS on cached centre-crop features, weight decay chosen on 10 % of train"
    return cli.run_tool("linear", lambda: cli.report_train_test(
        args, "linear probe (fast), top-1 / top-5 %", evaluate,
        lambda r: f"{r['top1']:.2f} / {r['top5']:.2f}  (weight decay {r['weight_decay']:g})",
        {"protocol": protocol},
    ))


if __name__ == "__main__":
    sys.exit(main())
