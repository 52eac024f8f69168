"""Prototype inspection: where the prototypes sit among the embeddings, and how they are used.

:func:`prototype_report` computes, on a data set, the embeddings ``z`` (unit-norm projections),
each sample's assigned prototype (``argmax z · cᵀ``), usage statistics and per-prototype
label purity; :func:`plot_umap` draws a UMAP of the prototypes together with a sample of the
embeddings, coloured by true class and by assigned prototype; :func:`plot_usage` the samples
per prototype and their purity; :func:`plot_nearest_images` the images nearest to the most
used prototypes, so that a person can see what a cluster means. PNGs are written atomically.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from swav_plugin.host.atomic import atomic_path


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
        purity: list[float | None] = [None] * k
        for j in np.flatnonzero(counts):
            purity[j] = float(np.bincount(self.labels[self.assignments == j]).max() / counts[j])
        purities = [p for p in purity if p is not None]
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
            "purity": purity,
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
    import umap

    plt = _pyplot()
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
    _save(fig, path)


def plot_usage(report: PrototypeReport, path: Path) -> None:
    """Samples per prototype (sorted) and each prototype's label purity."""
    plt = _pyplot()
    summary = report.summary()
    counts = np.asarray(summary["samples_per_prototype"])
    order = np.argsort(-counts, kind="stable")
    purity = np.asarray([p if p is not None else np.nan for p in summary["purity"]])
    fig, (usage, pure) = plt.subplots(2, 1, figsize=(12, 7), sharex=True)
    usage.bar(np.arange(len(counts)), counts[order], color="tab:blue", width=1.0)
    usage.axhline(counts.sum() / len(counts), color="black", linestyle="--", linewidth=1,
                  label="uniform usage")
    usage.set_ylabel("samples assigned")
    usage.set_title(
        f"{summary['used_prototypes']} of {summary['num_prototypes']} prototypes used "
        f"({summary['dead_prototypes']} dead), assignment entropy "
        f"{summary['assignment_entropy']:.2f} of max {summary['assignment_entropy_max']:.2f}"
    )
    usage.legend(loc="upper right")
    pure.bar(np.arange(len(counts)), purity[order], color="tab:green", width=1.0)
    pure.axhline(0.9, color="black", linestyle="--", linewidth=1, label="purity 0.9")
    pure.set_ylim(0, 1.05)
    pure.set_ylabel("share of the majority class")
    pure.set_xlabel("prototypes, most used first")
    pure.set_title(f"label purity: mean {summary['mean_purity']:.2f}, "
                   f"{summary['pure_prototypes']} prototypes at 0.9 or above")
    pure.legend(loc="upper right")
    _save(fig, path)


def nearest_samples(report: PrototypeReport, top: int = 8, per: int = 8) -> dict[int, list[int]]:
    """For the ``top`` most used prototypes, the indices of the ``per`` nearest embeddings."""
    counts = np.bincount(report.assignments, minlength=len(report.prototypes))
    chosen = [int(j) for j in np.argsort(-counts, kind="stable")[:top] if counts[j] > 0]
    sims = report.embeddings @ report.prototypes[chosen].T  # (N, top)
    return {j: np.argsort(-sims[:, c], kind="stable")[:per].tolist()
            for c, j in enumerate(chosen)}


def plot_nearest_images(
    report: PrototypeReport,
    image_of: Callable[[int], Image.Image],
    class_names: Sequence[str],
    path: Path,
    top: int = 8,
    per: int = 8,
) -> None:
    """A grid: one row per most-used prototype, its nearest images left to right."""
    plt = _pyplot()
    nearest = nearest_samples(report, top, per)
    counts = np.bincount(report.assignments, minlength=len(report.prototypes))
    fig, axes = plt.subplots(len(nearest), per, figsize=(1.4 * per + 2.5, 1.5 * len(nearest)),
                             squeeze=False)
    for row, (j, indices) in zip(axes, nearest.items(), strict=True):
        for ax in row:
            ax.axis("off")
        for ax, i in zip(row, indices, strict=False):
            ax.imshow(image_of(i), interpolation="nearest")
            ax.set_title(class_names[report.labels[i]], fontsize=8)
        row[0].text(-0.15, 0.5, f"prototype {j}\n{counts[j]} samples", fontsize=9,
                    ha="right", va="center", transform=row[0].transAxes)
    fig.suptitle(f"nearest images of the {len(nearest)} most used prototypes "
                 "(title: true class)")
    _save(fig, path)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    """Write ``fig`` to ``path`` as a PNG through a temporary file and a rename (none left
    behind on failure), and close it."""
    try:
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    finally:
        _pyplot().close(fig)
