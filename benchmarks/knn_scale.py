"""kNN search at ImageNet scale: time and peak memory of the search backends of eval/knn.py.

    python benchmarks/knn_scale.py                                # 1.28M x 2048 bank, 50k queries
    python benchmarks/knn_scale.py --queries 1000 --backend torch # a CPU-sized slice

Random unit-norm features stand in for real ones (search cost does not depend on the values).
The bank is generated in chunks straight into one float32 tensor; queries are searched in
chunks (bounded memory). Reports, per backend, the wall time of index build + search,
queries per second, the time extrapolated to 50,000 queries when fewer were run, and the
process's peak memory (RSS on the CPU, allocated memory on a GPU).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import torch

from swav_plugin.evaluation.knn import faiss_search, torch_search


def unit_rows(n: int, dim: int, seed: int, chunk: int = 65536) -> torch.Tensor:
    out = torch.empty(n, dim)
    generator = torch.Generator().manual_seed(seed)
    for start in range(0, n, chunk):
        block = torch.randn(min(chunk, n - start), dim, generator=generator)
        out[start : start + len(block)] = torch.nn.functional.normalize(block, dim=1)
    return out


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bank", type=int, default=1_281_167)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--queries", type=int, default=50_000)
    parser.add_argument("--k", type=int, default=200)
    parser.add_argument("--backend", choices=["faiss", "torch", "both"], default="both")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", help="also write the results as JSON here")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    bank = unit_rows(args.bank, args.dim, seed=0)
    queries = unit_rows(args.queries, args.dim, seed=1)
    print(f"bank {args.bank:,} x {args.dim}, {args.queries:,} queries, k={args.k}; generated "
          f"in {time.perf_counter() - start:.1f} s, RSS peak {peak_rss_gib():.1f} GiB; "
          f"{torch.get_num_threads()} CPU threads, device {args.device}")
    backends = ["faiss", "torch"] if args.backend == "both" else [args.backend]
    results = []
    for backend in backends:
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        if backend == "faiss":
            faiss_search(bank, queries, args.k, use_gpu=args.device.startswith("cuda"))
        else:
            torch_search(bank, queries, args.k, device=args.device)
        seconds = time.perf_counter() - start
        row = {"backend": backend, "device": args.device, "bank": args.bank, "dim": args.dim,
               "queries": args.queries, "k": args.k, "seconds": seconds,
               "queries_per_second": args.queries / seconds,
               "seconds_for_50k_queries": seconds * 50_000 / args.queries,
               "peak_rss_gib": peak_rss_gib()}
        if args.device.startswith("cuda"):
            row["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
        results.append(row)
        extrapolated = "" if args.queries == 50_000 else " (extrapolated)"
        print(f"{backend:>6}: {seconds:8.1f} s  {row['queries_per_second']:9.1f} queries/s  "
              f"50k queries: {row['seconds_for_50k_queries'] / 60:.1f} min{extrapolated}  "
              f"peak RSS {row['peak_rss_gib']:.1f} GiB"
              + (f", GPU {row['peak_gpu_gib']:.1f} GiB" if "peak_gpu_gib" in row else ""))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
