"""Bad inputs to the eval tools: one line on stderr, exit status 2, nothing written or lost."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from swav_plugin.host.export import export
from swav_plugin.host.registry import DATASETS
from swav_plugin.zoo.datasets import ImageArrayDataset
from tests.evaluation.tools import ROOT, TOOLS, fails, save


def image_folder_checkpoint(content, tmp_path: Path, layout: dict[str, str]) -> Path:
    """A checkpoint whose recipe reads an image folder with ``{split: class letters}``."""
    root = tmp_path / "images"
    for split, classes in layout.items():
        for name in classes:
            (root / split / name).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(root / split / name / "0.png")
    content["recipe"]["data"]["dataset"] = {"name": "image_folder", "root": str(root),
                                            "split": "train"}
    return save(content, tmp_path)


@pytest.mark.parametrize("tool", ["knn", "linear", "prototypes", "finetune"])
def test_checkpoint_of_another_method(capsys, content, tmp_path, tool):
    content["recipe"]["method"]["name"] = "simclr"
    line = fails(capsys, tool, save(content, tmp_path))
    assert "last.ckpt' was trained with method 'simclr'" in line
    assert "unknown method 'simclr'" in line and "swav-train checkpoint" in line


@pytest.mark.parametrize("kind", ["no recipe", "torchvision"])
def test_weights_without_a_recipe_need_their_architecture(capsys, content, tmp_path, kind):
    stored = {"no recipe": {"state_dict": content["state_dict"], "epoch": 3},
              "torchvision": torchvision.models.resnet18().state_dict()}[kind]
    line = fails(capsys, "knn", save(stored, tmp_path, "model.pth"))
    assert "model.pth' carries no recipe naming its architecture; pass --arch NAME" in line
    assert "resnet50w2" in line  # the registered backbones are listed


@pytest.mark.parametrize("kind", ["tensor", "code"])
def test_files_that_hold_no_weights_are_refused(capsys, content, tmp_path, code_payload, kind):
    payload, marker = code_payload
    stored, words = {
        "tensor": (torch.zeros(3), ["is a Tensor"]),
        "code": ({**content, "payload": payload},
                 ["cannot be loaded safely (UnpicklingError: Unsupported global: GLOBAL",
                  "it holds objects beyond tensors and plain values"]),
    }[kind]
    line = fails(capsys, "knn", save(stored, tmp_path, "model.pth"))
    for word in [*words, "model.pth", "the eval tools read swav-train checkpoints"]:
        assert word in line
    assert not marker.exists()


def test_exported_weights_need_the_data_to_evaluate_on(capsys, content, tmp_path):
    exported = next(iter(export(save(content, tmp_path), tmp_path / "run" / "export")))
    line = fails(capsys, "linear", exported)
    assert "backbone.safetensors' names no data set to evaluate on; pass --data dataset.name=" \
        in line


def test_arch_that_contradicts_the_checkpoints_recipe(capsys, content, tmp_path):
    line = fails(capsys, "knn", save(content, tmp_path), "--arch", "resnet50")
    assert "--arch resnet50: " in line
    assert "names backbone 'resnet18_cifar'; leave --arch out" in line


def test_data_naming_an_unknown_dataset(capsys, content, tmp_path):
    line = fails(capsys, "knn", save(content, tmp_path), "--data", "dataset.name=imagenet22k")
    assert "--data dataset" in line and "imagenet22k" in line


def test_data_value_that_its_tag_cannot_read(capsys, content, tmp_path):
    line = fails(capsys, "knn", save(content, tmp_path), "--data", "dataset.name=!!int abc")
    assert "override 'dataset.name=!!int abc'" in line and "'abc' cannot be read as !!int" in line


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda c: c["recipe"]["method"].update(backbone={"name": "resnet50"}),
     r"backbone 'resnet50'\): \d+ missing, 0 unexpected and \d+ mismatched keys \(e\.g\. "
     r"'backbone\.conv1\.weight' is \(64, 3, 3, 3\) in the file, \(64, 3, 7, 7\) in the model"),
    (lambda c: c["state_dict"].update({"backbone.extra": torch.zeros(2)}),
     r"0 missing, 1 unexpected and 0 mismatched keys \(e\.g\. 'backbone\.extra' is unexpected"),
    (lambda c: c["state_dict"].pop("head.prototypes.0.weight"),
     r"1 missing, 0 unexpected and 0 mismatched keys \(e\.g\. 'head\.prototypes\.0\.weight' is "
     r"missing"),
], ids=["resnet50", "extra key", "missing key"])
def test_weights_that_do_not_fit_the_recipe(capsys, content, tmp_path, edit, expected):
    edit(content)
    line = fails(capsys, "prototypes", save(content, tmp_path))
    assert "its weights do not fit the architecture its recipe names (method 'swav'" in line
    assert re.search(expected, line), line


def test_weights_mismatch_in_a_real_process_has_no_traceback(content, tmp_path):
    content["recipe"]["method"]["backbone"] = {"name": "resnet18"}  # a 7×7 stem, not 3×3
    proc = subprocess.run([sys.executable, "eval/knn.py", str(save(content, tmp_path))],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("knn: error: checkpoint") and proc.stderr.count("\n") == 1
    assert "(method 'swav', backbone 'resnet18'): 0 missing, 0 unexpected and 1 mismatched" \
        in proc.stderr
    assert not (tmp_path / "run" / "eval").exists()


@pytest.mark.parametrize("args", [["--mode", "fast"], ["--mode", "standard"]])
def test_splits_with_different_classes(capsys, content, tmp_path, args):
    checkpoint = image_folder_checkpoint(content, tmp_path, {"train": "abc", "test": "ab"})
    line = fails(capsys, "linear", checkpoint, *args)
    assert (f"splits 'train' and 'test' of data set 'image_folder' at '{tmp_path / 'images'}' "
            "have different classes (3 and 2; 'c' only in 'train')") in line


@pytest.fixture
def unlabelled_test_split():
    """A data set whose test split is unlabelled (-1), as STL-10's 'unlabeled' split."""

    @DATASETS.register("half_labelled")
    def half_labelled(split: Literal["train", "test"] = "train") -> ImageArrayDataset:
        labels = np.arange(6) % 2 if split == "train" else np.full(6, -1)
        return ImageArrayDataset(np.zeros((6, 8, 8, 3), np.uint8), labels, ["0", "1"])

    yield "half_labelled"
    DATASETS.unregister("half_labelled")


