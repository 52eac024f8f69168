"""Prototype inspection: where the prototypes sit among the embeddings, and how they are used.

:func:`prototype_report` computes, on a data set, the embeddings ``z`` (unit-norm projections),
each sample's assigned prototype (``argmax z · cᵀ``), usage statistics and per-prototype
label purity; :func:`plot_umap` draws a UMAP of the prototypes together with a sample of the
embeddings, coloured by true class and by assigned prototype.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


@dataclass
class PrototypeReport:
    """Usage of one prototype set on a data set."""

    embeddings: np.ndarray  # (N, D)
    labels: np.ndarray  # (N,)
    assignments: np.ndarray  # (N,) index of the nearest prototype
    prototypes: np.ndarray  # (K, D), unit norm

    def summary(self) -> dict:
        k = len(self.prototypes)
        counts = np.bincount(self.assignments, minlength=k)
        p = counts / counts.sum()
        entropy = float(-(p[p > 0] * np.log(p[p > 0])).sum())
        purities = []
        for j in np.flatnonzero(counts):
            purities.append(np.bincount(self.labels[self.assignments == j]).max() / counts[j])
        return {
            "num_prototypes": k,
            "num_samples": int(counts.sum()),
            "used_prototypes": int((counts > 0).sum()),
            "dead_prototypes": int((counts == 0).sum()),
            "assignment_entropy": entropy,
            "assignment_entropy_max": float(np.log(k)),
            "mean_purity": float(np.mean(purities)),
            "pure_prototypes": int(sum(pu >= 0.9 for pu in purities)),
            "samples_per_prototype": counts.tolist(),
        }


def prototype_report(embeddings: Tensor, labels: Tensor, prototypes: Tensor) -> PrototypeReport:
    """Assign every embedding to its nearest prototype (cosine similarity)."""
    prototypes = torch.nn.functional.normalize(prototypes.float(), dim=1)
    assignments = (embeddings.float() @ prototypes.t()).argmax(1)
    return PrototypeReport(
        embeddings.numpy(), labels.numpy(), assignments.numpy(), prototypes.numpy()
    )


def plot_umap(
    report: PrototypeReport, path: Path, max_points: int = 3000, seed: int = 0, title: str = ""
) -> None:
    """UMAP of prototypes and embeddings, two panels (true class / assigned prototype)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import umap

    rng = np.random.default_rng(seed)
    n = len(report.embeddings)
    sample = rng.choice(n, size=min(n, max_points), replace=False)
    points = np.concatenate([report.prototypes, report.embeddings[sample]])
    reducer = umap.UMAP(metric="cosine", random_state=seed, n_neighbors=15, n_jobs=1)
    xy = reducer.fit_transform(points)
    k = len(report.prototypes)
    protos, emb = xy[:k], xy[k:]

    fig, axes = plt.subplots(1, 2, figsize=(14, 6.5))
    panels = (
        ("coloured by true class", report.labels[sample], "tab10"),
        ("coloured by assigned prototype", report.assignments[sample], "tab20"),
    )
    for ax, (subtitle, colours, cmap) in zip(axes, panels, strict=True):
        scatter = ax.scatter(emb[:, 0], emb[:, 1], c=colours, cmap=cmap, s=6, alpha=0.7)
        ax.scatter(protos[:, 0], protos[:, 1], marker="*", s=180, c="black",
                   edgecolors="white", linewidths=0.8, label=f"prototypes (K={k})")
        ax.set_title(subtitle)
        ax.set_xlabel("UMAP 1")
        ax.set_ylabel("UMAP 2")
        ax.legend(loc="upper right")
        if cmap == "tab10":
            handles, names = scatter.legend_elements()
            ax.add_artist(ax.legend(handles, names, title="class", loc="lower left", fontsize=8))
    fig.suptitle(title or f"SwAV prototypes among {len(sample)} embeddings (UMAP, cosine)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
