"""The benchmark scripts run (at toy sizes) and report what they claim to."""

import json
import subprocess
import sys
from pathlib import Path

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
