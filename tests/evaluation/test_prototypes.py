import numpy as np
import pytest
import torch
from PIL import Image

from swav_plugin.evaluation.prototypes import (
    nearest_samples,
    plot_nearest_images,
    plot_umap,
    plot_usage,
    prototype_report,
)


def clustered(seed=0):
    """Three tight clusters on the sphere, each around one of the first three prototypes."""
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.eye(5, 8)
    labels = torch.arange(3).repeat_interleave(20)
    embeddings = prototypes[labels] + 0.05 * torch.randn(60, 8, generator=g)
    return torch.nn.functional.normalize(embeddings, dim=1), labels, prototypes


def test_report_assigns_to_nearest_prototype_and_summarises_usage():
    embeddings, labels, prototypes = clustered()
    report = prototype_report(embeddings, labels, prototypes * 3)  # any norm: normalised
    assert report.assignments.tolist() == labels.tolist()
    summary = report.summary()
    assert summary["num_prototypes"] == 5
    assert summary["used_prototypes"] == 3 and summary["dead_prototypes"] == 2
    assert summary["samples_per_prototype"] == [20, 20, 20, 0, 0]
    assert summary["assignment_entropy"] == pytest.approx(np.log(3))
    assert summary["assignment_entropy_max"] == pytest.approx(np.log(5))
    assert summary["mean_purity"] == 1.0 and summary["pure_prototypes"] == 3


def test_mixed_prototype_purity():
    embeddings, labels, prototypes = clustered()
    labels = labels.clone()
    labels[:10] = 1  # half of prototype 0's samples carry another label
    summary = prototype_report(embeddings, labels, prototypes).summary()
    assert summary["mean_purity"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert summary["pure_prototypes"] == 2


@pytest.mark.slow
def test_umap_plot_is_written_atomically(tmp_path):
    embeddings, labels, prototypes = clustered()
    path = tmp_path / "plots" / "umap.png"
    plot_umap(prototype_report(embeddings, labels, prototypes), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["umap.png"]


def test_purity_per_prototype_is_none_for_dead_ones():
    embeddings, labels, prototypes = clustered()
    purity = prototype_report(embeddings, labels, prototypes).summary()["purity"]
    assert purity == [1.0, 1.0, 1.0, None, None]


def test_nearest_samples_of_the_most_used_prototypes():
    embeddings, labels, prototypes = clustered()
    labels = labels.clone()
    embeddings = embeddings.clone()
    embeddings[40:45] = torch.nn.functional.normalize(prototypes[0] + 0.01, dim=0)  # 25 near p0
    report = prototype_report(embeddings, labels, prototypes)
    nearest = nearest_samples(report, top=2, per=5)
    assert list(nearest) == [0, 1]  # prototype 0 has 25 samples, then 1 and 2 with 20 / 15
    assert sorted(nearest[0]) == [40, 41, 42, 43, 44]  # the five placed on top of it
    assert all(report.assignments[i] == 1 for i in nearest[1])


@pytest.mark.slow
def test_usage_and_image_grid_plots_are_written(tmp_path):
    embeddings, labels, prototypes = clustered()
    report = prototype_report(embeddings, labels, prototypes)
    plot_usage(report, tmp_path / "usage.png")
    images = [Image.fromarray(np.full((8, 8), 4 * i, np.uint8)) for i in range(60)]
    shown = []
    plot_nearest_images(report, lambda i: shown.append(i) or images[i], ["a", "b", "c"],
                        tmp_path / "grid.png", top=3, per=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png", "usage.png"]
    assert (tmp_path / "grid.png").read_bytes()[:4] == b"\x89PNG"
    assert len(shown) == 12  # 3 prototypes × 4 nearest images
