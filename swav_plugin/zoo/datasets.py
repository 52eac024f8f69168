"""Data sets by registry name. Each yields ``(PIL image, int label)`` and has ``classes``.

CIFAR-10/100 and STL-10 come through torchvision (downloaded on first use when
``download: true``, files checked by torchvision) and are held as one ``uint8`` array, which
``data.augment: gpu`` batches without PIL; ``image_folder`` reads any
``root/split/class/image`` tree (ImageNet's layout), skipping the files it cannot read;
``digits`` is scikit-learn's 8×8 hand-written digits, which ship inside the scikit-learn
package and so need no download: the embedded default for demos and tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torchvision
from PIL import Image
from torch.utils.data import Dataset

from swav_plugin.host.errors import ConfigError
from swav_plugin.host.registry import DATASETS
from swav_plugin.zoo.images import SkippingImageFolder
from swav_plugin.zoo.rgb import MAX_PIXELS


class ImageArrayDataset(Dataset):
    """Images held in memory as one ``uint8`` array of shape (N, H, W, 3).

    ``images`` and ``labels`` are public: ``data.augment: gpu`` fetches whole batches from
    them.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, classes: list[str]) -> None:
        self.images = images
        self.labels = labels
        self.classes = classes

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[index]), int(self.labels[index])


@DATASETS.register("digits")
def digits(
    split: Literal["train", "test", "all"] = "train",
    image_size: int = 32,
    test_fraction: float = 0.25,
    seed: int = 0,
) -> ImageArrayDataset:
    """scikit-learn's 1,797 hand-written digits (10 classes), upsampled to ``image_size``.

    The 8×8 grey images (values 0–16) are scaled to 0–255, resized bilinearly and repeated to
    three channels. ``train`` / ``test`` are a stratified split fixed by ``seed``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if image_size < 8:
        raise ValueError(f"image_size must be at least 8, got {image_size}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    data = load_digits()
    grey = np.clip(data.images * 16.0, 0, 255).astype(np.uint8)
    images = np.stack(
        [
            np.asarray(Image.fromarray(g).resize((image_size, image_size), Image.BILINEAR))
            for g in grey
        ]
    )
    images = np.repeat(images[..., None], 3, axis=-1)
    labels = data.target.astype(np.int64)
    if split != "all":
        train_idx, test_idx = train_test_split(
            np.arange(len(labels)), test_size=test_fraction, stratify=labels, random_state=seed
        )
        index = train_idx if split == "train" else test_idx
        images, labels = images[index], labels[index]
    return ImageArrayDataset(images, labels, [str(d) for d in range(10)])


def _existing_root(root: str, download: bool) -> str:
    if not download and not Path(root).is_dir():
        raise ConfigError(
            f"data directory '{root}' does not exist; set the dataset's root or download: true"
        )
    return root


def _in_memory(dataset: Any, images: np.ndarray, labels: Any) -> ImageArrayDataset:
    return ImageArrayDataset(images, np.asarray(labels, dtype=np.int64), list(dataset.classes))


@DATASETS.register("cifar10")
def cifar10(
    root: str = "data", split: Literal["train", "test"] = "train", download: bool = True
) -> ImageArrayDataset:
    """CIFAR-10 (50k train / 10k test, 32 px) through torchvision."""
    data = torchvision.datasets.CIFAR10(
        _existing_root(root, download), train=split == "train", download=download
    )
    return _in_memory(data, data.data, data.targets)


@DATASETS.register("cifar100")
def cifar100(
    root: str = "data", split: Literal["train", "test"] = "train", download: bool = True
) -> ImageArrayDataset:
    """CIFAR-100 (50k train / 10k test, 32 px) through torchvision."""
    data = torchvision.datasets.CIFAR100(
        _existing_root(root, download), train=split == "train", download=download
    )
    return _in_memory(data, data.data, data.targets)


@DATASETS.register("stl10")
def stl10(
    root: str = "data",
    split: Literal["train", "test", "unlabeled", "train+unlabeled"] = "unlabeled",
    download: bool = True,
) -> ImageArrayDataset:
    """STL-10 (96 px) through torchvision; ``unlabeled`` (100k) is the pretraining split.

    Unlabeled images carry the label -1.
    """
    data = torchvision.datasets.STL10(
        _existing_root(root, download), split=split, download=download
    )
    # stored channels-first; a transposed view, not a copy
    return _in_memory(data, data.data.transpose(0, 2, 3, 1), data.labels)


@DATASETS.register("image_folder")
def image_folder(
    root: str, split: str | None = "train", max_pixels: int | None = MAX_PIXELS
) -> SkippingImageFolder:
    """An ImageFolder tree ``root/split/class_name/image.jpg`` (ImageNet's layout).

    ``split: null`` reads ``root/class_name/...`` directly. Every image comes out 8-bit RGB;
    unreadable files, and images of more than ``max_pixels`` pixels (default PIL's
    89,478,485; ``null``: no limit), are replaced by the next readable sample, logged and
    counted (``skipped_count``, ``skipped_paths()``: see
    :class:`~swav_plugin.zoo.images.SkippingImageFolder`). Hidden files and folders are
    ignored.
    """
    path = Path(root) / split if split else Path(root)
    if not path.is_dir():
        raise ConfigError(f"image folder '{path}' does not exist; check the dataset's root/split")
    try:
        return SkippingImageFolder(str(path), max_pixels=max_pixels)
    except FileNotFoundError as exc:  # no class folder, or class folders without images
        raise ConfigError(
            f"image folder '{path}': {str(exc).rstrip('.')}; the images must be laid out as "
            f"{path}/CLASS/IMAGE (e.g. ImageNet's train/n01440764/*.JPEG)"
        ) from None

