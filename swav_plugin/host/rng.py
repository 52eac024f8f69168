"""The process's global random generators: saved, set and seeded here and nowhere else.

Every component of this package that draws takes an explicit ``torch.Generator`` (the
sampler and per-sample seeds of :mod:`.sampling`, the batch augmentation, the online probe,
the kNN monitor's bank). The global generators remain for what cannot take one:
torchvision's per-image transforms and module initialisation, run inside :func:`seeded`, and
a method's own draws (dropout, noise), whose states a checkpoint saves (:func:`rng_states`)
and a resume sets again (:func:`set_rng_states`). The saved values are tensors, ints and
lists, so a checkpoint holding them still loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch


def rng_states() -> dict[str, Any]:
    """The states of torch's CPU and CUDA generators, NumPy's and Python's."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [name, keys.tolist(), pos, has_gauss, cached],
        "python": random.getstate(),
    }


def set_rng_states(states: dict[str, Any]) -> None:
    """Set the generators to ``states`` (from :func:`rng_states`; CUDA only if the counts match)."""
    torch.set_rng_state(states["torch"])
    cuda = states["cuda"]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


@contextmanager
def seeded(seed: int, restore: bool = True) -> Iterator[None]:
    """The global CPU generators (torch, NumPy, Python) seeded by ``seed`` inside the block;
    with ``restore``, set back to their earlier states after it. CUDA's are not touched."""
    saved = (torch.get_rng_state(), np.random.get_state(), random.getstate()) if restore else None
    torch.default_generator.manual_seed(seed)  # torch.manual_seed would reseed CUDA too
    np.random.seed(seed % 2**32)
    random.seed(seed)
    try:
        yield
    finally:
        if saved is not None:
            torch.set_rng_state(saved[0])
            np.random.set_state(saved[1])
            random.setstate(saved[2])
