import numpy as np
import pytest
import torch

from swav_plugin.evaluation.linear import accuracy, fit_logistic, linear_probe


def digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    x, y = torch.tensor(data.data, dtype=torch.float32), torch.tensor(data.target)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    mean, std = x[:1200].mean(0), x[:1200].std(0).clamp_min(1e-6)
    x = (x - mean) / std
    return x[:1200], y[:1200], x[1200:], y[1200:]


def test_fit_equals_scikit_learn_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    xtr, ytr, xte, yte = digits()
    wd = 1e-2
    ours = fit_logistic(xtr, ytr, 10, weight_decay=wd, max_iter=500)
    reference = LogisticRegression(C=1 / (wd * len(xtr)), max_iter=5000, tol=1e-8)
    reference.fit(xtr.numpy(), ytr.numpy())
    # the same strictly convex objective: the same minimiser
    np.testing.assert_allclose(ours.weight.detach().numpy(), reference.coef_, atol=2e-3)
    ours_pred = ours(xte).argmax(1).numpy()
    assert (ours_pred == reference.predict(xte.numpy())).mean() >= 0.995
    top1, top5 = accuracy(ours, xte, yte)
    assert top1 == pytest.approx(100 * (ours_pred == yte.numpy()).mean())
    assert top1 > 90 and top5 >= top1


def test_probe_picks_the_best_validated_weight_decay_and_reports_the_sweep():
    xtr, ytr, xte, yte = digits()
    result = linear_probe(xtr, ytr, xte, yte, weight_decays=(1e-4, 10.0), max_iter=100)
    assert set(result.validation_top1) == {1e-4, 10.0}
    # a decay of 10 shrinks the weights to almost nothing: far worse on held-out data
    assert result.validation_top1[1e-4] > result.validation_top1[10.0]
    assert result.weight_decay == 1e-4
    assert result.top1 > 90
    assert result.as_dict()["validation_top1"]["0.0001"] == result.validation_top1[1e-4]


@pytest.mark.parametrize(("kwargs", "match"), [({"validation_fraction": 1.0}, "fraction"),
                                               ({"weight_decays": ()}, "at least one")])
def test_bad_arguments(kwargs, match):
    x, y = torch.randn(10, 2), torch.arange(10) % 2
    with pytest.raises(ValueError, match=match):
        linear_probe(x, y, x, y, **kwargs)
