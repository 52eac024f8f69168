"""Batch norm synchronised within groups of ranks (the official 64-GPU runs' grouping)."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from swav_plugin.host.build import build
from swav_plugin.host.errors import ConfigError
from swav_plugin.host.resolve import resolve
from swav_plugin.host.sync_batchnorm import GroupedSyncBatchNorm, consecutive_groups


def test_groups_are_consecutive_blocks_of_ranks():
    assert consecutive_groups(8, 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert consecutive_groups(64, 8)[7] == list(range(56, 64))
    with pytest.raises(ValueError, match="must divide the world size 6"):
        consecutive_groups(6, 4)


def _groups_of_every_rank(rank: int, world: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.BatchNorm1d(4))
    converted = GroupedSyncBatchNorm(2).apply(model)
    groups = [dist.get_process_group_ranks(m.process_group)
              for m in converted.modules() if isinstance(m, nn.SyncBatchNorm)]
    # the group communicates: a sum over it sees only its own ranks
    value = torch.tensor([float(rank)])
    dist.all_reduce(value, group=converted[1].process_group)
    queue.put((rank, groups, value.item()))
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_each_rank_synchronises_with_its_own_group_only():
    # torch runs SyncBatchNorm's forward only on accelerators: here the groups are checked
    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    mp.start_processes(_groups_of_every_rank, args=(4, free_port(), queue), nprocs=4,
                       start_method="spawn")
    results = sorted(queue.get() for _ in range(4))
    assert results == [(0, [[0, 1], [0, 1]], 1.0), (1, [[0, 1], [0, 1]], 1.0),
                       (2, [[2, 3], [2, 3]], 5.0), (3, [[2, 3], [2, 3]], 5.0)]


def test_recipe_key_installs_the_grouped_plugin(tiny_recipe):
    tiny_recipe["trainer"].update(strategy="ddp", sync_batchnorm=True,
                                  sync_batchnorm_group_size=1)
    resolved = resolve(tiny_recipe)
    assert resolved["trainer"]["sync_batchnorm_group_size"] == 1
    _, _, trainer = build(resolved)
    layer_sync = trainer.strategy._layer_sync
    assert isinstance(layer_sync, GroupedSyncBatchNorm) and layer_sync.group_size == 1


@pytest.mark.parametrize(("trainer", "message"), [
    ({"sync_batchnorm_group_size": 2}, "set trainer.sync_batchnorm: true, or remove it"),
    ({"sync_batchnorm": True, "sync_batchnorm_group_size": 0}, "expected a positive number"),
    ({"sync_batchnorm": True, "sync_batchnorm_group_size": 3, "devices": 4},
     "3 does not divide the launch's 4 ranks"),
])
def test_bad_group_sizes_are_refused_in_one_line(tiny_recipe, trainer, message):
    tiny_recipe["trainer"].update(trainer)
    with pytest.raises(ConfigError, match=message):
        resolve(tiny_recipe)
