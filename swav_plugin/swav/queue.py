"""The Sinkhorn queue of SwAV [0] for small batches.

Per crop for assignment, a FIFO of the last ``length`` (global; each rank keeps
``length // world_size``) *embeddings*. Their scores are recomputed against the current
prototypes at every step and put in front of the batch's scores before Sinkhorn-Knopp, so that
the equipartition is taken over more samples than one batch holds; only the batch's codes are
used. The queue is filled from ``start_epoch`` on, is used only once full (and then stays in
use, across epoch boundaries), and receives the batch's embeddings after the codes were
computed. It is a buffer of the module, so it moves with the model to its device; under DDP
it is excluded from DDP's buffer broadcast (each rank keeps its own). A checkpoint holds the
queues of all ranks (:func:`gather_rank_queues`, one row per rank) and each rank takes its own
back on restore (:func:`rank_queue_state`).

- [0]: SwAV, 2020, https://arxiv.org/abs/2006.09882 (official bs-256 recipe: 3840, epoch 15)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from swav_plugin.host.registry import QUEUES


@QUEUES.register("swav_queue")
class SwAVQueue(nn.Module):
    """FIFO of past embeddings for Sinkhorn-Knopp.

    Args:
        length: Total queue length over all ranks; 0 disables the queue.
        start_epoch: First epoch (0-based) in which the queue is filled.
    """

    def __init__(self, length: int = 3840, start_epoch: int = 15) -> None:
        super().__init__()
        if length < 0:
            raise ValueError(f"length must be 0 (no queue) or positive, got {length}")
        if start_epoch < 0:
            raise ValueError(f"start_epoch must be 0 or more, got {start_epoch}")
        self.length = length
        self.start_epoch = start_epoch
        self.register_buffer("embeddings", torch.zeros(0, 0, 0))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))
        self._filled = 0  # host copy of ``filled``: no device sync on the hot path

    def allocate(self, num_crops: int, local_length: int, dim: int) -> None:
        """Create the storage of ``num_crops`` × ``local_length`` × ``dim`` (kept if it fits)."""
        shape = (num_crops, local_length, dim)
        if tuple(self.embeddings.shape) != shape:
            self.embeddings = torch.zeros(shape, device=self.embeddings.device)
            self.filled.zero_()
            self._filled = 0

    @property
    def local_length(self) -> int:
        return self.embeddings.shape[1]

    def is_filling(self, epoch: int) -> bool:
        """Whether the queue takes in embeddings in ``epoch``."""
        return self.local_length > 0 and epoch >= self.start_epoch

    def is_full(self) -> bool:
        return self.local_length > 0 and self._filled >= self.local_length

    @torch.no_grad()
    def push(self, embeddings: Tensor) -> None:
        """Insert a batch's embeddings (A, B, D) at the front, dropping the oldest."""
        batch = embeddings.shape[1]
        if batch > self.local_length:
            raise ValueError(
                f"a batch of {batch} does not fit a queue of {self.local_length} per rank; "
                "make queue.length at least the global batch size"
            )
        self.embeddings[:, batch:] = self.embeddings[:, :-batch].clone()
        self.embeddings[:, :batch] = embeddings.detach().to(self.embeddings.dtype)
        self._filled = min(self._filled + batch, self.local_length)
        self.filled.fill_(self._filled)

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        stored = state_dict.get(prefix + "embeddings")
        if stored is not None and stored.shape != self.embeddings.shape:
            self.embeddings = torch.empty_like(stored, device=self.embeddings.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._filled = int(self.filled)


def exclude_from_ddp_broadcast(owner: nn.Module, name: str) -> None:
    """Keep DDP from overwriting the buffers of the queue ``owner.<name>`` with rank 0's.

    DDP broadcasts rank 0's buffers at wrap time and before every forward; the queues are
    per rank (each holds its own rank's embeddings), so DDP must leave them alone.
    """
    buffers = owner.get_submodule(name).named_buffers()
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
        owner, [f"{name}.{buffer}" for buffer, _ in buffers]
    )


def gather_rank_queues(
    queue: SwAVQueue, all_gather: Callable[[Tensor], Tensor] | None
) -> dict[str, Tensor]:
    """The queues of every rank, stacked one row per rank, on the host.

    Args:
        queue: This rank's queue.
        all_gather: Stacks a tensor of every rank along a new first dimension (every rank
            must call it); ``None`` in a single process.

    Returns:
        ``embeddings`` (R, A, L, D) and ``filled`` (R,).
    """
    queues = {"embeddings": queue.embeddings, "filled": queue.filled}
    if all_gather is not None:
        queues = {k: all_gather(v) for k, v in queues.items()}
    else:
        queues = {k: v.unsqueeze(0) for k, v in queues.items()}
    return {k: v.detach().cpu() for k, v in queues.items()}


def rank_queue_state(queues: Mapping[str, Tensor], rank: int) -> dict[str, Tensor]:
    """One rank's queue buffers out of :func:`gather_rank_queues`' rows.

    A rank beyond the saved ones (the run grew since) gets an empty queue of the same shape.
    """
    if rank < len(queues["filled"]):
        return {"embeddings": queues["embeddings"][rank], "filled": queues["filled"][rank]}
    return {"embeddings": torch.zeros_like(queues["embeddings"][0]),
            "filled": torch.zeros_like(queues["filled"][0])}
