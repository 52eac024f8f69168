"""Every benchmark runs (at toy sizes, through ``benchmarks/report.py --toy``) and reports what
it claims to; the device-operation budget of the CIFAR-10 recipe's augmentation holds."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    proc = subprocess.run([sys.executable, "benchmarks/report.py", "--toy", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads((out / "report.json").read_text()), (out / "report.md").read_text()


def result(report, name):
    entry = report[0]["benchmarks"][name]
    assert entry["exit_status"] == 0 and entry["result"] is not None, entry["stderr_tail"]
    return entry["result"]


@pytest.mark.slow
def test_report_runs_every_benchmark_and_writes_its_tables(report):
    data, md = report
    assert set(data["benchmarks"]) == {"augment_ops", "device_reads", "guard_overhead",
                                       "throughput", "sinkhorn", "step_resnet50", "loader",
                                       "knn_scale"}
    assert data["toy"] and data["machine"]["commit"]
    for name in data["benchmarks"]:
        assert f"## {name}" in md
    assert "it/s" not in md  # the training progress bars are left out


@pytest.mark.slow
def test_cifar10_augmentation_stays_within_its_device_operation_budget(report):
    (row,) = result(report, "augment_ops")["rows"]
    assert row["recipe"] == "cifar10_multicrop.yaml" and row["device_ops_budget"] == 150
    assert 0 < row["device_ops"] <= 150
    assert row["worker_ops"] > 0 and row["device_ms"] > 0


@pytest.mark.slow
def test_device_reads_only_on_logging_steps(report):
    rows = result(report, "device_reads")["rows"]
    assert rows["first"]["steps"] == 1
    assert rows["other"]["steps"] > 0 and rows["other"]["max_reads"] == 0
    assert rows["logging"]["steps"] == 3 and rows["logging"]["reads_per_step"] > 0


@pytest.mark.slow
def test_guard_overhead_counts_both_guards(report):
    meta, cpu = result(report, "guard_overhead")["rows"]
    assert meta["device"] == "meta" and meta["guard"]["aten_ops"] < meta["per_tensor"]["aten_ops"]
    assert cpu["guard"]["ms_per_step"] > 0 and cpu["per_tensor"]["ms_per_step"] > 0


@pytest.mark.slow
def test_throughput_runs_every_arm_and_reports_the_ratios(report):
    found = result(report, "throughput")
    runs = found["runs"]
    assert set(runs) == {"ours", "lightly", "lightly_channels_last", "ceiling"}
    assert all(r["images_per_s"] > 0 and r["peak_gib"] > 0 for r in runs.values())
    assert found["ours_over_lightly"] == pytest.approx(
        runs["ours"]["images_per_s"] / runs["lightly"]["images_per_s"])
    assert "a/b (ours / lightly)" in report[1]


@pytest.mark.slow
def test_sinkhorn_reports_time_and_error_of_both(report):
    rows = result(report, "sinkhorn")["rows"]
    assert [(r["size"], r["implementation"]) for r in rows] == [
        ("64x30", "ours"), ("64x30", "lightly"), ("128x50", "ours"), ("128x50", "lightly")]
    for r in rows:
        assert r["ms"] > 0 and r["max_abs_error_vs_float64"] < 1e-5
    assert all(r["finite_half_precision"] == {"float16": True, "bfloat16": True}
               for r in rows if r["implementation"] == "ours")
    assert "| 64x30 | ours |" in report[1]


@pytest.mark.slow
def test_resnet50_step_counts_flops(report):
    found = result(report, "step_resnet50")
    assert found["flops_per_step"] > 0 and found["images_per_s"] > 0
    assert "MFU:" in report[1] and "n/a" not in report[1]
    # the same step fed from JPEG files through the device path
    assert found["jpeg_over_device"] == pytest.approx(
        found["jpeg_images_per_s"] / found["images_per_s"])
    assert "fed from 4 JPEG files by 1 workers (augment: gpu)" in report[1]


@pytest.mark.slow
def test_knn_scale_reports_time_and_memory(report):
    rows = result(report, "knn_scale")
    assert [r["backend"] for r in rows] == ["faiss", "torch"]
    for row in rows:
        assert row["seconds"] > 0 and row["peak_rss_gib"] > 0
        assert row["seconds_for_50k_queries"] == row["seconds"] * 500
    assert "(extrapolated)" in report[1]


@pytest.mark.slow
def test_demo_seeds_tabulates_every_seed_and_their_mean(tmp_path):
    out = tmp_path / "seeds.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/demo_seeds.py", "--seeds", "3", "4", "--runs",
         str(tmp_path / "runs"), "--output", str(out), "--set", "trainer.max_epochs=1",
         "trainer.limit_train_batches=2"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert [s["seed"] for s in data["seeds"]] == [3, 4]
    assert data["overrides"] == ["trainer.max_epochs=1", "trainer.limit_train_batches=2"]
    pixels = [s["knn"]["raw_pixels"]["20"] for s in data["seeds"]]
    assert pixels[0] == pixels[1]  # the pixels do not depend on the seed
    linear = [s["linear"]["pretrained"] for s in data["seeds"]]
    mean = sum(linear) / 2
    std = abs(linear[0] - linear[1]) / 2 ** 0.5
    line = next(x for x in proc.stdout.splitlines() if x.startswith("| pretrained |"))
    assert line.rstrip(" |").endswith(f"{mean:.2f} ± {std:.2f}")
    verdict = "beats" if data["beaten"] else "does NOT beat"
    assert f"pretrained backbone {verdict} random init and raw pixels at kNN k=20" in proc.stdout
    again = subprocess.run(
        [sys.executable, "benchmarks/demo_seeds.py", "--seeds", "4",
         "--runs", str(tmp_path / "runs")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert again.returncode == 2 and "pass --overwrite to delete it" in again.stderr
    assert (tmp_path / "runs" / "seed_4" / "checkpoints").is_dir()  # nothing deleted


@pytest.mark.slow
def test_loader_times_every_pipeline_on_the_same_files(report):
    found = result(report, "loader")
    assert found["images"] == 8 and len(found["sizes"]) == 8  # portrait, landscape, square
    assert set(found["images_per_s_per_core"]) == {
        "pil_decode", "tv_decode", "cpu_before", "cpu", "lightly", "official", "gpu_prepare",
        "encoded_read", "encoded_decode"}
    assert all(rate > 0 for rate in found["images_per_s_per_core"].values())
    rounds = found["per_round"]
    assert found["rounds"] == 2 and all(len(rates) == 2 for rates in rounds.values())
    assert found["cpu_over_before"] == pytest.approx(
        sum(c / b for c, b in zip(rounds["cpu"], rounds["cpu_before"], strict=True)) / 2)
    assert "| pipeline | img/s/core (median of 2) | min - max |" in report[1]
