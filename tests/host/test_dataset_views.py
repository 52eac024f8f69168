"""The views of a data set that the training loader reads."""

import numpy as np
import pytest

from swav_plugin.host.dataset_views import InMemoryImages
from swav_plugin.host.errors import ConfigError
from swav_plugin.zoo.datasets import digits


def test_gpu_augment_batch_equals_the_indexed_samples():
    dataset = digits(image_size=8)
    memory = InMemoryImages(dataset.images, dataset.labels)
    images, labels = memory.__getitems__([5, 0, 9])
    for row, index in enumerate([5, 0, 9]):
        expected = np.asarray(dataset[index][0]).transpose(2, 0, 1)
        assert np.array_equal(images[row].numpy(), expected)
        assert labels[row] == dataset[index][1]


def test_in_memory_images_must_be_uint8_rgb():
    with pytest.raises(ConfigError, match="uint8"):
        InMemoryImages(np.zeros((2, 8, 8, 3), dtype=np.float32), [0, 1])
