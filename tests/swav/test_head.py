import pytest
import torch
from torch import nn

from swav_plugin.swav.head import SwAVHead


def test_projection_layers_and_unit_norm_output():
    head = SwAVHead(input_dim=12, hidden_dim=20, output_dim=8, num_prototypes=5)
    kinds = [type(m) for m in head.projection]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    z, scores = head(torch.randn(6, 12))
    assert z.shape == (6, 8)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(6))
    assert len(scores) == 1 and scores[0].shape == (6, 5)
    torch.testing.assert_close(scores[0], z @ head.prototypes[0].weight.t())


def test_the_input_width_is_required_outside_a_method_recipe():
    with pytest.raises(ValueError, match="input_dim is required: the width of the backbone"):
        SwAVHead(hidden_dim=0, output_dim=8, num_prototypes=5)


def test_hidden_dim_zero_is_a_linear_projection():
    head = SwAVHead(input_dim=12, hidden_dim=0, output_dim=8, num_prototypes=5)
    assert isinstance(head.projection, nn.Linear)
    assert head.projection.in_features == 12 and head.projection.out_features == 8


def test_prototypes_have_no_bias_and_start_unit_norm():
    head = SwAVHead(input_dim=4, hidden_dim=0, output_dim=8, num_prototypes=[5, 7])
    assert [p.bias for p in head.prototypes] == [None, None]
    for p in head.prototypes:
        torch.testing.assert_close(p.weight.norm(dim=1), torch.ones(p.out_features))


def test_multi_head_scores():
    head = SwAVHead(input_dim=4, hidden_dim=0, output_dim=8, num_prototypes=[5, 7])
    _, scores = head(torch.randn(3, 4))
    assert [s.shape for s in scores] == [(3, 5), (3, 7)]
    assert head.num_prototypes == [5, 7]


def test_normalize_prototypes():
    head = SwAVHead(input_dim=4, hidden_dim=0, output_dim=8, num_prototypes=5)
    with torch.no_grad():
        head.prototypes[0].weight.mul_(3.0)
    head.normalize_prototypes()
    torch.testing.assert_close(head.prototypes[0].weight.norm(dim=1), torch.ones(5))


def test_drop_prototype_grads_only_before_the_configured_step():
    head = SwAVHead(input_dim=4, hidden_dim=0, output_dim=8, num_prototypes=5,
                    freeze_prototypes_iters=2)
    for step, dropped in ((0, True), (1, True), (2, False), (3, False)):
        head.zero_grad()
        head(torch.randn(3, 4))[1][0].sum().backward()
        assert head.drop_prototype_grads(step) is dropped
        assert (head.prototypes[0].weight.grad is None) is dropped
        assert head.projection.weight.grad is not None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_dim": 0}, "input_dim must be positive"),
        ({"hidden_dim": -1}, "hidden_dim must be 0"),
        ({"output_dim": 0}, "output_dim must be positive"),
        ({"num_prototypes": 0}, "num_prototypes must be positive"),
        ({"num_prototypes": []}, "num_prototypes must be positive"),
        ({"freeze_prototypes_iters": -1}, "freeze_prototypes_iters must be 0 or more"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SwAVHead(**{"input_dim": 8, **kwargs})
