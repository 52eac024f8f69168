"""Weighted k-nearest-neighbour classification on L2-normalised features (InstDisc [0]).

Each query's k nearest training features (cosine similarity ``s``) vote for their class with
weight ``exp(s / T)``; the class with the largest total wins.

Search (:func:`knn_search`): an exact inner-product FAISS index by default (on the GPU when
FAISS has one); an approximate IVF index for banks too large for exact search (its recall
against exact search is measured by :func:`recall_at_k`); and, when FAISS has no GPU but
torch has one, a chunked torch search on the GPU. Memory stays bounded: queries go in chunks,
and the torch search also walks the bank in chunks, merging running top-k lists.

- [0]: Wu et al., Unsupervised Feature Learning via Non-Parametric Instance Discrimination,
  2018, https://arxiv.org/abs/1805.01978
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def _faiss_index(dim: int, index: Literal["flat", "ivf"], nlist: int, nprobe: int) -> Any:
    if index == "flat":
        return faiss.IndexFlatIP(dim)
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.nprobe = nprobe
    return ivf


def faiss_search(
    bank: Tensor,
    queries: Tensor,
    k: int,
    index: Literal["flat", "ivf"] = "flat",
    nlist: int | None = None,
    nprobe: int = 32,
    query_chunk: int = 65536,
    use_gpu: bool = False,
) -> tuple[Tensor, Tensor]:
    """Top-``k`` inner-product search with FAISS; returns (similarities, indices) of (Q, k).

    IVF: ``nlist`` inverted lists (default 4·√N, FAISS's rule of thumb), ``nprobe`` searched.
    """
    if index not in ("flat", "ivf"):
        raise ValueError(f"index must be 'flat' or 'ivf', got {index!r}")
    vectors = np.ascontiguousarray(bank.numpy(), dtype=np.float32)
    if index == "flat" and not use_gpu:
        # faiss.knn searches the caller's array in place: an index would copy the whole bank
        # (10.5 GB for 1.28M x 2048), doubling peak memory.
        def search(chunk: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
            return faiss.knn(chunk, vectors, k, metric=faiss.METRIC_INNER_PRODUCT)
    else:
        if nlist is None:
            nlist = max(1, round(4 * math.sqrt(len(vectors))))
        searcher = _faiss_index(vectors.shape[1], index, min(nlist, len(vectors)), nprobe)
        if use_gpu:
            searcher = faiss.index_cpu_to_all_gpus(searcher)
        if index == "ivf":
            sample = np.random.default_rng(0).permutation(len(vectors))[: 64 * nlist]
            searcher.train(vectors[sample])
        searcher.add(vectors)
        search = searcher.search
    sims, idx = [], []
    for start in range(0, len(queries), query_chunk):
        chunk = np.ascontiguousarray(queries[start : start + query_chunk].numpy(), np.float32)
        s, i = search(chunk, k)
        sims.append(torch.from_numpy(s))
        idx.append(torch.from_numpy(i))
    return torch.cat(sims), torch.cat(idx)


@torch.no_grad()
def torch_search(
    bank: Tensor,
    queries: Tensor,
    k: int,
    device: str | torch.device = "cpu",
    query_chunk: int = 4096,
    bank_chunk: int = 262144,
) -> tuple[Tensor, Tensor]:
    """Exact top-``k`` inner-product search in torch, chunked over queries and bank."""
    bank = bank.to(device, torch.float32)
    sims, idx = [], []
    for q0 in range(0, len(queries), query_chunk):
        q = queries[q0 : q0 + query_chunk].to(device, torch.float32)
        best_s = torch.empty(len(q), 0, device=device)
        best_i = torch.empty(len(q), 0, dtype=torch.long, device=device)
        for b0 in range(0, len(bank), bank_chunk):
            s = q @ bank[b0 : b0 + bank_chunk].t()
            top_s, top_i = s.topk(min(k, s.shape[1]), dim=1)
            merged_s = torch.cat([best_s, top_s], dim=1)
            merged_i = torch.cat([best_i, top_i + b0], dim=1)
            best_s, order = merged_s.topk(min(k, merged_s.shape[1]), dim=1)
            best_i = merged_i.gather(1, order)
        sims.append(best_s.cpu())
        idx.append(best_i.cpu())
    return torch.cat(sims), torch.cat(idx)


def knn_search(
    bank: Tensor,
    queries: Tensor,
    k: int,
    index: Literal["flat", "ivf"] = "flat",
    device: str | torch.device = "cpu",
) -> tuple[Tensor, Tensor]:
    """Top-``k`` inner-product search on the best backend for ``device`` (see the module)."""
    on_gpu = torch.device(device).type == "cuda"
    faiss_gpu = hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0
    if on_gpu and not faiss_gpu and index == "flat":
        return torch_search(bank, queries, k, device)
    return faiss_search(bank, queries, k, index=index, use_gpu=on_gpu and faiss_gpu)


def recall_at_k(approximate: Tensor, exact: Tensor) -> float:
    """Mean fraction of each query's exact top-k neighbours that the approximate search found."""
    found = (approximate[:, :, None] == exact[:, None, :]).any(1).float()
    return float(found.mean())


def knn_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    ks: Sequence[int] = (10, 20, 200),
    temperature: float = 0.07,
    index: Literal["flat", "ivf"] = "flat",
    device: str | torch.device = "cpu",
) -> dict[int, dict[str, Any]]:
    """Top-1 / top-5 accuracy (in %) of weighted kNN for every k in ``ks``, and per class.

    ``per_class_top1[c]`` is the top-1 accuracy on the test samples of class ``c`` (``None``
    when the test set has none); ``k_used`` the neighbours that voted: ``k``, or the bank's
    size when it is smaller.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    bank = F.normalize(train_features.float(), dim=1)
    queries = F.normalize(test_features.float(), dim=1)
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    k_max = min(max(ks), len(bank))
    sims, idx = knn_search(bank, queries, k_max, index=index, device=device)
    neighbour_labels = train_labels[idx]
    results = {}
    for k in ks:
        k_eff = min(k, k_max)
        # relative to each query's nearest: exp(s / T) overflows float32 for T < 1 / 88
        weights = ((sims[:, :k_eff] - sims[:, :1]) / temperature).exp()
        votes = torch.zeros(len(queries), num_classes).scatter_add_(
            1, neighbour_labels[:, :k_eff], weights
        )
        ranked = votes.argsort(dim=1, descending=True)
        hits = ranked == test_labels[:, None]
        correct = hits[:, 0].float()
        per_class_hits = torch.zeros(num_classes).scatter_add_(0, test_labels, correct)
        per_class_count = torch.bincount(test_labels, minlength=num_classes).float()
        results[k] = {
            "k_used": k_eff,
            "top1": 100.0 * correct.mean().item(),
            "top5": 100.0 * hits[:, :5].any(1).float().mean().item(),
            "per_class_top1": [
                100.0 * h / n if n else None
                for h, n in zip(per_class_hits.tolist(), per_class_count.tolist(), strict=True)
            ],
        }
    return results
