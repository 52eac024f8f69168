"""The demo over several seeds: pretrain, then kNN and linear probe beside their baselines.

    python benchmarks/demo_seeds.py                        # recipes/demo_digits.yaml, seeds 0 1 2
    python benchmarks/demo_seeds.py --seeds 0 1 2 3 4 --output runs/demo_seeds.json --overwrite

Each seed trains the recipe as ``make demo`` does (``run.seed`` set; the data split stays
fixed), then runs ``eval/knn.py`` and ``eval/linear.py`` with ``--baselines`` (the random
initialisation takes the same seed). It prints, per seed and as mean ± standard deviation,
weighted kNN top-1 at each k and the linear probe's top-1 for the pretrained backbone, the
random initialisation and the raw pixels, with each seed's training time, and whether every
seed's pretrained backbone beats both baselines at the kNN's ``--target-k`` and in the probe.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ROWS = ("pretrained", "random_init", "raw_pixels")


def run(*args: str) -> None:
    """Run a Python command of this repository; its output goes to ours as it comes."""
    subprocess.run([sys.executable, *args], cwd=ROOT, check=True)


def one_seed(recipe: Path, seed: int, out: Path, overrides: list[str]) -> dict[str, Any]:
    start = time.perf_counter()
    run("-m", "swav_plugin", str(recipe), *overrides, f"run.seed={seed}",
        f"run.output_dir={out}")
    train_s = time.perf_counter() - start
    checkpoint = str(out / "checkpoints" / "last.ckpt")
    run("eval/knn.py", checkpoint, "--baselines", "--seed", str(seed))
    run("eval/linear.py", checkpoint, "--baselines", "--seed", str(seed))
    knn = json.loads((out / "eval" / "knn.json").read_text())
    linear = json.loads((out / "eval" / "linear.json").read_text())
    ks = list(knn["pretrained"])
    return {
        "seed": seed,
        "train_s": train_s,
        "total_s": time.perf_counter() - start,
        "knn": {row: {k: knn[row][k]["top1"] for k in ks} for row in ROWS},
        "linear": {row: linear[row]["top1"] for row in ROWS},
    }


def mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {spread:.2f}"


def report(results: list[dict[str, Any]], target_k: str) -> bool:
    ks = list(results[0]["knn"]["pretrained"])
    header = " | ".join([f"kNN k={k}" for k in ks] + ["linear"])
    print(f"\ntop-1 % on the test split, mean ± std over seeds {[r['seed'] for r in results]}")
    print(f"| row | {header} |")
    print("|---" * (len(ks) + 2) + "|")
    for row in ROWS:
        cells = [mean_std([r["knn"][row][k] for r in results]) for k in ks]
        cells.append(mean_std([r["linear"][row] for r in results]))
        print(f"| {row} | " + " | ".join(cells) + " |")
    print("\nper seed (kNN k=" + target_k + " / linear; training s):")
    beaten = True
    for r in results:
        knn, linear = r["knn"], r["linear"]
        wins = all(knn["pretrained"][target_k] > knn[b][target_k] and
                   linear["pretrained"] > linear[b] for b in ROWS[1:])
        beaten &= wins
        cells = "  ".join(f"{row} {knn[row][target_k]:.2f} / {linear[row]:.2f}" for row in ROWS)
        print(f"  seed {r['seed']}: {cells}  train {r['train_s']:.0f} s"
              f"{'' if wins else '  (pretrained does not beat both baselines)'}")
    verdict = "beats" if beaten else "does NOT beat"
    print(f"\nevery seed's pretrained backbone {verdict} random init and raw pixels "
          f"at kNN k={target_k} and in the linear probe")
    return beaten


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "demo_digits.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "demo_seeds",
                        help="where each seed's run goes (RUNS/seed_N)")
    parser.add_argument("--target-k", default="20", help="the k the verdict compares at")
    parser.add_argument("--output", type=Path, help="also write the results as JSON")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete earlier runs of these seeds under --runs first")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="recipe overrides for every seed, e.g. trainer.max_epochs=40")
    args = parser.parse_args(argv)
    if not args.recipe.is_file():
        parser.error(f"no recipe at {args.recipe}")
    earlier = [args.runs / f"seed_{s}" for s in args.seeds if (args.runs / f"seed_{s}").exists()]
    if earlier and not args.overwrite:
        parser.error(f"{earlier[0]} holds an earlier run (a run resumes, it does not retrain); "
                     "pass --overwrite to delete it, or --runs DIR for new ones")
    for path in earlier:
        shutil.rmtree(path)
    results = []
    for seed in args.seeds:
        print(f"=== seed {seed}", flush=True)
        try:
            results.append(one_seed(args.recipe, seed, args.runs / f"seed_{seed}", args.set))
        except subprocess.CalledProcessError as exc:
            print(f"demo_seeds: seed {seed}: {' '.join(exc.cmd[1:3])} failed (exit "
                  f"{exc.returncode}); its message is above", file=sys.stderr)
            return 1
    if args.target_k not in results[0]["knn"]["pretrained"]:
        parser.error(f"--target-k {args.target_k} is not among the kNN's k "
                     f"{list(results[0]['knn']['pretrained'])}")
    beaten = report(results, args.target_k)
    if args.output:
        machine = {"python": platform.python_version(), "processor": platform.processor(),
                   "machine": platform.machine(), "cpus": len(os.sched_getaffinity(0))}
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"recipe": str(args.recipe), "overrides": args.set,
                                           "machine": machine,
                                           "beaten": beaten, "seeds": results}, indent=2))
        print(f"results written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
