"""The data set of a dry run: random images, registered under a name that says so.

``swav-train --dry-run`` replaces a recipe's data set with this one (see :mod:`.dry_run`), so
it is a ``dataset`` component like any other; its registered name,
:data:`RANDOM_IMAGES`, marks it as the rehearsal's in ``swav-train --list``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from swav_plugin.host.registry import DATASETS

#: The registered name of :class:`RandomImages`.
RANDOM_IMAGES = "dry_run_random_images"


@DATASETS.register(RANDOM_IMAGES)
class RandomImages(Dataset):
    """``num_samples`` RGB images of uniform random pixels (label 0), reproducible by ``seed``."""

    def __init__(self, num_samples: int = 64, size: int = 224, seed: int = 0) -> None:
        if num_samples < 1 or size < 1:
            raise ValueError(f"num_samples and size must be positive, got {num_samples}, {size}")
        self.num_samples = num_samples
        self.size = size
        self.seed = seed
        self.classes = ["random"]

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        rng = np.random.default_rng((self.seed, index))
        pixels = rng.integers(0, 256, size=(self.size, self.size, 3), dtype=np.uint8)
        return Image.fromarray(pixels), 0
