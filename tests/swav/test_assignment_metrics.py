import math
import warnings

import pytest
import torch

from swav_plugin.swav.assignment_metrics import (
    AssignmentMetrics,
    assigned_scores,
    loss_over_ln_k,
    prototype_counts,
    usage_entropy,
)
from swav_plugin.swav.loss import SwAVLoss


def one_hot_rows(owners, k=4, scale=100.0):
    return scale * torch.nn.functional.one_hot(torch.tensor(owners), k).float()


@pytest.mark.parametrize(("crops_for_assign", "rows"), [((0, 1), [0, 1, 2, 3]),
                                                        ((1, 3), [2, 3, 6, 7])])
def test_assigned_scores_are_the_crops_for_assignment_crop_major(crops_for_assign, rows):
    scores = torch.arange(8 * 3, dtype=torch.bfloat16).view(8, 3).requires_grad_()  # V=4, B=2
    assigned = assigned_scores(scores, 2, SwAVLoss(crops_for_assign=crops_for_assign))
    assert assigned.dtype == torch.float32 and not assigned.requires_grad
    assert torch.equal(assigned, scores.detach().float()[rows])


def test_usage_entropy_is_one_for_even_use_and_zero_for_one_prototype():
    assert usage_entropy(torch.zeros(6, 4), 0.1) == pytest.approx(1.0)
    assert usage_entropy(one_hot_rows([0, 1, 2, 3]), 0.1) == pytest.approx(1.0)
    assert usage_entropy(one_hot_rows([2, 2, 2, 2]), 0.1) == pytest.approx(0.0, abs=1e-6)
    # half the crops on each of two prototypes: ln 2 / ln 4
    assert usage_entropy(one_hot_rows([0, 1, 0, 1]), 0.1) == pytest.approx(0.5)


def test_usage_entropy_sees_the_temperature():
    scores = torch.tensor([[1.0, 0.0]])
    p = torch.softmax(scores / 0.5, dim=1)[0]
    expected = -(p * p.log()).sum() / math.log(2)
    assert usage_entropy(scores, 0.5) == pytest.approx(float(expected))


def test_loss_over_ln_k_averages_each_heads_share_of_the_uniform_loss():
    head_losses = [torch.tensor(math.log(20)), torch.tensor(0.5 * math.log(10))]
    assert loss_over_ln_k(head_losses, [20, 10]) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        loss_over_ln_k(head_losses, [20])


def test_prototype_counts_count_each_rows_best_prototype():
    assert prototype_counts(one_hot_rows([0, 0, 3, 0, 1])).tolist() == [3.0, 1.0, 0.0, 1.0]


def test_usage_reports_the_prototypes_used_and_the_top_share():
    metrics = AssignmentMetrics(collapse_prototypes=2)
    usage = metrics.usage(one_hot_rows([0, 0, 0, 0, 0, 1, 1, 2]), every=1)
    assert list(usage) == ["train/prototypes_used", "train/top_prototypes_share"]
    assert usage["train/prototypes_used"].item() == 3.0
    assert usage["train/top_prototypes_share"].item() == pytest.approx(7 / 8)
    # more top prototypes than there are: every crop
    many = AssignmentMetrics(collapse_prototypes=10).usage(one_hot_rows([0, 1]), every=1)
    assert many["train/top_prototypes_share"].item() == 1.0


def collapse_warnings(metrics, logged_owners, every, first=0):
    """Warnings of ``metrics`` over logging steps ``first``, ``first + 1``, ... (one every
    ``every`` steps) at which the crops go to ``logged_owners``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i, owners in enumerate(logged_owners, start=first):
            metrics.usage(one_hot_rows(owners), every)
            metrics.warn_if_collapsed((i + 1) * every - 1, every)
    return [str(w.message) for w in caught if "collapsing" in str(w.message)]


COLLAPSED, SPREAD = [0, 0, 0, 0], [0, 1, 2, 3]


def watch(**kwargs):
    return AssignmentMetrics(collapse_prototypes=1, collapse_share=0.9,
                             collapse_patience_steps=4, **kwargs)


def test_a_warning_after_patience_steps_of_collapse_then_the_count_starts_again():
    metrics = watch()
    messages = collapse_warnings(metrics, [COLLAPSED] * 2, every=2)
    assert messages == [
        "SwAV may be collapsing: for the last 4 steps, 1 prototypes took at least 90% of the "
        "assigned crops at every logged step. Usual remedies: a lower method.lr, a larger "
        "method.loss.epsilon, more method.head.freeze_prototypes_iters, or a queue "
        "(method.queue) when the batch is small"
    ]
    again = collapse_warnings(metrics, [COLLAPSED] * 2, every=2, first=2)
    assert len(again) == 1 and "for the last 4 steps" in again[0]


def test_one_spread_logging_step_restarts_the_count():
    assert collapse_warnings(watch(), [COLLAPSED, SPREAD], every=2) == []
    messages = collapse_warnings(watch(), [COLLAPSED, SPREAD, COLLAPSED, COLLAPSED], every=2)
    assert len(messages) == 1 and "for the last 4 steps" in messages[0]


def test_the_count_is_read_only_on_the_first_logging_step_of_each_patience():
    # steps 3, 5, 7 collapsed; read at step 3 (2 steps) and step 7 (6 steps)
    messages = collapse_warnings(watch(), [SPREAD, COLLAPSED, COLLAPSED, COLLAPSED], every=2)
    assert len(messages) == 1 and "for the last 6 steps" in messages[0]


def test_no_warning_before_any_usage_was_counted():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        AssignmentMetrics(collapse_patience_steps=1).warn_if_collapsed(0, every=1)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"collapse_prototypes": 0}, "collapse_prototypes must be at least 1, got 0"),
    ({"collapse_patience_steps": 0}, "collapse_patience_steps must be at least 1, got 0"),
    ({"collapse_share": 0.0}, "collapse_share must be in \\(0, 1\\], got 0.0"),
    ({"collapse_share": 1.5}, "collapse_share must be in \\(0, 1\\], got 1.5"),
])
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AssignmentMetrics(**kwargs)
