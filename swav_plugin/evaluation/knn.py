"""Weighted k-nearest-neighbour classification on L2-normalised features (InstDisc [0]).

Each query's k nearest training features (cosine similarity ``s``) vote for their class with
weight ``exp(s / T)``; the class with the largest total wins. Search uses an exact
inner-product FAISS index.

- [0]: Wu et al., Unsupervised Feature Learning via Non-Parametric Instance Discrimination,
  2018, https://arxiv.org/abs/1805.01978
"""

from __future__ import annotations

from collections.abc import Sequence

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def knn_search(bank: Tensor, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Exact top-``k`` inner-product search; returns (similarities, indices) of (Q, k)."""
    index = faiss.IndexFlatIP(bank.shape[1])
    index.add(np.ascontiguousarray(bank.numpy(), dtype=np.float32))
    sims, idx = index.search(np.ascontiguousarray(queries.numpy(), dtype=np.float32), k)
    return torch.from_numpy(sims), torch.from_numpy(idx)


def knn_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    ks: Sequence[int] = (10, 20, 200),
    temperature: float = 0.07,
) -> dict[int, dict[str, float]]:
    """Top-1 / top-5 accuracy (in %) of weighted kNN for every k in ``ks``."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    bank = F.normalize(train_features.float(), dim=1)
    queries = F.normalize(test_features.float(), dim=1)
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    k_max = min(max(ks), len(bank))
    sims, idx = knn_search(bank, queries, k_max)
    neighbour_labels = train_labels[idx]
    results = {}
    for k in ks:
        k_eff = min(k, k_max)
        weights = (sims[:, :k_eff] / temperature).exp()
        votes = torch.zeros(len(queries), num_classes).scatter_add_(
            1, neighbour_labels[:, :k_eff], weights
        )
        ranked = votes.argsort(dim=1, descending=True)
        hits = ranked == test_labels[:, None]
        results[k] = {
            "top1": 100.0 * hits[:, :1].any(1).float().mean().item(),
            "top5": 100.0 * hits[:, :5].any(1).float().mean().item(),
        }
    return results
