"""Step metrics of SwAV's assignments [0] and the watch for collapse.

Collapse shows in the network's own assignments, not in the codes (Sinkhorn-Knopp forces
those to be balanced), so the usage of the prototypes is measured on the predictions
``softmax(z · cᵀ / τ)`` of eq. 2 for the crops for assignment, and on their argmax. A loss
over ln K stuck at 1.0 is the classic sign of collapse.

- [0]: SwAV, 2020, https://arxiv.org/abs/2006.09882
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor

from swav_plugin.swav.loss import SwAVLoss


def assigned_scores(scores: Tensor, batch_size: int, loss: SwAVLoss) -> Tensor:
    """One head's scores of the crops for assignment, detached, in float32.

    Args:
        scores: The head's scores of all crops stacked crop-major: (V·B, K).
        batch_size: B, the number of images.
        loss: The loss, which selects the crops for assignment.

    Returns:
        (A·B, K) scores, crop-major.
    """
    scores = scores.detach()
    num_crops = scores.shape[0] // batch_size
    return loss.assigned(scores.view(num_crops, batch_size, -1)).flatten(0, 1).float()


def usage_entropy(assigned: Tensor, temperature: float) -> Tensor:
    """Entropy of the mean prediction (eq. 2's p at temperature τ) over the rows of
    ``assigned`` (N, K), divided by ln K: 1 when all prototypes are used alike, 0 when one
    takes every crop."""
    mean_p = torch.softmax(assigned / temperature, dim=1).mean(0)
    return -(mean_p * mean_p.clamp_min(1e-12).log()).sum() / math.log(assigned.shape[1])


def loss_over_ln_k(head_losses: Sequence[Tensor], num_prototypes: Sequence[int]) -> Tensor:
    """Each head's loss over ln K, the loss of uniform predictions, averaged over the heads."""
    normalized = sum(h.detach() / math.log(k)
                     for h, k in zip(head_losses, num_prototypes, strict=True))
    return normalized / len(num_prototypes)


def prototype_counts(assigned: Tensor) -> Tensor:
    """How many rows of ``assigned`` (N, K) score highest with each of the K prototypes."""
    counts = torch.zeros(assigned.shape[1], device=assigned.device)
    counts.index_add_(0, assigned.argmax(1), torch.ones_like(assigned[:, 0]))
    return counts


class AssignmentMetrics:
    """The prototypes' usage at logging steps, and a warning when few take the crops for long.

    Args:
        collapse_prototypes: How many of the most used prototypes the share counts.
        collapse_share: The share of the assigned crops that counts as collapsed.
        collapse_patience_steps: Steps in a row of collapsed logging steps before a warning.
    """

    def __init__(
        self,
        collapse_prototypes: int = 3,
        collapse_share: float = 0.9,
        collapse_patience_steps: int = 200,
    ) -> None:
        for name, value in (("collapse_prototypes", collapse_prototypes),
                            ("collapse_patience_steps", collapse_patience_steps)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if not 0 < collapse_share <= 1:
            raise ValueError(f"collapse_share must be in (0, 1], got {collapse_share}")
        self.collapse_prototypes = collapse_prototypes
        self.collapse_share = collapse_share
        self.collapse_patience_steps = collapse_patience_steps
        # kept on the device, so that counting reads nothing back
        self._collapsed_steps: Tensor | None = None

    def usage(self, assigned: Tensor, every: int) -> dict[str, Tensor]:
        """The usage metrics of a logging step, counted towards the collapse watch.

        Args:
            assigned: (N, K) scores of the crops for assignment (:func:`assigned_scores`).
            every: Steps since the previous logging step.

        Returns:
            ``train/prototypes_used`` (prototypes that some crop scores highest with) and
            ``train/top_prototypes_share`` (the crops the most used ones take).
        """
        counts = prototype_counts(assigned)
        top = counts.topk(min(self.collapse_prototypes, assigned.shape[1])).values.sum()
        top_share = top / counts.sum()
        collapsed = (top_share >= self.collapse_share).long()
        if self._collapsed_steps is None:
            self._collapsed_steps = torch.zeros((), dtype=torch.long, device=top_share.device)
        self._collapsed_steps.add_(every).mul_(collapsed)
        return {
            "train/prototypes_used": (counts > 0).sum().float(),  # torch.unique reads the device
            "train/top_prototypes_share": top_share,
        }

    def warn_if_collapsed(self, global_step: int, every: int) -> None:
        """Warn, on the first logging step of every ``collapse_patience_steps``, if the
        steps counted as collapsed in a row reach them; reads the count then only."""
        patience = self.collapse_patience_steps
        if self._collapsed_steps is None or (global_step + 1) % patience >= every:
            return
        steps = int(self._collapsed_steps)  # a logging step: its metrics are read anyway
        if steps >= patience:
            rank_zero_warn(
                f"SwAV may be collapsing: for the last {steps} steps, {self.collapse_prototypes} "
                f"prototypes took at least {self.collapse_share:.0%} of the assigned crops at "
                "every logged step. Usual remedies: a lower method.lr, a larger "
                "method.loss.epsilon, more method.head.freeze_prototypes_iters, or a queue "
                "(method.queue) when the batch is small"
            )
            self._collapsed_steps.zero_()
