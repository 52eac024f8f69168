"""The global random generators of a process, as plain values a checkpoint can hold.

The data pipeline never draws from these (:mod:`.sampling` seeds every draw itself), but a
method may (dropout, noise, random masking); saving them with a checkpoint and setting them
when the run resumes makes such a method resume exactly as well. The values are tensors, ints
and lists, so a checkpoint holding them still loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import random
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
