"""SwAV's head: projection MLP, L2 normalisation and prototypes [0].

``z = normalize(g(h))`` with ``g`` = Linear → BN → ReLU → Linear (or one Linear when
``hidden_dim`` is 0), and scores ``z · cᵀ`` against K prototypes held as the weight of a
bias-free linear layer (one per prototype set when several are given: multi-head). The
prototypes are re-normalised to unit norm before every step (:meth:`normalize_prototypes`)
and their gradients are dropped for the first ``freeze_prototypes_iters`` optimizer steps
(:meth:`drop_prototype_grads`), which the official code needs to avoid early collapse [1].
The projection runs in the surrounding precision (e.g. bf16 autocast); the normalisation and
the scores are computed in float32 with autocast off, so that Sinkhorn-Knopp and the loss get
scores with a full mantissa.

- [0]: SwAV, 2020, https://arxiv.org/abs/2006.09882
- [1]: https://github.com/facebookresearch/swav (``freeze_prototypes_niters``, default 313)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from swav_plugin.host.registry import HEADS
from swav_plugin.zoo.precision import autocast_off


@HEADS.register("swav_head")
class SwAVHead(nn.Module):
    """Projection to the unit sphere followed by one or several sets of prototypes.

    Args:
        input_dim: Width of the backbone's features (512 for ResNet-18, 2048 for ResNet-50).
            Required here; a method recipe may leave it out, and :class:`~swav_plugin.swav.
            module.SwAV` derives it from its backbone's ``num_features``.
        hidden_dim: Hidden width of the projection MLP; 0 for a linear projection.
        output_dim: Embedding dimension D.
        num_prototypes: K, or a list of K for several prototype sets.
        freeze_prototypes_iters: Optimizer steps during which prototypes receive no update.
    """

    def __init__(
        self,
        input_dim: int | None = None,
        hidden_dim: int = 2048,
        output_dim: int = 128,
        num_prototypes: int | list[int] = 3000,
        freeze_prototypes_iters: int = 313,
    ) -> None:
        super().__init__()
        counts = [num_prototypes] if isinstance(num_prototypes, int) else list(num_prototypes)
        if input_dim is None:
            raise ValueError(
                "input_dim is required: the width of the backbone's features (in a method "
                "recipe it may be left out and is taken from the backbone)"
            )
        for name, value in (("input_dim", input_dim), ("output_dim", output_dim)):
            if value < 1:
                raise ValueError(f"{name} must be positive, got {value}")
        if hidden_dim < 0:
            raise ValueError(f"hidden_dim must be 0 (linear) or positive, got {hidden_dim}")
        if not counts or min(counts) < 1:
            raise ValueError(f"num_prototypes must be positive, got {num_prototypes}")
        if freeze_prototypes_iters < 0:
            raise ValueError(
                f"freeze_prototypes_iters must be 0 or more, got {freeze_prototypes_iters}"
            )
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.num_prototypes = counts
        self.freeze_prototypes_iters = freeze_prototypes_iters
        if hidden_dim == 0:
            self.projection: nn.Module = nn.Linear(input_dim, output_dim)
        else:
            self.projection = nn.Sequential(
                nn.Linear(input_dim, hidden_dim),
                nn.BatchNorm1d(hidden_dim),
                nn.ReLU(inplace=True),
                nn.Linear(hidden_dim, output_dim),
            )
        self.prototypes = nn.ModuleList(nn.Linear(output_dim, k, bias=False) for k in counts)
        self.normalize_prototypes()

    def forward(self, features: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Return unit-norm embeddings (N, D) and, per prototype set, scores (N, K); both
        float32."""
        projected = self.projection(features)
        with autocast_off(projected.device.type):
            z = F.normalize(projected.float(), dim=1)
            return z, self.prototype_scores(z)

    def prototype_scores(self, embeddings: Tensor) -> list[Tensor]:
        """Float32 scores of given embeddings (e.g. the queue's) against every prototype set."""
        with autocast_off(embeddings.device.type):
            z = embeddings.float()
            return [F.linear(z, p.weight.float()) for p in self.prototypes]

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        """Project every prototype back onto the unit sphere."""
        for p in self.prototypes:
            p.weight.copy_(F.normalize(p.weight, dim=1))

    def drop_prototype_grads(self, step: int) -> bool:
        """Drop the prototypes' gradients while ``step < freeze_prototypes_iters``.

        Returns whether they were dropped.
        """
        if step >= self.freeze_prototypes_iters:
            return False
        for p in self.prototypes.parameters():
            p.grad = None
        return True
