"""Sinkhorn-Knopp: soft codes with equipartition over the batch (SwAV [0], eq. 5–7).

Given scores ``S = z · cᵀ`` (B samples × K prototypes) the codes are

    Q = Diag(u) · exp(S / ε) · Diag(v),

scaled so that every prototype receives 1/K of the mass and every sample 1/B (eq. 6), then
rescaled so that each sample's code sums to one (eq. 7, as in the official code [1]). Three
iterations suffice in practice.

The official code rescales the whole B × K matrix twice per iteration (about 30 passes over
it for three iterations). Here only the scaling vectors are iterated, ``u ← 1 / (Eᵀ v)`` and
``v ← 1 / (E u)``, each a matrix-vector product, and the matrix is written once at the end:
about 15 passes, with the same result (the initial 1/ΣQ cancels).

Numerics: float32 outside autocast whatever the input dtype. Each sample's row is
exponentiated relative to its own maximum (a softmax), so nothing overflows for fp16 / bf16
scores or a small ε — the usual cause of NaN codes; the row scales this removes are put back
as the starting sample weights, so the iterations are those of ``exp(S / ε)`` exactly.
Under ``torch.distributed`` the prototype sums and the maximum are all-reduced, so each rank
gets exactly the rows it would get from one process holding the whole global batch.

- [0]: SwAV, 2020, https://arxiv.org/abs/2006.09882
- [1]: https://github.com/facebookresearch/swav (``distributed_sinkhorn``)
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from swav_plugin.zoo.precision import autocast_off


def _world_size(distributed: bool) -> int:
    if distributed and dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


@torch.no_grad()
def sinkhorn(
    scores: Tensor, epsilon: float = 0.05, iterations: int = 3, distributed: bool = True
) -> Tensor:
    """Soft codes for ``scores`` of shape (B, K), or (A, B, K) for A independent problems.

    Args:
        scores: Similarities of B samples to K prototypes (any float dtype). A leading
            dimension batches several problems (e.g. every crop for assignment) in one call.
        epsilon: Entropic regularisation ε (smaller: sharper codes).
        iterations: Sinkhorn-Knopp iterations.
        distributed: Balance over the global batch of all ranks when ``torch.distributed`` is
            initialised (the official behaviour); ``False`` balances each rank's batch alone.

    Returns:
        float32 codes of the shape of ``scores``; each sample's code sums to one.
    """
    if scores.dim() not in (2, 3):
        raise ValueError(f"scores must be (B, K) or (A, B, K), got shape {tuple(scores.shape)}")
    world_size = _world_size(distributed)
    batched = scores if scores.dim() == 3 else scores.unsqueeze(0)
    with autocast_off(scores.device.type):
        logits = batched.float() / epsilon
        row_max = logits.amax(dim=2)
        kernel = torch.softmax(logits, dim=2)  # exp(S / ε), each row divided by its sum Z
        del logits
        # log of each row's sum, log Z + max, from the softmax's largest entry exp(0) / Z
        row_scale = row_max - kernel.amax(dim=2).log()  # (A, B)
        top = row_scale.amax(dim=1, keepdim=True)
        if world_size > 1:
            dist.all_reduce(top, op=dist.ReduceOp.MAX)
        # The rows' sums, relative to the largest, weigh the samples in the first prototype
        # normalisation exactly as exp(S / ε) itself would.
        sample_scale = torch.exp(row_scale - top).unsqueeze(1)  # (A, 1, B)
        num_prototypes, global_batch = kernel.shape[2], kernel.shape[1] * world_size
        tiny = torch.finfo(torch.float32).tiny  # a prototype no sample reaches stays at zero
        for _ in range(iterations):
            mass = torch.bmm(sample_scale, kernel)  # (A, 1, K): each prototype's mass
            if world_size > 1:
                dist.all_reduce(mass)
            # the 1/K and 1/B targets of eq. 6 keep the scales bounded over many iterations
            prototype_scale = (mass.clamp_min(tiny) * num_prototypes).reciprocal().mT  # (A, K, 1)
            row_mass = torch.bmm(kernel, prototype_scale)  # (A, B, 1): each sample's mass
            sample_scale = (row_mass * global_batch).reciprocal().mT
        codes = kernel.mul_(prototype_scale.mT).div_(row_mass)
    return codes if scores.dim() == 3 else codes.squeeze(0)


def sinkhorn_reference(scores: Tensor, epsilon: float = 0.05, iterations: int = 3) -> Tensor:
    """The official algorithm [1] in float64, rescaling the whole matrix: the ground truth that
    the tests and ``benchmarks/sinkhorn.py`` compare :func:`sinkhorn` (and lightly's) with."""
    q = torch.exp(scores.double() / epsilon).t()
    num_prototypes, batch = q.shape
    q /= q.sum()
    for _ in range(iterations):
        q /= q.sum(dim=1, keepdim=True) * num_prototypes
        q /= q.sum(dim=0, keepdim=True) * batch
    return (q * batch).t()
