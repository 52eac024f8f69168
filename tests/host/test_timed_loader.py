"""The loader's clock of the data wait."""

import time

from torch.utils.data import Dataset

from swav_plugin.host.timed_loader import TimedDataLoader


class Slow(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        time.sleep(0.02)
        return index


def test_clock_adds_the_time_spent_producing_batches():
    clock = [1.0]
    loader = TimedDataLoader(Slow(), batch_size=2, clock=clock)
    batches = iter(loader)
    assert len(batches) == 2
    assert [b.tolist() for b in batches] == [[0, 1], [2, 3]]
    assert clock[0] >= 1.0 + 4 * 0.02
