"""The swapped-prediction loss of SwAV [0] (eq. 8) over multi-crop views.

For each crop ``s`` in ``crops_for_assign`` the codes ``q_s`` come from Sinkhorn-Knopp on that
crop's scores (preceded by the queue's scores when a queue is in use, of which only the batch
rows are kept). Every other crop ``t`` predicts them with ``p_t = softmax(z_t · cᵀ / τ)``:

    L = 1/|A| Σ_{s∈A} 1/(V−1) Σ_{t≠s} −1/B Σ_b Σ_k q_s[b,k] log p_t[b,k],

the averaging of the official code [1]. With several prototype sets (multi-head), the losses
of the heads are averaged.

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

    def codes(self, scores: Tensor, queue_scores: Tensor | None = None) -> Tensor:
        """Sinkhorn codes of one crop's ``scores`` (B, K), balanced together with the queue."""
        stacked = scores if queue_scores is None else torch.cat((queue_scores, scores))
        q = sinkhorn(stacked, self.epsilon, self.sinkhorn_iterations, self.distributed_sinkhorn)
        return q[-scores.shape[0] :]

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
        head_losses, head_codes = [], []
        for head, head_scores in enumerate(scores):
            crops = head_scores.view(num_crops, batch_size, -1)
            log_p = F.log_softmax(crops.float() / self.temperature, dim=-1)
            queued = queue_scores[head] if queue_scores is not None else None
            loss = head_scores.new_zeros((), dtype=torch.float32)
            codes = []
            for i, crop in enumerate(self.crops_for_assign):
                q = self.codes(crops[crop].detach(), None if queued is None else queued[i])
                others = [v for v in range(num_crops) if v != crop]
                # −Σ_k q log p, averaged over images and over the predicting crops
                loss = loss - (q.unsqueeze(0) * log_p[others]).sum(-1).mean()
                codes.append(q)
            head_losses.append(loss / len(self.crops_for_assign))
            head_codes.append(torch.stack(codes))
        return SwAVLossOutput(torch.stack(head_losses).mean(), head_losses, head_codes)
