"""The labelled images of semi-supervised fine-tuning: SimCLR's lists, balanced fractions."""

from pathlib import Path

import pytest
import torch
from PIL import Image

from swav_plugin.evaluation.label_subsets import (
    balanced_subset,
    labels_of,
    read_subset_file,
    subset_by_names,
)
from swav_plugin.host.errors import ConfigError
from swav_plugin.zoo.datasets import digits, image_folder


@pytest.fixture
def imagenet_train(tmp_path):
    """ImageNet's train layout: train/WNID/WNID_N.JPEG, 3 classes of 4 images."""
    for wnid in ("n01440764", "n01443537", "n01484850"):
        (tmp_path / "train" / wnid).mkdir(parents=True)
        for n in range(4):
            Image.new("RGB", (5, 4), (n * 40, 0, 0)).save(
                tmp_path / "train" / wnid / f"{wnid}_{1000 + n}.JPEG", format="JPEG")
    return image_folder(str(tmp_path), "train")


def test_simclr_names_select_those_files_in_the_listed_order(imagenet_train, tmp_path):
    listing = tmp_path / "10percent.txt"
    listing.write_text("n01484850_1002.JPEG\nn01440764_1000.JPEG\n\nn01443537/n01443537_1003.JPEG\n")
    names = read_subset_file(listing)
    assert names == ["n01484850_1002.JPEG", "n01440764_1000.JPEG",
                     "n01443537/n01443537_1003.JPEG"]
    indices = subset_by_names(imagenet_train, names, str(listing))
    chosen = [Path(imagenet_train.samples[i][0]) for i in indices]
    assert [(p.parent.name, p.name) for p in chosen] == [
        ("n01484850", "n01484850_1002.JPEG"), ("n01440764", "n01440764_1000.JPEG"),
        ("n01443537", "n01443537_1003.JPEG")]
    labels = [imagenet_train.samples[i][1] for i in indices]
    assert labels == [imagenet_train.class_to_idx[p.parent.name] for p in chosen]


def test_listed_images_missing_from_the_folder_are_counted_in_one_line(imagenet_train):
    names = ["n01440764_1000.JPEG", "n01440764_9999.JPEG", "n09999999_1.JPEG"]
    with pytest.raises(ConfigError, match=r"^2 of 3 images listed in 'list.txt' are not in the "
                       r"training split \(e.g. 'n01440764_9999.JPEG', looked for as "
                       r"n01440764/n01440764_9999.JPEG\); point --data") as info:
        subset_by_names(imagenet_train, names, "list.txt")
    assert "\n" not in str(info.value)


def test_a_data_set_without_files_cannot_take_a_list():
    with pytest.raises(ConfigError, match="type ImageArrayDataset has no files; leave the subset "
                       "file out"):
        subset_by_names(digits("train", image_size=8), ["0_1.png"], "list.txt")


def test_subset_files_that_list_nothing_or_do_not_exist(tmp_path):
    with pytest.raises(ConfigError, match="does not exist; give the path"):
        read_subset_file(tmp_path / "none.txt")
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(ConfigError, match="lists no image; give one file name per line"):
        read_subset_file(tmp_path / "empty.txt")


def test_balanced_fraction_takes_the_share_of_each_class_seeded():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 3)
    chosen = balanced_subset(labels, 0.1, seed=31)
    counts = torch.bincount(labels[chosen], minlength=3).tolist()
    assert counts == [5, 3, 1]  # round(10 %), at least one image a class
    assert chosen == sorted(chosen) and len(set(chosen)) == len(chosen)
    assert balanced_subset(labels, 0.1, seed=31) == chosen
    assert balanced_subset(labels, 0.1, seed=32) != chosen
    assert balanced_subset(labels, 1.0, seed=0) == list(range(len(labels)))
    for bad in (0.0, 1.5):
        with pytest.raises(ConfigError, match=r"fraction must be in \(0, 1\]"):
            balanced_subset(labels, bad, seed=0)


def test_labels_of_reads_targets_or_labels(imagenet_train):
    assert labels_of(imagenet_train).tolist() == [0] * 4 + [1] * 4 + [2] * 4
    data = digits("test", image_size=8)
    assert labels_of(data).tolist() == list(data.labels)
    assert labels_of(torch.utils.data.TensorDataset(torch.zeros(2))) is None
