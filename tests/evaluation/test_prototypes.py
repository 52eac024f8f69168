import numpy as np
import pytest
import torch

from swav_plugin.evaluation.prototypes import plot_umap, prototype_report


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
