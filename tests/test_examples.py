"""The LightningCLI and Hydra examples train SwAV for a few steps, as their READMEs say."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def run(*args):
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def trained_steps(checkpoint):
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"]


def test_lightning_cli_trains_from_its_config_of_class_paths(tmp_path):
    rng = np.random.default_rng(0)
    for label in ("a", "b"):  # an image folder: root/class/image
        (tmp_path / "images" / label).mkdir(parents=True)
        for i in range(16):
            pixels = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / label / f"{i}.png")
    run("examples/lightning_cli.py", "fit", "--config", "examples/lightning_cli.yaml",
        "--data.dataset.init_args.root", tmp_path / "images", "--trainer.max_steps", "2",
        "--trainer.default_root_dir", tmp_path / "run", "--trainer.accelerator", "cpu",
        "--trainer.enable_progress_bar", "false")
    (checkpoint,) = (tmp_path / "run" / "checkpoints").glob("*.ckpt")
    assert trained_steps(checkpoint) == 2
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "swav_plugin.swav.head.SwAVHead" in saved and "num_prototypes: 16" in saved


def test_hydra_trains_from_its_config_of_targets(tmp_path):
    run("examples/hydra_train.py", "trainer.max_steps=2", "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path / 'run'}")
    (checkpoint,) = (tmp_path / "run" / "checkpoints").glob("*.ckpt")
    assert trained_steps(checkpoint) == 2
    assert (tmp_path / "run" / ".hydra" / "config.yaml").is_file()
