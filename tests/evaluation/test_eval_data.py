"""The data an evaluation runs on: the data section, the splits and the transform."""

import pytest

from swav_plugin.evaluation.eval_data import (
    check_split,
    eval_transform_node,
    evaluation_data,
)
from swav_plugin.host.errors import ConfigError
from swav_plugin.host.resolve import resolve


def test_a_data_yaml_and_overrides_replace_the_checkpoints_data(tmp_path):
    (tmp_path / "data.yaml").write_text("data:\n  dataset: {name: digits, image_size: 12}\n")
    node = evaluation_data({"dataset": {"name": "stl10", "root": "/x", "download": False}},
                           [str(tmp_path / "data.yaml"), "dataset.test_fraction=0.5"],
                           tmp_path / "w.pth")
    assert node["dataset"] == {"name": "digits", "split": "train", "image_size": 12,
                               "test_fraction": 0.5, "seed": 0}
    # another data set's name starts its node afresh: stl10's keys do not carry over
    fresh = evaluation_data({"dataset": {"name": "stl10", "root": "/x", "download": False}},
                            ["dataset.name=cifar10", "dataset.root=/y"], tmp_path / "w.pth")
    assert fresh["dataset"] == {"name": "cifar10", "root": "/y", "split": "train",
                                "download": True}


def test_the_evaluation_transform_is_a_centre_crop_at_the_largest_training_crop(tiny_recipe):
    recipe = resolve(tiny_recipe)
    node = eval_transform_node(recipe)
    assert node == {"name": "center_crop", "size": 8, "crop_fraction": 1.0,
                    "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    recipe["data"]["transform"]["crops"][1]["size"] = 224  # large images: the 0.875 crop
    assert eval_transform_node(recipe)["crop_fraction"] == 0.875


def test_a_split_the_data_set_lacks_lists_the_ones_it_has(tiny_recipe):
    recipe = resolve(tiny_recipe)
    check_split(recipe, "test")
    with pytest.raises(ConfigError) as refused:
        check_split(recipe, "val")
    assert str(refused.value) == ("split 'val' does not exist in data set 'digits'; valid "
                                  "splits: train, test, all")
