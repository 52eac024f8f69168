"""The dry run: the recipe's own components on random data, nothing written."""

import pytest
import torch
import yaml

from swav_plugin.host.dry_run import describe_batch
from swav_plugin.host.random_images import RandomImages
from swav_plugin.host.runner import main
from swav_plugin.host.sections import launch_world_size


def test_random_images_are_reproducible_and_sized():
    data = RandomImages(num_samples=3, size=20, seed=1)
    first, label = data[2]
    assert first.size == (20, 20) and first.mode == "RGB" and label == 0
    assert first.tobytes() == RandomImages(3, 20, seed=1)[2][0].tobytes()
    assert first.tobytes() != data[1][0].tobytes()


def test_describe_batch_counts_equal_shapes():
    batch = ([torch.zeros(4, 3, 8, 8), torch.zeros(4, 3, 8, 8), torch.zeros(4, 3, 4, 4)],
             torch.zeros(4, dtype=torch.long))
    assert describe_batch(batch) == "2×(4, 3, 8, 8), (4, 3, 4, 4), (4,)"


@pytest.mark.parametrize(("section", "expected"), [
    ({"devices": 8, "num_nodes": 8}, 64),
    ({"devices": [0, 1]}, 2),
    ({}, 1),
    ({"devices": "auto"}, None),
])
def test_launch_world_size(section, expected):
    assert launch_world_size(section) == expected


def test_dry_run_rehearses_without_writing(tiny_recipe, tmp_path, capsys):
    tiny_recipe["trainer"]["devices"] = 2  # the launch: two devices; the rehearsal runs on one
    tiny_recipe["trainer"]["precision"] = "bf16-mixed"  # a GPU precision: fp32 on a CPU
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe))
    assert main([str(path), "--dry-run", "--steps", "2"]) == 0
    printed = capsys.readouterr().out
    assert "launch world size 2" in printed
    assert "precision 32" in printed
    # 32 images per device; the collate stacks the 2 × 8 px and the 2 × 4 px crops by size
    assert printed.count("batch (64, 3, 8, 8), (64, 3, 4, 4), (32,)") == 2
    assert "swav-train: dry run passed" in printed
    assert not (tmp_path / "run").exists()


def test_dry_run_uses_the_launch_world_size_for_start_up_checks(tiny_recipe, tmp_path, capsys):
    tiny_recipe["method"]["head"]["num_prototypes"] = 50  # more than the 32 per device
    path = tmp_path / "recipe.yaml"
    for devices, status in ((1, 2), (2, 0)):  # global batch 32: infeasible; 64: feasible
        tiny_recipe["trainer"]["devices"] = devices
        path.write_text(yaml.safe_dump(tiny_recipe))
        assert main([str(path), "--dry-run", "--steps", "1"]) == status
    assert "global batch 32 + queue 0 < 50 prototypes" in capsys.readouterr().err
