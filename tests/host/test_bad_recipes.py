"""A battery of malformed recipes: each is refused with one line, exit status 2, no traceback.

Every case writes a recipe into ``tmp_path`` (the ``tiny_recipe`` with one thing broken, or raw
text for the YAML cases), runs ``swav-train`` in-process and checks that stderr is exactly one
``swav-train: error:`` line naming the key (or the file), the bad value and what is allowed or
how to fix it, and that the run directory was not created. ``BAD_RECIPES_PRINT=1`` prints the
lines (with ``pytest -s``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from swav_plugin.host.runner import main

GPUS = torch.cuda.device_count()

Breaker = Callable[[dict[str, Any], Path], "dict[str, Any] | str | None"]


def put(dotted: str, value: Any) -> Breaker:
    """Set ``dotted`` (``method.loss.epsilon``; list items as ``crops.0``) to ``value``."""

    def breaker(recipe: dict[str, Any], tmp_path: Path) -> None:
        *parents, last = dotted.split(".")
        node: Any = recipe
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return breaker


def drop(section: str) -> Breaker:
    return lambda recipe, tmp_path: recipe.pop(section) and None


def both(*breakers: Breaker) -> Breaker:
    def breaker(recipe: dict[str, Any], tmp_path: Path) -> None:
        for b in breakers:
            b(recipe, tmp_path)

    return breaker


def raw(text: str) -> Breaker:
    """Replace the whole file with ``text`` (``{tmp}`` stands for ``tmp_path``)."""
    return lambda recipe, tmp_path: text.replace("{tmp}", str(tmp_path))


def image_folder(make: Callable[[Path], None], split: str | None = "train") -> Breaker:
    """The data set: an image folder under ``tmp_path / "images"``, prepared by ``make``."""

    def breaker(recipe: dict[str, Any], tmp_path: Path) -> None:
        root = tmp_path / "images"
        make(root)
        recipe["data"]["dataset"] = {"name": "image_folder", "root": str(root), "split": split}

    return breaker


def _mkdir(*parts: str) -> Callable[[Path], None]:
    return lambda root: (root.joinpath(*parts)).mkdir(parents=True)


@dataclass
class Case:
    breaker: Breaker
    fragments: tuple[str, ...]  # each must appear in the line; ``{tmp}`` stands for tmp_path


CASES: dict[str, Case] = {
    # -- names ------------------------------------------------------------------------
    "unknown method": Case(
        put("method.name", "swov"),
        ("method: unknown method 'swov'", "did you mean 'swav'", "registered methods: swav"),
    ),
    "bare unknown method": Case(
        put("method", "simclr"), ("method: unknown method 'simclr'", "registered methods: swav")
    ),
    "unknown backbone": Case(
        put("method.backbone.name", "resnet18_cifr"),
        ("method.backbone: unknown backbone 'resnet18_cifr'", "did you mean 'resnet18_cifar'",
         "registered backbones: resnet18, resnet18_cifar, resnet50, resnet50w2, resnet50w4, "
         "resnet50w5, resnet_small"),
    ),
    "unknown dataset": Case(
        put("data.dataset.name", "imagenet"),
        ("data.dataset: unknown dataset 'imagenet'", "registered datasets:", "image_folder"),
    ),
    "component node without a name": Case(
        put("method.head", {"input_dim": 512}),
        ("method.head: expected a head name or a mapping with a 'name' key",
         "{'input_dim': 512}", "registered heads: swav_head"),
    ),
    "misspelt key in method.loss": Case(
        put("method.loss.temprature", 0.2),
        ("method.loss: unknown key 'temprature'", "did you mean 'temperature'?",
         "valid keys of swav_plugin.swav.loss.SwAVLoss: temperature, crops_for_assign"),
    ),
    "misspelt key in data": Case(
        put("data.batchsize", 16),
        ("data: unknown key 'batchsize'", "did you mean 'batch_size'?", "valid keys"),
    ),
    "misspelt key in trainer": Case(
        put("trainer.max_epoch", 3),
        ("trainer: unknown key 'max_epoch'", "did you mean 'max_epochs'?", "valid keys"),
    ),
    "misspelt key in a crop group": Case(
        put("data.transform.crops.1.sizes", 4),
        ("data.transform: crops[1]: unknown key 'sizes'", "did you mean 'size'?", "valid keys"),
    ),
    "unknown top-level section": Case(
        put("optimizer", {"lr": 0.1}),
        ("recipe: unknown key 'optimizer'", "valid keys", "method, data, trainer, run, callbacks"),
    ),
    "missing method section": Case(
        drop("method"),
        ("recipe has no 'method' section", "add e.g. 'method: swav'"),
    ),
    # -- types ------------------------------------------------------------------------
    "batch size is a word": Case(
        put("data.batch_size", "many"), ("data.batch_size: expected int, got 'many' (str)",)
    ),
    "batch size is a bool": Case(
        put("data.batch_size", True), ("data.batch_size: expected int, got True (bool)",)
    ),
    "epsilon is a list": Case(
        put("method.loss.epsilon", [0.05]),
        ("method.loss.epsilon: expected float, got [0.05] (list)",),
    ),
    "data section is a list": Case(
        put("data", [1, 2]), ("recipe section 'data' must be a mapping, got [1, 2]",)
    ),
    "crop scale is a number": Case(
        put("data.transform.crops.0.scale", 0.5),
        ("data.transform: crops[0]: scale must be a list [min, max], got 0.5",),
    ),
    "data.augment: tpu": Case(
        put("data.augment", "tpu"), ("data.augment: expected one of 'cpu', 'gpu', got 'tpu'",)
    ),
    "optimizer adam": Case(
        put("method.optimizer", "adam"),
        ("method.optimizer: expected one of 'lars', 'sgd', 'adamw', got 'adam'",),
    ),
    "lars_clip with sgd": Case(
        both(put("method.optimizer", "sgd"), put("method.lars_clip", True)),
        ("method: lars_clip applies to optimizer 'lars', not 'sgd'",),
    ),
    "precision 17": Case(
        put("trainer.precision", "17"), ("trainer.precision: expected one of", "got '17'")
    ),
    # -- values out of range ----------------------------------------------------------
    "epsilon 0": Case(
        put("method.loss.epsilon", 0), ("method.loss: epsilon must be positive, got 0",)
    ),
    "epsilon negative": Case(
        put("method.loss.epsilon", -0.05), ("method.loss: epsilon must be positive, got -0.05",)
    ),
    "temperature 0": Case(
        put("method.loss.temperature", 0.0),
        ("method.loss: temperature must be positive, got 0.0",),
    ),
    "temperature negative": Case(
        put("method.loss.temperature", -1), ("method.loss: temperature must be positive, got -1",)
    ),
    "sinkhorn iterations 0": Case(
        put("method.loss.sinkhorn_iterations", 0),
        ("method.loss: sinkhorn_iterations must be at least 1, got 0",),
    ),
    "batch size 0": Case(
        put("data.batch_size", 0), ("data: batch_size must be at least 1, got 0",)
    ),
    "batch size negative": Case(
        put("data.batch_size", -32), ("data: batch_size must be at least 1, got -32",)
    ),
    "batch size larger than the data set": Case(
        put("data.batch_size", 5000),
        ("data:", "fewer than batch_size=5000", "lower data.batch_size"),
    ),
    "num_workers negative": Case(
        put("data.num_workers", -1), ("data: num_workers must be 0 or more, got -1",)
    ),
    "lr negative": Case(put("method.lr", -0.1), ("method: lr must be positive, got -0.1",)),
    "lr 0": Case(put("method.lr", 0), ("method: lr must be positive, got 0",)),
    "warmup negative": Case(
        put("method.warmup_epochs", -1), ("method: warmup_epochs must be 0 or more, got -1",)
    ),
    "weight decay negative": Case(
        put("method.weight_decay", -0.001),
        ("method: weight_decay must be 0 or more, got -0.001",),
    ),
    "final lr ratio above 1": Case(
        put("method.final_lr_ratio", 2), ("method: final_lr_ratio must be in [0, 1], got 2",)
    ),
    "num_prototypes 0": Case(
        put("method.head.num_prototypes", 0),
        ("method.head: num_prototypes must be positive, got 0",),
    ),
    "queue length negative": Case(
        put("method.queue.length", -10),
        ("method.queue: length must be 0 (no queue) or positive, got -10",),
    ),
    "crop scale above 1": Case(
        put("data.transform.crops.0.scale", [0.5, 1.5]),
        ("data.transform: crops[0]: scale must satisfy 0 < min <= max <= 1", "[0.5, 1.5]"),
    ),
    "crop size is a word": Case(
        put("data.transform.crops.0.size", "big"),
        ("data.transform: crops[0]: size must be a whole number, got 'big'",),
    ),
    "crop size 0": Case(
        put("data.transform.crops.1.size", 0),
        ("data.transform: crops[1]: size and count must be positive", "'size': 0"),
    ),
    "crop probability above 1": Case(
        put("data.transform.crops.0.hflip_prob", 1.5),
        ("data.transform: crops[0]: hflip_prob must be in [0, 1], got 1.5",),
    ),
    "crops_for_assign negative": Case(
        put("method.loss.crops_for_assign", [-1, 0]),
        ("method.loss: crops_for_assign must list crop indices >= 0, got [-1, 0]",),
    ),
    "crops_for_assign repeated": Case(
        put("method.loss.crops_for_assign", [0, 0]),
        ("method.loss: crops_for_assign has repeated crops: [0, 0]",),
    ),
    # -- values that do not fit each other (the method's start-up checks) --------------
    "crops_for_assign out of range": Case(
        put("method.loss.crops_for_assign", [0, 4]),
        ("method.loss: crops_for_assign=[0, 4]", "only 4 crops (indices 0..3)",
         "fix loss.crops_for_assign"),
    ),
    "queue shorter than the global batch": Case(
        both(put("method.queue.length", 16), put("method.queue.start_epoch", 0)),
        ("method.queue.length=16", "per-device batch of 32",
         "raise method.queue.length to at least 32"),
    ),
    "queue shorter than the global batch on two devices": Case(
        both(put("method.queue.length", 48), put("method.queue.start_epoch", 0),
             put("trainer.devices", 2)),
        ("method.queue.length=48", "24 embeddings per rank", "per-device batch of 32",
         "raise method.queue.length to at least 64"),
    ),
    # devices 'auto': the world size is known only inside fit (SwAV.setup checks there); the
    # runner then removes the run directory the logger had just made
    "queue too short, world size resolved by the trainer": Case(
        both(put("method.queue.length", 16), put("method.queue.start_epoch", 0),
             put("trainer.devices", "auto")),
        ("method.queue.length=16", "raise method.queue.length to at least 32"),
    ),
    "more prototypes than the batch can balance": Case(
        put("method.head.num_prototypes", 100),
        ("global batch 32 + queue 0 < 100 prototypes", "lower method.head.num_prototypes"),
    ),
    "head input_dim differs from the backbone": Case(
        put("method.head.input_dim", 256),
        ("the backbone outputs 512 features but head.input_dim is 256",
         "set method.head.input_dim=512"),
    ),
    "gradient accumulation": Case(
        put("trainer.accumulate_grad_batches", 2),
        ("trainer.accumulate_grad_batches=2", "set it to 1"),
    ),
    # -- the trainer and the machine ----------------------------------------------------
    # without a GPU: GPUs asked for at all; with GPUs: one more than there are
    "accelerator gpu": Case(
        both(put("trainer.accelerator", "gpu"), put("trainer.devices", GPUS + 1)),
        ("trainer.devices: 2 GPUs asked for but this machine has 1", "at most 1")
        if GPUS == 1 else
        (f"trainer.devices: {GPUS + 1} GPUs asked for but this machine has {GPUS}",)
        if GPUS else
        ("trainer.accelerator: 'gpu' but no GPU is available on this machine",
         "set trainer.accelerator: cpu"),
    ),
    "64 cuda devices": Case(
        both(put("trainer.accelerator", "cuda"), put("trainer.devices", 64)),
        (f"trainer.devices: 64 GPUs asked for but this machine has {GPUS}",
         f"set trainer.devices to at most {GPUS}")
        if GPUS else
        ("trainer.accelerator: 'cuda' but no GPU is available on this machine",
         "set trainer.accelerator: cpu"),
    ),
    "tpu accelerator": Case(
        put("trainer.accelerator", "tpu"), ("trainer", "tpu", "torch_xla")
    ),
    "devices 0": Case(
        put("trainer.devices", 0),
        ("trainer.devices: expected a positive number, -1 (all), 'auto' or a list of ids, got 0",),
    ),
    "num_nodes 0": Case(
        put("trainer.num_nodes", 0), ("trainer.num_nodes: expected a positive number, got 0",)
    ),
    "unknown strategy": Case(
        put("trainer.strategy", "ddp_bogus"),
        ("trainer", "strategy='ddp_bogus'", "Example choices: auto, ddp"),
    ),
    "max_epochs below -1": Case(
        put("trainer.max_epochs", -5),
        ("trainer", "`max_epochs` must be a non-negative integer or -1", "You passed in -5"),
    ),
    "trainer.callbacks set": Case(
        put("trainer.callbacks", ["knn_monitor"]),
        ("trainer.callbacks cannot be set in a recipe", "['knn_monitor']",
         "top-level 'callbacks' section"),
    ),
    "trainer.default_root_dir set": Case(
        put("trainer.default_root_dir", "/tmp/elsewhere"),
        ("trainer.default_root_dir cannot be set in a recipe", "'/tmp/elsewhere'",
         "set run.output_dir instead"),
    ),
    "callbacks is a mapping": Case(
        put("callbacks", {"name": "knn_monitor"}),
        ("recipe section 'callbacks' must be a list of callbacks", "{'name': 'knn_monitor'}"),
    ),
    "resume from a missing checkpoint": Case(
        put("run.resume_from", "{tmp}/missing.ckpt"),
        ("run.resume_from: checkpoint '{tmp}/missing.ckpt' does not exist", "fix the path"),
    ),
    # -- data on disk -----------------------------------------------------------------
    "missing data directory": Case(
        image_folder(lambda root: None),
        ("data.dataset: image folder '{tmp}/images/train' does not exist",
         "check the dataset's root/split"),
    ),
    "missing cifar directory without download": Case(
        put("data.dataset", {"name": "cifar10", "root": "{tmp}/cifar", "download": False}),
        ("data.dataset: data directory '{tmp}/cifar' does not exist", "download: true"),
    ),
    "empty data directory": Case(
        image_folder(_mkdir(), split=None),
        ("data.dataset: image folder '{tmp}/images'", "Couldn't find any class folder",
         "{tmp}/images/CLASS/IMAGE"),
    ),
    "empty split directory": Case(
        image_folder(_mkdir("train")),
        ("data.dataset: image folder '{tmp}/images/train'", "Couldn't find any class folder",
         "{tmp}/images/train/CLASS/IMAGE"),
    ),
    "class folders without images": Case(
        image_folder(_mkdir("train", "cat")),
        ("data.dataset: image folder '{tmp}/images/train'", "cat", "Supported extensions",
         "{tmp}/images/train/CLASS/IMAGE"),
    ),
    # -- the file itself --------------------------------------------------------------
    "YAML syntax error": Case(
        raw("method: swav\ndata: {batch_size: 3\n"),
        ("recipe '{tmp}/recipe.yaml' is not valid YAML at line 3, column 1",
         "expected ',' or '}'", "fix the YAML"),
    ),
    "YAML bad indentation": Case(
        raw("method:\n  name: swav\n    head: swav_head\n"),
        ("recipe '{tmp}/recipe.yaml' is not valid YAML at line 3", "fix the YAML"),
    ),
    "YAML python object tag": Case(
        raw('method: !!python/object/apply:os.system ["touch {tmp}/MARKER"]\n'),
        ("recipe '{tmp}/recipe.yaml' is not valid YAML at line 1, column 9",
         "'!!python/object/apply:os.system'", "not allowed", "plain YAML values"),
    ),
    "YAML python name tag": Case(
        raw("method: !!python/name:os.system ''\n"),
        ("recipe '{tmp}/recipe.yaml' is not valid YAML at line 1", "'!!python/name:os.system'",
         "not allowed"),
    ),
    "YAML duplicate section": Case(
        lambda recipe, tmp_path: yaml.safe_dump(recipe) + "data: {batch_size: 16}\n",
        ("recipe '{tmp}/recipe.yaml' is not valid YAML at line", "duplicate key 'data'",
         "keep one"),
    ),
    "YAML duplicate key in a section": Case(
        raw("method: swav\ndata:\n  batch_size: 8\n  num_workers: 0\n  batch_size: 16\n"),
        ("recipe '{tmp}/recipe.yaml' is not valid YAML at line 5, column 3",
         "duplicate key 'batch_size'", "keep one"),
    ),
    "recipe is a list": Case(
        raw("- method: swav\n"),
        ("recipe '{tmp}/recipe.yaml' must be a mapping with sections method, data",),
    ),
    "empty recipe": Case(
        raw(""), ("recipe '{tmp}/recipe.yaml' must be a mapping with sections method, data",)
    ),
}


def _write(recipe: dict[str, Any], case: Case, tmp_path: Path) -> Path:
    broken = case.breaker(recipe, tmp_path)
    path = tmp_path / "recipe.yaml"
    if isinstance(broken, str):
        path.write_text(broken)
    else:
        text = yaml.safe_dump(recipe).replace("{tmp}", str(tmp_path))
        path.write_text(text)
    return path


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("swav-train: error: ")
    if os.environ.get("BAD_RECIPES_PRINT"):
        with capsys.disabled():
            print(f"\n    {lines[0]}")
    return lines[0]


@pytest.mark.parametrize("name", list(CASES))
def test_bad_recipe_is_one_line_exit_2_and_writes_nothing(name, tiny_recipe, tmp_path, capsys):
    case = CASES[name]
    path = _write(tiny_recipe, case, tmp_path)
    assert main([str(path)]) == 2
    line = _error_line(capsys)
    for fragment in case.fragments:
        assert fragment.replace("{tmp}", str(tmp_path)) in line
    assert not (tmp_path / "run").exists()
    assert not (tmp_path / "MARKER").exists()  # the python object tag ran nothing


def test_missing_recipe_file(tmp_path, capsys):
    assert main([str(tmp_path / "nope.yaml")]) == 2
    line = _error_line(capsys)
    assert f"recipe file '{tmp_path}/nope.yaml' does not exist" in line
    assert "pass the path of a YAML recipe" in line


@pytest.mark.parametrize(
    "name",
    ["epsilon 0", "crops_for_assign out of range", "queue shorter than the global batch",
     "queue too short, world size resolved by the trainer", "accelerator gpu",
     "YAML syntax error"],
)
def test_bad_recipe_leaves_an_existing_run_untouched(name, tiny_recipe, tmp_path, capsys):
    """A bad recipe aimed at an earlier run's directory changes none of its files."""
    run_dir = tmp_path / "run"
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"\x80\x04checkpoint bytes\x00\xff")
    (run_dir / "recipe.yaml").write_bytes(b"method: swav  # the recipe of the earlier run\n")
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    path = _write(tiny_recipe, CASES[name], tmp_path)
    assert main([str(path)]) == 2
    _error_line(capsys)
    after = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(run_dir.rglob("*")) == [run_dir / "checkpoints", checkpoint,
                                         run_dir / "recipe.yaml"]


@pytest.mark.parametrize("name", ["queue shorter than the global batch", "YAML python object tag"])
def test_command_line_prints_only_the_error_line(name, tiny_recipe, tmp_path):
    """The real command: nothing else on stderr (no Lightning start-up lines), status 2."""
    path = _write(tiny_recipe, CASES[name], tmp_path)
    proc = subprocess.run([sys.executable, "-m", "swav_plugin", str(path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("swav-train: error: "), proc.stderr
    assert proc.stdout == ""
    assert not (tmp_path / "run").exists()
    assert not (tmp_path / "MARKER").exists()
