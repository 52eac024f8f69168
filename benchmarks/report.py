"""Every benchmark in one command: one JSON and one markdown table of all the figures.

    python benchmarks/report.py                      # a GPU machine: the real configurations
    python benchmarks/report.py --toy --out runs/r   # any machine: tiny sizes, on the CPU

Runs each benchmark script of this folder as its own process, in turn (never two at once),
at the configuration its figures are quoted for; with ``--toy``, at sizes a 2-core CPU runs in
a few minutes (the suite does so), whose figures only show that the scripts work. Writes
``report.json`` (each benchmark's command, exit status, time and results) and ``report.md``
(each benchmark's printed tables), and exits with 1 if any benchmark failed. The real
configuration is sized to take under 8 minutes on one GPU.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RECIPES = ROOT / "recipes"

#: name → (arguments at the real configuration, arguments of the toy run), and a time limit.
BENCHMARKS: dict[str, tuple[list[str], list[str], int]] = {
    "augment_ops": (
        ["--device", "auto", "--recipe", str(RECIPES / "cifar10_multicrop.yaml"),
         "--recipe", str(RECIPES / "stl10.yaml")],
        ["--device", "cpu", "--repeats", "1", "--recipe", str(RECIPES / "cifar10_multicrop.yaml")],
        300,
    ),
    "device_reads": (
        ["--device", "auto", "--recipe", str(RECIPES / "cifar10_multicrop.yaml"), "--steps", "120",
         "--sync-debug"],
        ["--device", "cpu", "--steps", "12", "--set", "trainer.log_every_n_steps=4"],
        300,
    ),
    "guard_overhead": (
        [],
        ["--arch", "resnet18_cifar", "--repeats", "2"],
        300,
    ),
    "throughput": (
        ["--repeats", "2"],
        ["--device", "cpu", "--batch-size", "8", "--steps", "2", "--warmup", "1",
         "--repeats", "1", "--workers", "0", "--precision", "32",
         "--set", "method.head.num_prototypes=8", "--set", "method.head.hidden_dim=64"],
        600,
    ),
    "sinkhorn": (
        [],
        ["--device", "cpu", "--repeats", "2", "--sizes", "64x30", "128x50"],
        300,
    ),
    "step_resnet50": (
        [],
        ["--device", "cpu", "--batch-size", "1", "--steps", "2", "--warmup", "1",
         "--global-size", "32", "--local-size", "16", "--local-crops", "2", "--precision",
         "32", "--peak-tflops", "1.0", "--jpegs", "4", "--workers", "1"],
        300,
    ),
    "loader": (
        [],
        ["--images", "8", "--rounds", "2"],
        300,
    ),
    "knn_scale": (
        ["--queries", "5000"],
        ["--bank", "3000", "--dim", "16", "--queries", "100", "--k", "10", "--device", "cpu"],
        300,
    ),
}


def commit() -> str:
    found = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                           capture_output=True, text=True)
    return found.stdout.strip() or "unknown"


def run_one(name: str, args: list[str], limit: int, out: Path) -> dict[str, Any]:
    result_file = out / f"{name}.json"
    command = [sys.executable, str(HERE / f"{name}.py"), *args, "--output", str(result_file)]
    print(f"report: {name} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=limit)
        status, stdout, stderr = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as exc:
        status, stdout = 124, exc.stdout or ""
        stderr = f"timed out after {limit} s"
        stdout = stdout.decode() if isinstance(stdout, bytes) else stdout
    seconds = time.perf_counter() - start
    print(f"report: {name} exit {status} in {seconds:.0f} s", file=sys.stderr, flush=True)
    return {
        "command": " ".join(["python", f"benchmarks/{name}.py", *args]),
        "exit_status": status,
        "seconds": round(seconds, 1),
        "stdout": stdout,
        "stderr_tail": "" if status == 0 else stderr[-3000:],
        "result": json.loads(result_file.read_text()) if status == 0 and result_file.is_file()
        else None,
    }


def machine() -> dict[str, Any]:
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {"gpu": gpu, "cpu_threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "platform": platform.platform(), "commit": commit(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def markdown(report: dict[str, Any]) -> str:
    info = report["machine"]
    lines = [f"# Benchmark report ({'toy sizes' if report['toy'] else 'real configurations'})",
             "", f"Commit {info['commit']}, {info['date']}; GPU: {info['gpu'] or 'none'}; "
             f"{info['cpu_threads']} CPU threads; torch {info['torch']}.", ""]
    for name, entry in report["benchmarks"].items():
        lines += [f"## {name}", "", f"`{entry['command']}`: exit {entry['exit_status']}, "
                  f"{entry['seconds']:.0f} s", ""]
        # a training's progress bar redraws with carriage returns: not part of the figures
        lines += [line for line in entry["stdout"].splitlines()
                  if line.strip() and "\r" not in line and "it/s" not in line]
        if entry["exit_status"]:
            lines += ["", "```", entry["stderr_tail"].strip(), "```"]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--toy", action="store_true", help="tiny sizes, on the CPU")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "benchmarks",
                        help="directory for report.json, report.md and each result")
    parser.add_argument("--only", action="append", choices=sorted(BENCHMARKS),
                        help="run only these benchmarks (repeatable)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"toy": args.toy, "machine": machine(), "benchmarks": {}}
    for name, (real, toy, limit) in BENCHMARKS.items():
        if args.only and name not in args.only:
            continue
        report["benchmarks"][name] = run_one(name, toy if args.toy else real, limit, args.out)
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    (args.out / "report.md").write_text(markdown(report))
    failed = [n for n, e in report["benchmarks"].items() if e["exit_status"]]
    print(f"report: {args.out / 'report.md'}" + (f"; failed: {', '.join(failed)}" if failed
                                                   else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
