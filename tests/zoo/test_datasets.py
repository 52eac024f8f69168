"""Data sets read through the real torchvision loaders from miniature files in each data set's
exact on-disk format (no download: the md5 sums torchvision checks are pointed at our files)."""

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torchvision
from PIL import Image

from swav_plugin.host.errors import ConfigError
from swav_plugin.host.registry import DATASETS


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _pickle(path: Path, obj: dict) -> str:
    path.write_bytes(pickle.dumps(obj))
    return _md5(path)


def _point_checksums(monkeypatch, cls, train_list, test_list, meta_md5=None) -> None:
    """Make torchvision's integrity check accept our miniature files."""
    monkeypatch.setattr(cls, "train_list", train_list)
    monkeypatch.setattr(cls, "test_list", test_list)
    if meta_md5 is not None:
        monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": meta_md5})


def _cifar_images(rng: np.random.Generator, n: int) -> np.ndarray:
    """Rows of 3072 bytes: the red plane, then green, then blue, each 32×32 row-major."""
    return rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)


@pytest.fixture
def cifar10_root(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    train_list, batches = [], {}
    for i in range(1, 6):
        data, labels = _cifar_images(rng, 4), [int(x) for x in rng.integers(0, 10, 4)]
        name = f"data_batch_{i}"
        batches[name] = (data, labels)
        train_list.append([name, _pickle(folder / name, {"data": data, "labels": labels})])
    test = (_cifar_images(rng, 3), [1, 2, 3])
    batches["test_batch"] = test
    test_md5 = _pickle(folder / "test_batch", {"data": test[0], "labels": test[1]})
    test_list = [["test_batch", test_md5]]
    names = [f"class{i}" for i in range(10)]
    meta_md5 = _pickle(folder / "batches.meta", {"label_names": names})
    _point_checksums(monkeypatch, torchvision.datasets.CIFAR10, train_list, test_list, meta_md5)
    return tmp_path, batches, names


def test_cifar10_reads_pickled_batches(cifar10_root):
    root, batches, names = cifar10_root
    train = DATASETS.create("cifar10", root=str(root), split="train", download=False)
    test = DATASETS.create("cifar10", root=str(root), split="test", download=False)
    assert len(train) == 20 and len(test) == 3
    assert train.classes == names
    image, label = train[5]
    data, labels = batches["data_batch_2"]
    assert label == labels[1]
    # the channel planes of the raw row become the RGB pixels of the image
    expected = data[1].reshape(3, 32, 32).transpose(1, 2, 0)
    np.testing.assert_array_equal(np.asarray(image), expected)
    assert [test[i][1] for i in range(3)] == [1, 2, 3]


def test_cifar100_reads_fine_labels(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    files = {}
    for split, n in (("train", 6), ("test", 2)):
        data, fine = _cifar_images(rng, n), [int(x) for x in rng.integers(0, 100, n)]
        coarse = [f // 5 for f in fine]
        files[split] = (fine, _pickle(folder / split, {"data": data, "fine_labels": fine,
                                                       "coarse_labels": coarse}))
    names = [f"fine{i}" for i in range(100)]
    meta_md5 = _pickle(folder / "meta", {"fine_label_names": names,
                                         "coarse_label_names": [f"c{i}" for i in range(20)]})
    _point_checksums(monkeypatch, torchvision.datasets.CIFAR100, [["train", files["train"][1]]],
                     [["test", files["test"][1]]], meta_md5)
    train = DATASETS.create("cifar100", root=str(tmp_path), split="train", download=False)
    assert len(train) == 6 and len(train.classes) == 100
    assert [train[i][1] for i in range(6)] == files["train"][0]


@pytest.fixture
def stl10_root(tmp_path, monkeypatch):
    """STL-10's binary files: uint8 images stored column-major per channel, labels 1–10."""
    rng = np.random.default_rng(2)
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    images = {split: rng.integers(0, 256, size=(n, 96, 96, 3), dtype=np.uint8)
              for split, n in (("train", 3), ("test", 2), ("unlabeled", 4))}
    labels = {"train": np.array([1, 5, 10], np.uint8), "test": np.array([2, 3], np.uint8)}
    md5 = {}
    for split, hwc in images.items():
        path = folder / f"{split}_X.bin"
        path.write_bytes(np.ascontiguousarray(hwc.transpose(0, 3, 2, 1)).tobytes())
        md5[f"{split}_X.bin"] = _md5(path)
    for split, y in labels.items():
        path = folder / f"{split}_y.bin"
        path.write_bytes(y.tobytes())
        md5[f"{split}_y.bin"] = _md5(path)
    (folder / "class_names.txt").write_text("\n".join(f"c{i}" for i in range(10)) + "\n")
    _point_checksums(
        monkeypatch, torchvision.datasets.STL10,
        [[n, md5[n]] for n in ("train_X.bin", "train_y.bin", "unlabeled_X.bin")],
        [[n, md5[n]] for n in ("test_X.bin", "test_y.bin")],
    )
    return tmp_path, images, labels


def test_stl10_reads_binary_files(stl10_root):
    root, images, labels = stl10_root
    train = DATASETS.create("stl10", root=str(root), split="train", download=False)
    unlabeled = DATASETS.create("stl10", root=str(root), split="unlabeled", download=False)
    assert len(train) == 3 and len(unlabeled) == 4
    image, label = train[1]
    np.testing.assert_array_equal(np.asarray(image), images["train"][1])
    assert label == 4  # stored 1-based
    assert unlabeled[0][1] == -1
    assert train.classes[0] == "c0"


def test_missing_root_without_download_names_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="download: true"):
        DATASETS.create("cifar10", root=str(tmp_path / "nowhere"), download=False)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_image_folder_reads_a_class_tree(tmp_path, suffix):
    for name in ("cat", "dog"):
        (tmp_path / "train" / name).mkdir(parents=True)
        for i in range(2):
            grey = Image.fromarray(np.full((10, 12), 40 * i + 20, np.uint8), mode="L")
            grey.save(tmp_path / "train" / name / f"{i}{suffix}")
    dataset = DATASETS.create("image_folder", root=str(tmp_path), split="train")
    assert dataset.classes == ["cat", "dog"]
    image, label = dataset[3]
    assert label == 1 and image.mode == "RGB" and image.size == (12, 10)


def test_image_folder_errors_name_the_path(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        DATASETS.create("image_folder", root=str(tmp_path), split="val")
    (tmp_path / "val" / "empty_class").mkdir(parents=True)
    with pytest.raises(ConfigError, match="image folder"):
        DATASETS.create("image_folder", root=str(tmp_path), split="val")


def test_digits_split_is_stratified_disjoint_and_upsampled():
    train = DATASETS.create("digits", split="train", image_size=16)
    test = DATASETS.create("digits", split="test", image_size=16)
    everything = DATASETS.create("digits", split="all", image_size=8)
    assert len(train) + len(test) == len(everything) == 1797
    assert train[0][0].size == (16, 16) and train[0][0].mode == "RGB"
    test_counts = np.bincount(test.labels, minlength=10)
    assert test_counts.min() >= 0.2 * len(test) / 10  # every class present in proportion
    train_rows = {img.tobytes() for img in train.images}
    assert sum(img.tobytes() in train_rows for img in test.images) < 0.05 * len(test)
    with pytest.raises(ValueError, match="image_size"):
        DATASETS.create("digits", image_size=4)
