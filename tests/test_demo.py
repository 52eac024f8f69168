"""The README's main job end to end, shortened: train, kNN and linear probe against the
baselines (random init, raw pixels), UMAP plot."""

import json
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from swav_plugin.evaluation.linear import linear_probe
from swav_plugin.zoo.datasets import digits
from tests.evaluation.test_knn import brute_force_knn

ROOT = Path(__file__).resolve().parents[1]


def demo_pixels(split):
    """The demo's evaluation pixels in NumPy: 8 px digits, normalised by 0.5 / 0.5, CHW."""
    data = digits(split, image_size=8)
    pixels = (np.asarray(data.images, dtype=np.float32) / 255 - 0.5) / 0.5
    return pixels.transpose(0, 3, 1, 2).reshape(len(pixels), -1), np.asarray(data.labels)


def run(*args):
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def run_tool(capsys, tool, *args):
    """An eval script's ``main`` in this process (exit status, stdout, stderr): the script's
    own code without a new interpreter's start-up (its run as a process: test_tool_errors)."""
    capsys.readouterr()
    status = runpy.run_path(str(ROOT / tool))["main"]([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def run_ok(capsys, tool, *args):
    status, out, err = run_tool(capsys, tool, *args)
    assert status == 0, err[-3000:]
    return out


@pytest.mark.slow
def test_demo_pipeline(tmp_path, capsys):
    out = tmp_path / "demo"
    run("-m", "swav_plugin", "recipes/demo_digits.yaml", f"run.output_dir={out}",
        "trainer.max_epochs=1", "trainer.limit_train_batches=2",
        "trainer.enable_progress_bar=false")
    checkpoint = out / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file() and (out / "recipe.yaml").is_file()

    printed = run_ok(capsys, "eval/knn.py", str(checkpoint), "--baselines", "--k", "5", "20")
    assert all(name in printed for name in ("pretrained", "random_init", "raw_pixels"))
    result = json.loads((out / "eval" / "knn.json").read_text())
    for name in ("pretrained", "random_init", "raw_pixels"):
        assert set(result[name]) == {"5", "20"}
        assert 0 <= result[name]["20"]["top1"] <= 100
    assert result["pretrained"] != result["random_init"]  # the weights were really loaded
    # the raw-pixel row is the same kNN on the evaluation transform's pixels, in NumPy
    (xtr, ytr), (xte, yte) = (demo_pixels(split) for split in ("train", "test"))
    for k in (5, 20):
        top1, top5, _ = brute_force_knn(xtr, ytr, xte, yte, k, 0.07, 10)
        assert result["raw_pixels"][str(k)]["top1"] == pytest.approx(top1, abs=1e-4)
        assert result["raw_pixels"][str(k)]["top5"] == pytest.approx(top5, abs=1e-4)

    printed = run_ok(capsys, "eval/linear.py", str(checkpoint), "--weight-decays", "0", "0.01",
                     "--max-iter", "50", "--compare-pixels")
    assert "linear probe (fast)" in printed and "random_init" not in printed
    linear = json.loads((out / "eval" / "linear.json").read_text())
    assert linear["pretrained"]["weight_decay"] in (0.0, 0.01)
    assert set(linear["pretrained"]["validation_top1"]) == {"0.0", "0.01"}
    assert 0 <= linear["pretrained"]["top1"] <= linear["pretrained"]["top5"] <= 100
    pixels = linear_probe(torch.from_numpy(xtr), torch.from_numpy(ytr), torch.from_numpy(xte),
                          torch.from_numpy(yte), weight_decays=(0.0, 0.01), max_iter=50)
    assert linear["raw_pixels"]["top1"] == pytest.approx(pixels.top1, abs=0.5)
    # the kNN run cached the features of every row: the probe extracted nothing new
    assert len(list((out / "eval" / "cache").glob("*.pt"))) == 6

    printed = run_ok(capsys, "eval/linear.py", str(checkpoint), "--mode", "standard",
                     "--epochs", "1", "--limit-train-batches", "2", "--compare-pixels",
                     "--output", str(out / "eval" / "standard.json"))
    assert "linear probe (standard)" in printed
    standard = json.loads((out / "eval" / "standard.json").read_text())
    assert standard["protocol"].startswith("standard")
    for name in ("pretrained", "raw_pixels"):
        assert standard[name]["epochs"] == 1 and standard[name]["best_epoch"] == 1
        assert 0 <= standard[name]["top1"] <= standard[name]["top5"] <= 100
        assert standard[name]["last"] == {"top1": standard[name]["top1"],
                                          "top5": standard[name]["top5"]}  # one epoch
        assert standard[name]["global_batch"] == 256 and standard[name]["scaled_lr"] == 0.3
    assert "(epoch 1 of 1), last " in printed and "lr 0.3 x 256/256 = 0.3" in printed

    tune = (checkpoint, "--epochs", "2", "--limit-train-batches", "2", "--compare-linear",
            "--min-scale", "0.6", "--no-hflip")
    printed = run_ok(capsys, "eval/finetune.py", *tune)
    assert "pretrained: fine-tuning on 136 labelled images (10 % of each class, seed 31)" in printed
    tuned = json.loads((out / "eval" / "finetune_10pct.json").read_text())
    assert tuned["pretrained"]["epochs"] == 2 and tuned["pretrained"]["images"] == 136
    assert (tuned["pretrained"]["lr"], tuned["pretrained"]["lr_head"]) == (0.01, 0.2)
    assert 0 <= tuned["pretrained"]["top1"] <= tuned["pretrained"]["top5"] <= 100
    assert tuned["linear_probe"]["images"] == 136 and "weight_decay" in tuned["linear_probe"]
    assert (out / "eval" / "finetune_10pct" / "pretrained" / "last.ckpt").is_file()
    again = run_ok(capsys, "eval/finetune.py", *tune)
    assert "resuming pretrained from" in again
    assert json.loads((out / "eval" / "finetune_10pct.json").read_text()) == tuned  # read back

    printed = run_ok(capsys, "eval/prototypes.py", str(checkpoint), "--max-points", "300")
    for name in ("prototypes_umap.png", "prototypes_usage.png", "prototypes_nearest.png"):
        assert f"plot written to {out / 'eval' / name}" in printed
        assert (out / "eval" / name).read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out / "eval" / "prototypes.json").read_text())
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    assert summary["num_prototypes"] == recipe["method"]["head"]["num_prototypes"]
    assert len(summary["samples_per_prototype"]) == summary["num_prototypes"]
    assert summary["num_samples"] == 1347
    assert sum(summary["samples_per_prototype"]) == 1347


def test_eval_tools_reject_a_missing_checkpoint(tmp_path, capsys):
    for tool in ("eval/knn.py", "eval/linear.py", "eval/prototypes.py", "eval/finetune.py"):
        status, _, err = run_tool(capsys, tool, tmp_path / "none.ckpt")
        assert status == 2
        assert err.strip().endswith("does not exist; train first or fix the path")
        assert "Traceback" not in err
