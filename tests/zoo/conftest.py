"""Fixtures of the zoo's tests."""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture
def single_thread() -> Iterator[None]:
    """Per-image torchvision loops run on tiny tensors, where waking a second intra-op thread
    costs far more than the work: one thread keeps the tests that use it fast."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
