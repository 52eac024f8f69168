import os
import signal
import time

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

from swav_plugin.host.data import DataModule
from swav_plugin.host.dataset_views import InMemoryImages
from swav_plugin.host.errors import ConfigError
from swav_plugin.swav.gpu_multicrop import CropDraws
from swav_plugin.swav.multicrop import MultiCropCollate, MultiCropTransform
from swav_plugin.zoo.datasets import digits
from swav_plugin.zoo.encoded import EncodedBatch
from swav_plugin.zoo.images import SkippingImageFolder

CROPS = [{"size": 8, "count": 2, "scale": (0.5, 1.0)}, {"size": 4, "count": 2,
                                                         "scale": (0.2, 0.5)}]


class PILOnly(Dataset):
    """Images of varying size, no in-memory array: the per-sample ``prepare`` path."""

    def __len__(self):
        return 6

    def __getitem__(self, index):
        return Image.new("RGB", (20 + index, 14), color=(index * 30, 0, 0)), index


def module(dataset, augment, batch_size=4, seed=None):
    return DataModule(dataset, MultiCropTransform(crops=CROPS), MultiCropCollate(),
                      batch_size=batch_size, num_workers=0, pin_memory=False, augment=augment,
                      seed=seed)


def test_gpu_augment_fetches_uint8_batches_from_memory_and_crops_after_transfer():
    data = module(digits(image_size=8), "gpu", batch_size=16)
    loader = data.train_dataloader()
    assert isinstance(loader.dataset, InMemoryImages)
    images, labels, draws = next(iter(loader))
    assert images.dtype == torch.uint8 and images.shape == (16, 3, 8, 8)
    assert isinstance(draws, CropDraws) and draws.rois.shape == (16 * 4, 5)
    groups, same_labels = data.on_after_batch_transfer((images, labels, draws), 0)
    assert same_labels is labels
    cpu_groups, _ = next(iter(module(digits(image_size=8), "cpu", 16).train_dataloader()))
    assert [g.shape for g in groups] == [g.shape for g in cpu_groups]


def test_gpu_augment_prepares_images_of_any_size_per_sample():
    data = module(PILOnly(), "gpu", batch_size=3)
    loader = data.train_dataloader()
    indices = [draw.index for draw in list(loader.sampler)[:3]]
    images, labels, draws = next(iter(loader))
    # shorter side 14 → load 8 × 8/7 = 9, longer 20 + index → its share of 9, all kept
    widths = [round((20 + i) * 9 / 14) for i in indices]
    assert images.dtype == torch.uint8 and images.shape == (3, 3, 10, max(widths) + 1)
    image = draws.rois[:, 0].long()
    assert (draws.rois[:, 3] <= torch.tensor(widths)[image]).all()
    assert (draws.rois[:, 4] <= 9).all()


class Decoded(Dataset):
    """A data set's samples without its ``encoded()``: decoded and prepared in the workers."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return self.dataset[index]


def jpeg_folder(root, sizes=((30, 40), (40, 30), (35, 35), (24, 48), (30, 40), (50, 28))):
    """An image folder of JPEGs of mixed (height, width), two classes."""
    rng = np.random.default_rng(0)
    for k, (height, width) in enumerate(sizes):
        (root / f"c{k % 2}").mkdir(parents=True, exist_ok=True)
        coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
        image.save(root / f"c{k % 2}" / f"{k}.jpg", quality=95)
    return SkippingImageFolder(str(root))


def test_gpu_augment_decodes_an_image_folder_in_the_training_process(tmp_path):
    folder = jpeg_folder(tmp_path)
    data = module(folder, "gpu", batch_size=4, seed=7)
    prepared = module(Decoded(folder), "gpu", batch_size=4, seed=7)
    files, labels, draws = next(iter(data.train_dataloader()))
    assert isinstance(files, EncodedBatch)  # only the files' bytes left the worker
    images, same_labels, same_draws = data.on_before_batch_transfer((files, labels, draws), 0)
    assert same_labels is labels and same_draws is draws and images.dtype == torch.uint8
    # the same batch decoded and prepared in the workers: the same samples, sizes and draws,
    # the pixels within the rounding of two bilinear resizes (torch's and PIL's)
    expected, expected_labels, expected_draws = next(iter(prepared.train_dataloader()))
    assert torch.equal(labels, expected_labels)
    assert torch.equal(draws.rois, expected_draws.rois)
    assert torch.equal(draws.params, expected_draws.params)
    assert images.shape == expected.shape
    assert (images.int() - expected.int()).abs().max() <= 1
    groups, _ = data.on_after_batch_transfer((images, labels, draws), 0)
    assert [tuple(g.shape) for g in groups] == [(8, 3, 8, 8), (8, 3, 4, 4)]


def test_cpu_augment_ships_uint8_crops_and_normalises_them_after_transfer():
    data = module(digits(image_size=8), "cpu")
    assert data.batch_augment is None
    groups, labels = next(iter(data.train_dataloader()))
    assert all(g.dtype == torch.uint8 for g in groups) and labels.dtype == torch.long
    normalised, same_labels = data.on_after_batch_transfer((groups, labels), 0)
    assert same_labels is labels
    mean = torch.tensor(data.transform.mean).view(1, 3, 1, 1)
    std = torch.tensor(data.transform.std).view(1, 3, 1, 1)
    for g, n in zip(groups, normalised, strict=True):
        torch.testing.assert_close(n, (g.float() / 255 - mean) / std)


def test_cpu_augment_leaves_batches_of_a_transform_without_device_normalisation():
    data = DataModule(digits(image_size=8), lambda image: image, batch_size=4, num_workers=0)
    batch = (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.zeros(2))
    assert data.on_after_batch_transfer(batch, 0) is batch


def test_gpu_augment_needs_a_batched_transform():
    with pytest.raises(ConfigError, match="data.augment: gpu needs a transform with a batched"):
        DataModule(digits(image_size=8), lambda image: image, augment="gpu")


def test_unknown_augment_place():
    with pytest.raises(ConfigError, match="'cpu' or 'gpu', got 'tpu'"):
        module(digits(image_size=8), "tpu")


def test_workers_outlive_the_stop_signals_a_scheduler_sends_the_whole_job():
    # the main process stops them itself after its checkpoint; a worker killed by the signal
    # would abort the run while the checkpoint is being written
    data = DataModule(digits(image_size=8), MultiCropTransform(crops=CROPS), MultiCropCollate(),
                      batch_size=4, num_workers=1, pin_memory=False)
    loader = data.train_dataloader()
    batches = iter(loader)
    next(batches)
    workers = loader._iterator._workers  # persistent workers: the loader keeps its iterator
    for worker in workers:
        os.kill(worker.pid, signal.SIGTERM)
        os.kill(worker.pid, signal.SIGUSR1)
    time.sleep(0.5)
    assert all(worker.is_alive() for worker in workers)
    for _ in range(3):
        next(batches)
