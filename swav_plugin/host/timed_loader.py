"""A DataLoader that clocks how long training waits for its batches.

The clock is the loader's share of the data wait that
:class:`~swav_plugin.host.data_wait.DataWaitMonitor` logs; the data module adds the share of
the batch's work on the training device.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader


class TimedDataLoader(DataLoader):
    """A DataLoader whose iterators add the time they spend producing batches to
    ``clock[0]``: the time training waits for the loader (workers or main process)."""

    def __init__(self, *args: Any, clock: list[float], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clock = clock  # an argument, so that a loader Lightning rebuilds keeps it

    def __iter__(self) -> Iterator[Any]:
        return _TimedIterator(super().__iter__(), self.clock)


class _TimedIterator:
    """Adds the time each ``next`` of ``iterator`` takes to ``clock[0]``."""

    def __init__(self, iterator: Iterator[Any], clock: list[float]) -> None:
        self._iterator, self._clock = iterator, clock

    def __iter__(self) -> _TimedIterator:
        return self

    def __next__(self) -> Any:
        start = time.perf_counter()
        try:
            return next(self._iterator)
        finally:
            self._clock[0] += time.perf_counter() - start

    def __len__(self) -> int:
        return len(self._iterator)
