"""Shared fixtures: plugins loaded once, CPU-only determinism for small runs."""

import subprocess

import pytest
import torch

from swav_plugin.host.plugins import load_plugins

load_plugins()
torch.set_num_threads(2)


@pytest.fixture
def tiny_recipe(tmp_path):
    """A SwAV recipe small enough to train a few steps on the CPU in seconds."""
    return {
        "method": {
            "name": "swav",
            "backbone": {"name": "resnet18_cifar"},
            "head": {
                "name": "swav_head",
                "input_dim": 512,
                "hidden_dim": 32,
                "output_dim": 16,
                "num_prototypes": 20,
                "freeze_prototypes_iters": 1,
            },
            "loss": {"name": "swav_loss"},
            "queue": {"name": "swav_queue", "length": 0},
            "warmup_epochs": 0.5,
        },
        "data": {
            "dataset": {"name": "digits", "image_size": 8},
            "transform": {
                "name": "multicrop",
                "crops": [
                    {"size": 8, "count": 2, "scale": [0.5, 1.0]},
                    {"size": 4, "count": 2, "scale": [0.2, 0.5]},
                ],
                "blur_prob": 0.0,
            },
            "collate": "multicrop_collate",
            "batch_size": 32,
            "num_workers": 0,
            "pin_memory": False,
        },
        "trainer": {
            "max_epochs": 1,
            "limit_train_batches": 3,
            "accelerator": "cpu",
            "devices": 1,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "log_every_n_steps": 1,
        },
        "run": {"output_dir": str(tmp_path / "run"), "seed": 0},
    }


class RunsCode:
    """Unpickling this runs a shell command: what a malicious checkpoint or cache would carry."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (subprocess.call, (["touch", str(self.marker)],))


@pytest.fixture
def code_payload(tmp_path):
    """``(payload, marker)``: saving ``payload`` in a file and unpickling it creates ``marker``."""
    marker = tmp_path / "code_ran"
    return RunsCode(marker), marker
