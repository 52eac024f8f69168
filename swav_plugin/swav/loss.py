"""The swapped-prediction loss of SwAV [0] (eq. 8) over multi-crop views.

For each crop ``s`` in ``crops_for_assign`` the codes ``q_s`` come from Sinkhorn-Knopp on that
crop's scores (preceded by the queue's scores when a queue is in use, of which only the batch
rows are kept). Every other crop ``t`` predicts them with ``p_t = softmax(z_t · cᵀ / τ)``:

    L = 1/|A| Σ_{s∈A} 1/(V−1) Σ_{t≠s} −1/B Σ_b Σ_k q_s[b,k] log p_t[b,k],

the averaging of the official code [1]. With several prototype sets (multi-head), the losses
of the heads are averaged. The codes, the softmax and the contraction run in float32 with
autocast off (an einsum under bf16 autocast would round the cross-entropies to 8 bits).

- [0]: SwAV, 2020, https://arxiv.org/abs/2006.09882
- [1]: https://github.com/facebookresearch/swav (``main_swav.py``)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from swav_plugin.host.registry import LOSSES
from swav_plugin.swav.sinkhorn import sinkhorn
from swav_plugin.zoo.precision import autocast_off


class SwAVLossOutput(NamedTuple):
    """The loss, each head's loss, and per head the codes of the crops for assignment."""

    loss: Tensor
    head_losses: list[Tensor]
    codes: list[Tensor]  # per head: (A, B, K)


@LOSSES.register("swav_loss")
class SwAVLoss(nn.Module):
    """Swapped prediction with Sinkhorn codes.

    Args:
        temperature: Softmax temperature τ of the predictions.
        crops_for_assign: Indices of the crops whose codes are computed (the global crops).
        epsilon: Sinkhorn's ε.
        sinkhorn_iterations: Sinkhorn-Knopp iterations.
        distributed_sinkhorn: Balance codes over the global batch under DDP.
    """

    def __init__(
        self,
        temperature: float = 0.1,
        crops_for_assign: Sequence[int] = (0, 1),
        epsilon: float = 0.05,
        sinkhorn_iterations: int = 3,
        distributed_sinkhorn: bool = True,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if epsilon <= 0:
            raise ValueError(f"epsilon must be positive, got {epsilon}")
        if sinkhorn_iterations < 1:
            raise ValueError(f"sinkhorn_iterations must be at least 1, got {sinkhorn_iterations}")
        if not crops_for_assign or min(crops_for_assign) < 0:
            raise ValueError(
                f"crops_for_assign must list crop indices >= 0, got {list(crops_for_assign)}"
            )
        if len(set(crops_for_assign)) != len(crops_for_assign):
            raise ValueError(f"crops_for_assign has repeated crops: {list(crops_for_assign)}")
        self.temperature = temperature
        self.crops_for_assign = tuple(crops_for_assign)
        first, count = self.crops_for_assign[0], len(self.crops_for_assign)
        self._contiguous = self.crops_for_assign == tuple(range(first, first + count))
        self.epsilon = epsilon
        self.sinkhorn_iterations = sinkhorn_iterations
        self.distributed_sinkhorn = distributed_sinkhorn

    def check_num_crops(self, num_crops: int) -> None:
        """Raise if a crop for assignment does not exist or no crop is left to predict."""
        if max(self.crops_for_assign) >= num_crops:
            raise ValueError(
                f"crops_for_assign={list(self.crops_for_assign)} but there are only {num_crops} "
                f"crops (indices 0..{num_crops - 1}); fix loss.crops_for_assign"
            )
        if num_crops < 2:
            raise ValueError("SwAV needs at least 2 crops per image; add crops to the transform")

    def assigned(self, crops: Tensor) -> Tensor:
        """The crops for assignment of ``crops`` (V, B, ...) as (A, B, ...).

        Selected by slicing or stacking, never with an index tensor: building one from a
        Python list is a host-to-device copy that would stall the step on a GPU.
        """
        if self._contiguous:
            first = self.crops_for_assign[0]
            return crops[first : first + len(self.crops_for_assign)]
        return torch.stack([crops[c] for c in self.crops_for_assign])

    def codes(self, scores: Tensor, queue_scores: Tensor | None = None) -> Tensor:
        """Sinkhorn codes of the assigned crops' ``scores`` (A, B, K), in one batched call.

        With ``queue_scores`` (A, L, K) each crop is balanced together with its queue and
        only the batch's rows are returned.
        """
        stacked = scores if queue_scores is None else torch.cat((queue_scores, scores), dim=1)
        q = sinkhorn(stacked, self.epsilon, self.sinkhorn_iterations, self.distributed_sinkhorn)
        return q[:, -scores.shape[1] :]

    def forward(
        self,
        scores: Sequence[Tensor],
        batch_size: int,
        queue_scores: Sequence[Tensor | None] | None = None,
    ) -> SwAVLossOutput:
        """Loss of one step.

        Args:
            scores: Per head, the scores of all crops stacked crop-major: (V·B, K).
            batch_size: B, the number of images.
            queue_scores: Per head, the queue's scores for each crop for assignment (A, L, K),
                or ``None`` when the queue is not in use.
        """
        num_crops = scores[0].shape[0] // batch_size
        self.check_num_crops(num_crops)
        with autocast_off(scores[0].device.type):
            return self._loss(scores, batch_size, num_crops, queue_scores)

    def _loss(
        self,
        scores: Sequence[Tensor],
        batch_size: int,
        num_crops: int,
        queue_scores: Sequence[Tensor | None] | None,
    ) -> SwAVLossOutput:
        num_assigned = len(self.crops_for_assign)
        head_losses, head_codes = [], []
        for head, head_scores in enumerate(scores):
            crops = head_scores.float().view(num_crops, batch_size, -1)
            queued = queue_scores[head] if queue_scores is not None else None
            q = self.codes(self.assigned(crops).detach(), queued)  # (A, B, K)
            log_p = F.log_softmax(crops / self.temperature, dim=-1)  # (V, B, K)
            # cross[a, v] = Σ_b Σ_k q_a[b, k] log p_v[b, k], every pair in one contraction
            cross = torch.einsum("abk,vbk->av", q, log_p)
            own = sum(cross[a, crop] for a, crop in enumerate(self.crops_for_assign))
            # −Σ_k q log p, averaged over images, predicting crops and crops for assignment
            loss = (own - cross.sum()) / (batch_size * (num_crops - 1) * num_assigned)
            head_losses.append(loss)
            head_codes.append(q)
        return SwAVLossOutput(torch.stack(head_losses).mean(), head_losses, head_codes)
