"""Regions that compute in float32 whatever the surrounding autocast.

Mixed precision speeds up the backbone, but some numerics need the full mantissa: SwAV's
prototype scores feed ``exp(S / ε)`` with ε = 0.05, where a bf16 score (8 bits of mantissa)
is off by up to 0.4 % before the exponential multiplies the error by 1 / ε.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def autocast_off(device_type: str) -> Iterator[None]:
    """Disable autocast for ``device_type`` inside the block (a no-op where it has none)."""
    if torch.amp.is_autocast_available(device_type):
        with torch.autocast(device_type, enabled=False):
            yield
    else:
        yield
