"""Batch norm synchronised within groups of ranks, as the official SwAV runs on 64 GPUs do.

``main_swav.py --sync_bn apex`` with ``syncbn_process_group_size 8`` averages batch-norm
statistics over the 8 GPUs of each node rather than over all 64; Lightning's
``sync_batchnorm`` spans the whole world. :class:`GroupedSyncBatchNorm` is Lightning's
``TorchSyncBatchNorm`` plugin with that process group, as its documentation suggests
(``apply`` overridden); the recipe key is ``trainer.sync_batchnorm_group_size``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from pytorch_lightning.plugins.layer_sync import TorchSyncBatchNorm
from torch import nn


def consecutive_groups(world_size: int, group_size: int) -> list[list[int]]:
    """Ranks ``0..world_size-1`` in consecutive blocks of ``group_size`` (apex's grouping)."""
    if group_size < 1 or world_size % group_size:
        raise ValueError(
            f"sync_batchnorm_group_size {group_size} must divide the world size {world_size}"
        )
    return [list(range(start, start + group_size)) for start in range(0, world_size, group_size)]


class GroupedSyncBatchNorm(TorchSyncBatchNorm):
    """Convert batch norms to ``SyncBatchNorm`` over this rank's group of ``group_size``."""

    def __init__(self, group_size: int) -> None:
        if group_size < 1:
            raise ValueError(f"group_size must be at least 1, got {group_size}")
        self.group_size = group_size

    def apply(self, model: nn.Module) -> nn.Module:
        if not (dist.is_available() and dist.is_initialized()):
            return super().apply(model)
        rank, world = dist.get_rank(), dist.get_world_size()
        own = None
        for ranks in consecutive_groups(world, self.group_size):
            group = dist.new_group(ranks)  # every rank creates every group, in the same order
            if rank in ranks:
                own = group
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model, process_group=own)
