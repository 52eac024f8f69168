import numpy as np
import pytest
import torch

from swav_plugin.evaluation.knn import (
    faiss_search,
    knn_accuracy,
    knn_search,
    recall_at_k,
    torch_search,
)


def brute_force_knn(train, train_labels, test, test_labels, k, t, num_classes):
    """Weighted kNN written out in NumPy: cosine similarity, top k, exp(s / t) votes."""
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    test = test / np.linalg.norm(test, axis=1, keepdims=True)
    top1 = top5 = 0
    per_class = np.zeros((num_classes, 2))  # hits, count
    for q, label in zip(test, test_labels, strict=True):
        sims = train @ q
        nearest = np.argsort(-sims, kind="stable")[:k]
        votes = np.zeros(num_classes)
        for j in nearest:
            votes[train_labels[j]] += np.exp(sims[j] / t)
        ranked = np.argsort(-votes, kind="stable")
        top1 += ranked[0] == label
        top5 += label in ranked[:5]
        per_class[label] += (ranked[0] == label, 1)
    return 100 * top1 / len(test), 100 * top5 / len(test), 100 * per_class[:, 0] / per_class[:, 1]


def digits_features():
    from sklearn.datasets import load_digits

    data = load_digits()
    x = data.data.astype(np.float32) + 1e-3  # real data; raw pixels as features
    y = data.target.astype(np.int64)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    return x[order[:1200]], y[order[:1200]], x[order[1200:]], y[order[1200:]]


@pytest.mark.parametrize("k", [1, 10, 20, 200])
def test_matches_numpy_brute_force_on_real_data(k):
    xtr, ytr, xte, yte = digits_features()
    got = knn_accuracy(torch.from_numpy(xtr), torch.from_numpy(ytr), torch.from_numpy(xte),
                       torch.from_numpy(yte), ks=[k], temperature=0.07)[k]
    top1, top5, per_class = brute_force_knn(xtr, ytr, xte, yte, k, 0.07, 10)
    # one query is 100 / 597 = 0.17 %: the tolerance only absorbs float32 rounding
    assert got["top1"] == pytest.approx(top1, abs=1e-4)
    assert got["top5"] == pytest.approx(top5, abs=1e-4)
    assert got["per_class_top1"] == pytest.approx(per_class.tolist(), abs=1e-4)
    assert got["top1"] > 80  # raw digit pixels are a strong kNN baseline


def test_search_returns_exact_neighbours():
    bank = torch.nn.functional.normalize(torch.randn(500, 8), dim=1)
    queries = bank[:5]
    sims, idx = knn_search(bank, queries, 3)
    assert idx[:, 0].tolist() == [0, 1, 2, 3, 4]
    torch.testing.assert_close(sims[:, 0], torch.ones(5))
    expected = (queries @ bank.t()).topk(3, dim=1)
    torch.testing.assert_close(sims, expected.values)


def test_k_larger_than_bank_is_clamped():
    bank, labels = torch.randn(5, 4), torch.tensor([0, 1, 0, 1, 0])
    result = knn_accuracy(bank, labels, bank, labels, ks=[200])
    assert 0 <= result[200]["top1"] <= 100
    assert result[200]["k_used"] == 5


def test_a_small_temperature_does_not_overflow_the_votes():
    # exp(s / T) is inf in float32 for T < 1 / 88: every vote would tie
    xtr, ytr, xte, yte = digits_features()
    got = knn_accuracy(torch.from_numpy(xtr), torch.from_numpy(ytr), torch.from_numpy(xte),
                       torch.from_numpy(yte), ks=[20], temperature=0.005)[20]
    xtr, xte = xtr.astype(np.float64), xte.astype(np.float64)  # exp(200) fits in float64
    top1, top5, _ = brute_force_knn(xtr, ytr, xte, yte, 20, 0.005, 10)
    assert got["top1"] == pytest.approx(top1, abs=1e-4)
    assert got["top5"] == pytest.approx(top5, abs=1e-4)


def test_temperature_must_be_positive():
    with pytest.raises(ValueError, match="temperature must be positive"):
        knn_accuracy(torch.randn(4, 2), torch.zeros(4, dtype=torch.long), torch.randn(2, 2),
                     torch.zeros(2, dtype=torch.long), temperature=0)


def test_per_class_accuracy_is_none_for_classes_without_test_samples():
    bank, labels = torch.eye(3), torch.tensor([0, 1, 2])
    result = knn_accuracy(bank, labels, bank[:2], labels[:2], ks=[1])[1]
    assert result["per_class_top1"] == [100.0, 100.0, None]


def test_chunked_torch_search_equals_exact_faiss():
    g = torch.Generator().manual_seed(0)
    bank = torch.nn.functional.normalize(torch.randn(1000, 16, generator=g), dim=1)
    queries = torch.nn.functional.normalize(torch.randn(70, 16, generator=g), dim=1)
    # chunks smaller than k and not dividing the sizes: the running top-k merge is exercised
    sims, idx = torch_search(bank, queries, 25, query_chunk=32, bank_chunk=17)
    exact_sims, exact_idx = faiss_search(bank, queries, 25)
    torch.testing.assert_close(sims, exact_sims, atol=1e-5, rtol=0)
    assert torch.equal(idx, exact_idx)


def test_ivf_recall_is_measured_and_exact_when_every_list_is_probed():
    g = torch.Generator().manual_seed(1)
    bank = torch.nn.functional.normalize(torch.randn(2000, 8, generator=g), dim=1)
    queries = bank[:100] + 0.01
    _, exact = faiss_search(bank, queries, 10)
    _, all_lists = faiss_search(bank, queries, 10, index="ivf", nlist=16, nprobe=16)
    _, one_list = faiss_search(bank, queries, 10, index="ivf", nlist=16, nprobe=1)
    assert recall_at_k(all_lists, exact) == 1.0
    assert 0.2 < recall_at_k(one_list, exact) < 1.0
    assert recall_at_k(exact, exact) == 1.0


def test_unknown_index_is_refused():
    with pytest.raises(ValueError, match="'flat' or 'ivf'"):
        faiss_search(torch.randn(4, 2), torch.randn(1, 2), 1, index="hnsw")
