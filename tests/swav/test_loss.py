import math

import pytest
import torch

from swav_plugin.swav.head import SwAVHead
from swav_plugin.swav.loss import SwAVLoss


def hand_swav_loss(scores, batch, crops_for_assign, eps=0.05, temp=0.1, iters=3):
    """SwAV's eq. 8 in plain Python floats: loops, math.exp / math.log, no torch."""
    rows = scores.tolist()
    k = len(rows[0])
    num_crops = len(rows) // batch
    crop = [rows[v * batch:(v + 1) * batch] for v in range(num_crops)]

    def codes(s):
        q = [[math.exp(s[b][j] / eps) for b in range(batch)] for j in range(k)]  # K x B
        total = sum(map(sum, q))
        q = [[x / total for x in row] for row in q]
        for _ in range(iters):
            q = [[x / (sum(row) * k) for x in row] for row in q]
            cols = [sum(q[j][b] for j in range(k)) for b in range(batch)]
            q = [[q[j][b] / (cols[b] * batch) for b in range(batch)] for j in range(k)]
        return [[q[j][b] * batch for j in range(k)] for b in range(batch)]

    def log_softmax(v):
        m = max(v)
        lse = m + math.log(sum(math.exp(x - m) for x in v))
        return [x - lse for x in v]

    total = 0.0
    for s in crops_for_assign:
        q = codes(crop[s])
        sub = 0.0
        for t in range(num_crops):
            if t == s:
                continue
            for b in range(batch):
                logp = log_softmax([x / temp for x in crop[t][b]])
                sub -= sum(qi * li for qi, li in zip(q[b], logp, strict=True)) / batch
        total += sub / (num_crops - 1)
    return total / len(crops_for_assign)


@pytest.mark.parametrize("crops_for_assign", [(0, 1), (0,), (1, 2), (2, 0)])
def test_loss_equals_hand_computation(crops_for_assign):
    torch.manual_seed(0)
    batch, k, num_crops = 3, 4, 4
    scores = torch.nn.functional.normalize(torch.randn(num_crops * batch, k), dim=1)
    loss = SwAVLoss(crops_for_assign=crops_for_assign)([scores], batch).loss
    expected = hand_swav_loss(scores.double(), batch, crops_for_assign)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_equal_scores_give_ln_k():
    # Collapse: every prediction uniform, codes uniform: the loss is exactly ln K.
    out = SwAVLoss()([torch.zeros(4 * 8, 30)], 8)
    assert out.loss.item() == pytest.approx(math.log(30), rel=1e-6)


def test_multi_head_losses_are_averaged():
    torch.manual_seed(1)
    a, b = torch.randn(3 * 5, 6), torch.randn(3 * 5, 9)
    loss = SwAVLoss()
    both = loss([a, b], 5)
    expected = (loss([a], 5).loss + loss([b], 5).loss) / 2
    torch.testing.assert_close(both.loss, expected)
    assert [c.shape for c in both.codes] == [(2, 5, 6), (2, 5, 9)]


def test_codes_get_no_gradient_predictions_do():
    scores = torch.randn(2 * 4, 5, requires_grad=True)
    out = SwAVLoss()([scores], 4)
    assert not out.codes[0].requires_grad
    out.loss.backward()
    assert scores.grad is not None and scores.grad.abs().sum() > 0


def test_queue_scores_join_the_balancing_but_only_batch_codes_return():
    torch.manual_seed(2)
    batch, k = 4, 6
    scores = torch.randn(2 * batch, k)
    queue = torch.randn(2, 12, k)
    loss = SwAVLoss()
    with_queue = loss([scores], batch, [queue])
    assert with_queue.codes[0].shape == (2, batch, k)
    from swav_plugin.swav.sinkhorn import sinkhorn

    expected = sinkhorn(torch.cat([queue[0], scores[:batch]]), distributed=False)[-batch:]
    torch.testing.assert_close(with_queue.codes[0][0], expected)
    without = loss([scores], batch)
    assert not torch.allclose(with_queue.codes[0], without.codes[0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": 0}, "temperature must be positive"),
        ({"epsilon": -0.1}, "epsilon must be positive"),
        ({"sinkhorn_iterations": 0}, "sinkhorn_iterations must be at least 1"),
        ({"crops_for_assign": []}, "crops_for_assign must list crop indices"),
        ({"crops_for_assign": [0, 0]}, "repeated crops"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SwAVLoss(**kwargs)


def test_crops_for_assign_out_of_range():
    with pytest.raises(ValueError, match=r"crops_for_assign=\[0, 3\] but there are only 2 crops"):
        SwAVLoss(crops_for_assign=(0, 3))([torch.randn(2 * 4, 5)], 4)


def test_loss_never_reads_tensor_values_on_the_host():
    # Meta tensors carry no data: any .item(), python branch on a tensor or boolean indexing
    # raises, so Sinkhorn and the loss running on them cannot stall a GPU step.
    scores = [torch.empty(6 * 8, 30, device="meta", requires_grad=True)]
    queue = [torch.empty(2, 16, 30, device="meta")]
    out = SwAVLoss(crops_for_assign=(0, 1))(scores, 8, queue)
    out.loss.backward()
    assert out.codes[0].shape == (2, 8, 30)


def test_scores_codes_and_loss_stay_float32_under_bf16_autocast():
    # The projection may run in bf16; the scores of its (bf16-rounded) embeddings, the codes
    # and the loss must be those of float32 arithmetic on the same embeddings.
    torch.manual_seed(0)
    batch, crops = 256, 2
    head = SwAVHead(input_dim=64, hidden_dim=128, output_dim=32, num_prototypes=300,
                    freeze_prototypes_iters=0)
    loss = SwAVLoss()
    features = torch.randn(crops * batch, 64)
    queue = torch.nn.functional.normalize(torch.randn(2, 512, 32), dim=-1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z, scores = head(features)
        queue_scores = head.prototype_scores(queue)
        out = loss(scores, batch, queue_scores)
    assert z.dtype == scores[0].dtype == queue_scores[0].dtype == out.loss.dtype == torch.float32
    prototypes = head.prototypes[0].weight.detach()
    exact = loss([z.detach() @ prototypes.t()], batch, [queue @ prototypes.t()])
    torch.testing.assert_close(out.codes[0], exact.codes[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.loss.detach(), exact.loss, atol=0, rtol=1e-5)
