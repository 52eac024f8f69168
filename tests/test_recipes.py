"""Every recipe in recipes/: resolves, derives the right schedule, and survives a dry run."""

import math
import subprocess
import sys
from pathlib import Path

import pytest

from swav_plugin.host.resolve import load_recipe
from swav_plugin.host.sections import launch_world_size
from swav_plugin.swav.training_plan import TrainingPlan
from tests.test_recipe_provenance import SOURCES

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p.name for p in (ROOT / "recipes").glob("*.yaml"))

#: Training-set sizes (the data sets are not on this machine).
DATASET_SIZES = {"digits": 1347, "cifar10": 50_000, "cifar100": 50_000, "stl10": 100_000,
                 "image_folder": 1_281_167}

#: What each recipe must derive at its launch: global batch, scaled lr, steps per epoch,
#: warm-up steps, and the prototypes and queue it is meant to have.
EXPECTED = {
    "demo_digits.yaml": dict(global_batch=64, lr=1.2, steps_per_epoch=21, warmup_steps=42,
                             prototypes=150, queue=384),
    "cifar10.yaml": dict(global_batch=256, lr=0.6, steps_per_epoch=195, warmup_steps=1950,
                         prototypes=3000, queue=3840),
    "cifar10_multicrop.yaml": dict(global_batch=256, lr=0.6, steps_per_epoch=195,
                                   warmup_steps=1950, prototypes=100, queue=0),
    "cifar100.yaml": dict(global_batch=256, lr=0.6, steps_per_epoch=195, warmup_steps=1950,
                          prototypes=3000, queue=3840),
    "stl10.yaml": dict(global_batch=256, lr=0.6, steps_per_epoch=390, warmup_steps=3900,
                       prototypes=200, queue=0),
    # the official small-batch run: 5004 steps per epoch, no warm-up, queue from epoch 15
    "imagenet_bs256.yaml": dict(global_batch=256, lr=0.6, steps_per_epoch=5004, warmup_steps=0,
                                prototypes=3000, queue=3840),
    "imagenet_8gpu.yaml": dict(global_batch=512, lr=1.2, steps_per_epoch=2502,
                               warmup_steps=25020, prototypes=3000, queue=3840),
    # ours: AdamW at 0.0005 per 256, one epoch of frozen prototypes
    "imagenet_vit_small.yaml": dict(global_batch=1024, lr=0.002, steps_per_epoch=1251,
                                    warmup_steps=12510, prototypes=3000, queue=3840),
    # the paper's: 4.8 at 4096, 313 frozen steps ≈ one epoch of 312.8 steps
    "imagenet_64gpu.yaml": dict(global_batch=4096, lr=4.8, steps_per_epoch=312,
                                warmup_steps=3120, prototypes=3000, queue=0),
}


def test_every_recipe_has_expectations():
    assert set(RECIPES) == set(EXPECTED)


def plan_of(recipe):
    method, data, trainer = recipe["method"], recipe["data"], recipe["trainer"]
    world = launch_world_size(trainer)
    # DistributedSampler: each rank gets ceil(N / world) samples; the last batch is dropped.
    per_rank = math.ceil(DATASET_SIZES[data["dataset"]["name"]] / world)
    steps_per_epoch = per_rank // data["batch_size"]
    return TrainingPlan.derive(
        batch_size=data["batch_size"], world_size=world, steps_per_epoch=steps_per_epoch,
        total_steps=steps_per_epoch * trainer["max_epochs"],
        lr=method["lr"], lr_batch_size=method["lr_batch_size"],
        warmup_epochs=method["warmup_epochs"],
    ), world


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_derives_its_stated_schedule(name):
    recipe = load_recipe(ROOT / "recipes" / name)
    assert recipe["method"]["name"] == "swav"
    plan, world = plan_of(recipe)
    expected = EXPECTED[name]
    assert plan.global_batch == expected["global_batch"]
    assert plan.lr == pytest.approx(expected["lr"])
    assert plan.steps_per_epoch == expected["steps_per_epoch"]
    assert plan.warmup_steps == expected["warmup_steps"]
    assert plan.total_steps == plan.steps_per_epoch * recipe["trainer"]["max_epochs"]

    head, queue = recipe["method"]["head"], recipe["method"]["queue"]
    assert head["num_prototypes"] == expected["prototypes"]
    assert queue["length"] == expected["queue"]
    # the equipartition can hold: global batch + queue >= prototypes
    assert plan.global_batch + queue["length"] >= head["num_prototypes"]
    if queue["length"]:
        assert queue["length"] // world >= recipe["data"]["batch_size"]  # per-rank FIFO
    # prototypes frozen for one to two epochs of this launch (the paper: the first epoch)
    frozen_epochs = head["freeze_prototypes_iters"] / plan.steps_per_epoch
    assert 1.0 <= frozen_epochs <= 2.1, frozen_epochs


def test_gpu_recipes_use_the_lean_step_and_imagenet_uses_sync_batchnorm():
    for name in RECIPES:
        recipe = load_recipe(ROOT / "recipes" / name)
        trainer = recipe["trainer"]
        if name.startswith("demo"):
            continue
        backbone = recipe["method"]["backbone"]
        convolutional = not backbone.get("model", "").startswith("vit")
        assert trainer["accelerator"] == "gpu"
        assert recipe["method"]["channels_last"] == convolutional
        if name.startswith("imagenet"):
            assert trainer["sync_batchnorm"] and trainer["strategy"] == "ddp"
        if name in SOURCES:  # precision and augmentation are the source's (its own test)
            continue
        assert trainer["precision"] == "bf16-mixed"
        assert recipe["data"]["augment"] == "gpu"  # in-memory images and JPEG files alike


#: Shrink what a 2-core CPU cannot run (backbone width, batch) and keep the structure: crops,
#: prototypes, queue, optimizer and schedule. Each per-device batch keeps the launch's global
#: batch + queue at or above the prototype count.
RESNET18 = ["method.backbone.name=resnet18", "method.head.input_dim=512"]
SHRINK = {
    "demo_digits.yaml": [],
    "cifar10.yaml": ["data.batch_size=16"],
    "cifar10_multicrop.yaml": ["data.batch_size=100"],
    "cifar100.yaml": ["data.batch_size=16"],
    "stl10.yaml": ["data.batch_size=200"],
    "imagenet_bs256.yaml": [*RESNET18, "data.batch_size=4"],
    "imagenet_8gpu.yaml": [*RESNET18, "data.batch_size=4"],
    "imagenet_64gpu.yaml": [*RESNET18, "data.batch_size=47"],
    # the head's width follows the narrower ViT (192) by itself
    "imagenet_vit_small.yaml": ["method.backbone.model=vit_tiny_patch16_224",
                                "data.batch_size=4"],
}
#: Optimizer steps per rehearsal: one where the batch the prototypes need makes a step long.
STEPS = {"stl10.yaml": 1, "imagenet_64gpu.yaml": 1}


@pytest.mark.slow
@pytest.mark.parametrize("name", RECIPES)
def test_recipe_passes_the_dry_run(name, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "swav_plugin", f"recipes/{name}", "--dry-run",
         "--steps", str(STEPS.get(name, 2)),
         *SHRINK[name], f"run.output_dir={tmp_path / 'run'}"],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "swav-train: dry run passed" in proc.stdout
    assert proc.stdout.count("  step ") == STEPS.get(name, 2)
    assert not (tmp_path / "run").exists()
