"""Sinkhorn-Knopp: soft codes with equipartition over the batch (SwAV [0], eq. 5–7).

Given scores ``S = z · cᵀ`` (B samples × K prototypes) the codes are

    Q = Diag(u) · exp(S / ε) · Diag(v),

scaled so that every prototype receives 1/K of the mass and every sample 1/B (eq. 6), then
columns rescaled to sum to one so that each sample's code is a distribution (eq. 7, as in the
official code [1]). Three iterations suffice in practice.

Numerics: the computation runs in float32 outside autocast whatever the input dtype, and the
global maximum of ``S / ε`` is subtracted before the exponential (it cancels in the
normalisation), so fp16 / bf16 scores and small ε cannot overflow — the usual cause of NaN
codes. Under ``torch.distributed`` every sum (and the maximum) is all-reduced, so each rank
gets exactly the rows it would get from one process holding the whole global batch.

- [0]: SwAV, 2020, https://arxiv.org/abs/2006.09882
- [1]: https://github.com/facebookresearch/swav (``distributed_sinkhorn``)
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def _world_size(distributed: bool) -> int:
    if distributed and dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


@torch.no_grad()
def sinkhorn(
    scores: Tensor, epsilon: float = 0.05, iterations: int = 3, distributed: bool = True
) -> Tensor:
    """Soft codes for ``scores`` of shape (B, K); rows of the result sum to one.

    Args:
        scores: Similarities of B samples to K prototypes (any float dtype).
        epsilon: Entropic regularisation ε (smaller: sharper codes).
        iterations: Sinkhorn-Knopp iterations.
        distributed: Balance over the global batch of all ranks when ``torch.distributed`` is
            initialised (the official behaviour); ``False`` balances each rank's batch alone.

    Returns:
        float32 codes of shape (B, K).
    """
    world_size = _world_size(distributed)
    with torch.autocast(scores.device.type, enabled=False):
        logits = scores.float() / epsilon
        top = logits.max()
        if world_size > 1:
            dist.all_reduce(top, op=dist.ReduceOp.MAX)
        q = torch.exp(logits - top).t()  # K × B, as in the paper's notation
        num_prototypes, global_batch = q.shape[0], q.shape[1] * world_size

        total = q.sum()
        if world_size > 1:
            dist.all_reduce(total)
        q /= total
        tiny = torch.finfo(q.dtype).tiny  # a prototype whose row underflowed stays at zero
        for _ in range(iterations):
            rows = q.sum(dim=1, keepdim=True)
            if world_size > 1:
                dist.all_reduce(rows)
            q /= rows.clamp_min(tiny) * num_prototypes
            q /= q.sum(dim=0, keepdim=True) * global_batch
        q *= global_batch
        return q.t()