@pytest.mark.parametrize(("tool", "args"), [("knn", []), ("prototypes", ["--split", "test"])])
def test_labels_that_are_not_class_indices(capsys, content, tmp_path, unlabelled_test_split,
                                           tool, args):
    content["recipe"]["data"]["dataset"] = {"name": unlabelled_test_split, "split": "train"}
    line = fails(capsys, tool, save(content, tmp_path), *args)
    assert ("split 'test' of data set 'half_labelled': 6 of 6 labels are not class indices "
            "0..1 (e.g. -1; unlabelled images carry -1); evaluate on a labelled split") in line


@pytest.mark.parametrize(("tool", "args", "dataset", "valid"), [
    ("knn", ["--test-split", "val"], "digits", "train, test, all"),
    ("prototypes", ["--split", "val"], "digits", "train, test, all"),
    ("linear", ["--test-split", "val"], "image_folder", "test, train"),
])
def test_missing_split(capsys, content, tmp_path, tool, args, dataset, valid):
    checkpoint = (image_folder_checkpoint(content, tmp_path, {"train": "ab", "test": "ab"})
                  if dataset == "image_folder" else save(content, tmp_path))
    line = fails(capsys, tool, checkpoint, *args)
    assert f"split 'val' does not exist in data set '{dataset}'" in line
    assert line.endswith(f"; valid splits: {valid}")
    if dataset == "image_folder":
        assert f"at '{tmp_path / 'images'}'" in line


@pytest.mark.parametrize("cut", ["empty", "half", "text"])
def test_truncated_or_corrupt_checkpoint(capsys, content, tmp_path, cut):
    checkpoint = save(content, tmp_path)
    data = checkpoint.read_bytes()
    checkpoint.write_bytes({"empty": b"", "half": data[: len(data) // 2],
                            "text": b"not a checkpoint"}[cut])
    line = fails(capsys, "knn", checkpoint)
    assert f"checkpoint '{checkpoint}' is truncated or corrupt (" in line
    assert line.endswith("); copy it again or use another checkpoint")


def test_a_subset_file_needs_a_data_set_of_files(capsys, content, tmp_path):
    listing = tmp_path / "10percent.txt"
    listing.write_text("n01440764_10026.JPEG\n")
    line = fails(capsys, "finetune", save(content, tmp_path), "--subset-file", str(listing))
    assert line.endswith(f"'{listing}' selects images by file name, and a data set of type "
                         "ImageArrayDataset has no files; leave the subset file out to take a "
                         "seeded class-balanced fraction")


def test_fine_tuning_resumes_only_a_run_of_the_same_settings(capsys, content, tmp_path):
    checkpoint = save(content, tmp_path)
    runs = tmp_path / "finetune"
    first = [str(checkpoint), "--epochs", "1", "--limit-train-batches", "1", "--checkpoint-dir",
             str(runs), "--output", str(tmp_path / "first.json"), "--device", "cpu"]
    assert TOOLS["finetune"](first) == 0
    last = runs / "pretrained" / "last.ckpt"
    kept = last.read_bytes()
    line = fails(capsys, "finetune", checkpoint, *first[1:7], "--lr", "0.5")
    assert line.endswith(f"'{last}' holds a fine-tuning run with other settings (lr: 0.01 there, "
                         "0.5 here); run with its settings to resume it, or pass --fresh to "
                         "start over")
    assert last.read_bytes() == kept
    assert TOOLS["finetune"]([*first, "--lr", "0.5", "--fresh"]) == 0  # replaced, not versioned
    # its SHA-256 beside it, for the resume to verify
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt", "last.ckpt.sha256"]
    assert torch.load(last, weights_only=True)["protocol_settings"]["lr"] == 0.5
    kept = last.read_bytes()
    last.write_bytes(kept[: len(kept) // 2])
    line = fails(capsys, "finetune", checkpoint, *first[1:7])
    assert f"'{last}' is not a fine-tuning checkpoint that can be resumed (" in line
    assert line.endswith("); pass --fresh to start over")


def test_a_subset_list_of_another_percentage_than_labels(capsys, content, tmp_path):
    checkpoint = image_folder_checkpoint(content, tmp_path, {"train": "abcde", "test": "abcde"})
    listing = tmp_path / "list.txt"
    listing.write_text("a/0.png\n")  # 1 of 5 images: 20 %
    line = fails(capsys, "finetune", checkpoint, "--subset-file", str(listing), "--labels", "1")
    assert line.endswith(f"'{listing}' lists 20 % of split 'train' but --labels is 1; pass the "
                         "--labels of that list (its learning rates and result names follow it)")
