"""The benchmark scripts run (at toy sizes) and report what they claim to."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_knn_scale_benchmark_reports_time_and_memory(tmp_path):
    out = tmp_path / "knn.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/knn_scale.py", "--bank", "3000", "--dim", "16",
         "--queries", "100", "--k", "10", "--device", "cpu", "--output", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert [r["backend"] for r in rows] == ["faiss", "torch"]
    for row in rows:
        assert row["seconds"] > 0 and row["peak_rss_gib"] > 0
        assert row["seconds_for_50k_queries"] == row["seconds"] * 500
    assert "(extrapolated)" in proc.stdout


def run_script(args, tmp_path, timeout=600):
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, *args, "--output", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def test_sinkhorn_benchmark_reports_time_and_error_of_both(tmp_path):
    result, stdout = run_script(["benchmarks/sinkhorn.py", "--device", "cpu", "--repeats", "2",
                                 "--sizes", "64x30", "128x50"], tmp_path)
    rows = result["rows"]
    assert [(r["size"], r["implementation"]) for r in rows] == [
        ("64x30", "ours"), ("64x30", "lightly"), ("128x50", "ours"), ("128x50", "lightly")]
    for r in rows:
        assert r["ms"] > 0 and r["max_abs_error_vs_float64"] < 1e-5
    assert all(r["finite_half_precision"] == {"float16": True, "bfloat16": True}
               for r in rows if r["implementation"] == "ours")
    assert "| 64x30 | ours |" in stdout


@pytest.mark.slow
def test_throughput_benchmark_runs_all_three_and_reports_the_ratios(tmp_path):
    result, stdout = run_script(
        ["benchmarks/throughput.py", "--device", "cpu", "--batch-size", "8", "--prototypes", "8",
         "--steps", "3", "--warmup", "1", "--repeats", "1", "--workers", "0", "--images", "16",
         "--crop-size", "16", "--precision", "32"], tmp_path)
    runs = result["runs"]
    assert set(runs) == {"ours", "lightly", "ceiling"}
    assert all(r["images_per_s"] > 0 and r["peak_gib"] > 0 for r in runs.values())
    assert result["ours_over_lightly"] == pytest.approx(
        runs["ours"]["images_per_s"] / runs["lightly"]["images_per_s"])
    assert "a/b (ours / lightly)" in stdout


@pytest.mark.slow
def test_resnet50_step_benchmark_counts_flops(tmp_path):
    result, stdout = run_script(
        ["benchmarks/step_resnet50.py", "--device", "cpu", "--batch-size", "1", "--steps", "2",
         "--warmup", "1", "--global-size", "32", "--local-size", "16", "--local-crops", "2",
         "--precision", "32", "--peak-tflops", "1.0"], tmp_path)
    assert result["flops_per_step"] > 0 and result["images_per_s"] > 0
    assert "MFU:" in stdout and "n/a" not in stdout
