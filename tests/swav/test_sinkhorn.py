import pytest
import torch

from swav_plugin.swav.sinkhorn import sinkhorn
from swav_plugin.swav.sinkhorn import sinkhorn_reference as reference_sinkhorn


def unit_scores(batch, prototypes, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.nn.functional.normalize(torch.randn(batch, dim, generator=g), dim=1)
    c = torch.nn.functional.normalize(torch.randn(prototypes, dim, generator=g), dim=1)
    return z @ c.t()


@pytest.mark.parametrize(("batch", "prototypes"), [(64, 10), (256, 300), (33, 7)])
def test_matches_float64_reference(batch, prototypes):
    scores = unit_scores(batch, prototypes)
    codes = sinkhorn(scores, distributed=False)
    assert codes.dtype == torch.float32
    torch.testing.assert_close(codes.double(), reference_sinkhorn(scores), atol=1e-6, rtol=1e-5)


def test_marginals_equipartition():
    # At convergence each prototype gets 1/K of the mass and each sample 1/B (eq. 6);
    # rescaled so that every sample's code sums to one.
    batch, prototypes = 128, 16
    codes = sinkhorn(unit_scores(batch, prototypes), iterations=200, distributed=False)
    q = codes.double() / batch  # the transport plan of eq. 6
    torch.testing.assert_close(q.sum(0), torch.full((prototypes,), 1 / prototypes,
                                                    dtype=torch.float64), atol=1e-4, rtol=0)
    torch.testing.assert_close(q.sum(1), torch.full((batch,), 1 / batch,
                                                    dtype=torch.float64), atol=1e-4, rtol=0)


def test_codes_are_distributions_after_three_iterations():
    codes = sinkhorn(unit_scores(50, 12), distributed=False)
    assert (codes >= 0).all()
    torch.testing.assert_close(codes.sum(1), torch.ones(50), atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_give_finite_codes(dtype):
    scores = unit_scores(256, 300).to(dtype)
    codes = sinkhorn(scores, distributed=False)
    assert torch.isfinite(codes).all()
    expected = reference_sinkhorn(scores.float())
    torch.testing.assert_close(codes.double(), expected, atol=1e-5, rtol=1e-4)


def test_lightly_sinkhorn_overflows_in_fp16_where_ours_does_not():
    # The motivating failure: exp(S / eps) overflows fp16 (max 65504 < e^20).
    from lightly.loss.swav_loss import sinkhorn as lightly_sinkhorn

    scores = unit_scores(64, 30).half()
    scores[0, 0] = 1.0
    assert not torch.isfinite(lightly_sinkhorn(scores)).all()
    assert torch.isfinite(sinkhorn(scores, distributed=False)).all()


def test_small_epsilon_stays_finite():
    scores = unit_scores(64, 30)
    codes = sinkhorn(scores, epsilon=0.005, distributed=False)
    assert torch.isfinite(codes).all()
    torch.testing.assert_close(codes.sum(1), torch.ones(64), atol=1e-4, rtol=0)


def test_runs_outside_autocast():
    scores = unit_scores(32, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        codes = sinkhorn(scores, distributed=False)
    assert codes.dtype == torch.float32
    torch.testing.assert_close(codes.double(), reference_sinkhorn(scores), atol=1e-6, rtol=1e-5)


def test_constant_scores_give_uniform_codes():
    codes = sinkhorn(torch.zeros(8, 4), distributed=False)
    torch.testing.assert_close(codes, torch.full((8, 4), 0.25))


def test_paper_size_matches_float64_reference():
    # The size of the speed target (ImageNet batch 4096, 3000 prototypes).
    scores = unit_scores(4096, 3000, dim=128)
    codes = sinkhorn(scores, distributed=False)
    assert (codes.double() - reference_sinkhorn(scores)).abs().max() <= 1e-5


def test_batched_problems_are_independent():
    # (A, B, K): each crop for assignment balanced on its own, in one call.
    stacked = torch.stack([unit_scores(64, 20, seed=s) for s in range(3)])
    codes = sinkhorn(stacked, distributed=False)
    for a in range(3):
        torch.testing.assert_close(codes[a], sinkhorn(stacked[a], distributed=False))


def test_many_iterations_stay_finite():
    codes = sinkhorn(unit_scores(512, 16), iterations=1000, distributed=False)
    assert torch.isfinite(codes).all()


def test_rejects_wrong_rank():
    with pytest.raises(ValueError, match=r"\(B, K\) or \(A, B, K\)"):
        sinkhorn(torch.zeros(8), distributed=False)
