"""The one-line error helpers every command-line tool shares."""

import errno

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from swav_plugin.host.errors import ConfigError, RunError, one_line, storage_errors


class Refusing(Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, index):
        raise ConfigError("image folder 'x': none of its 2 image files can be read; see the logs")


@pytest.mark.parametrize("workers", [0, 1])
def test_an_error_from_a_dataloader_worker_is_its_own_message_on_one_line(workers):
    with pytest.raises(ConfigError) as err:
        next(iter(DataLoader(Refusing(), num_workers=workers, generator=torch.Generator())))
    assert one_line(err.value) == ("image folder 'x': none of its 2 image files can be read; "
                                   "see the logs")


def test_a_many_line_message_is_joined():
    assert one_line(ValueError("first\n  second\tthird ")) == "first second third"


def test_storage_errors_name_the_path_the_cause_and_the_fix():
    full = r"^cannot write 'out/a\.json': the disk is full; free space there or choose another"
    with (pytest.raises(RunError, match=full + r" directory \(kept\)$"),
          storage_errors("cannot write", "out/a.json", " (kept)")):
        raise OSError(errno.ENOSPC, "No space left on device")
    with (pytest.raises(RunError, match=r"^cannot read 'b': permission denied"),
          storage_errors("cannot read")):
        raise PermissionError(errno.EACCES, "Permission denied", "b")
