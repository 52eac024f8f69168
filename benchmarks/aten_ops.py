"""Count the ATen operations a piece of code runs: on a GPU, each is (at least) one kernel
launch, and launching costs the host a few microseconds whatever the tensor size, so a step
made of many small operations is bound by the host rather than by the device."""

from __future__ import annotations

import collections
from typing import Any

from torch.utils._python_dispatch import TorchDispatchMode


class AtenOps(TorchDispatchMode):
    """Counts, by name, the ATen operations dispatched inside the ``with`` block (after
    autograd and the decomposition of composite operations: what the device backend runs)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.counts[str(func.overloadpacket.__name__)] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.counts.values())
