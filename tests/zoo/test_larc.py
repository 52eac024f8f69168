"""LARC against transcriptions of the two references it follows: apex's ``LARC`` wrapping
``torch.optim.SGD`` (the official SwAV optimiser) and solo-learn's ``LARS``."""

import copy

import pytest
import torch
from torch import nn

from swav_plugin.zoo.larc import LARC

LRS = (4.8, 2.4, 0.6, 0.0, 1.2)  # a schedule's changing rates, 0 included (warm-up start)


def apex_larc_sgd_step(sgd, trust_coefficient, clip, eps=1e-8):
    """One step of apex's ``LARC(sgd, trust_coefficient, clip, eps)``, transcribed from
    ``apex/parallel/LARC.py``: it takes the weight decay over from the wrapped optimizer, adds
    it to and scales each gradient whose parameter and gradient norms are both non-zero, then
    runs the wrapped step with weight decay 0 and gives the weight decay back."""
    with torch.no_grad():
        decays = []
        for group in sgd.param_groups:
            decay = group.get("weight_decay", 0)
            decays.append(decay)
            group["weight_decay"] = 0
            for p in group["params"]:
                if p.grad is None:
                    continue
                param_norm, grad_norm = torch.norm(p.data), torch.norm(p.grad.data)
                if param_norm != 0 and grad_norm != 0:
                    rate = trust_coefficient * param_norm / (
                        grad_norm + param_norm * decay + eps)
                    if clip:
                        rate = min(rate / group["lr"], 1)
                    p.grad.data += decay * p.data
                    p.grad.data *= rate
    sgd.step()
    for group, decay in zip(sgd.param_groups, decays, strict=True):
        group["weight_decay"] = decay


class SoloLearnLARS:
    """solo-learn's ``LARS`` (``solo/utils/lars.py``) step, transcribed, for one group without
    dampening or Nesterov: the rate ``eta ‖p‖ / (‖g‖ + wd ‖p‖ + eps)``, optionally clipped at
    the learning rate, scales the weight-decayed gradient; one-dimensional parameters are left
    out of both with ``exclude_bias_n_norm``; then SGD's momentum."""

    def __init__(self, params, momentum, weight_decay, eta, clip_lr, exclude_bias_n_norm,
                 eps=1e-8):
        self.params, self.buffers = list(params), {}
        self.momentum, self.weight_decay, self.eta, self.eps = momentum, weight_decay, eta, eps
        self.clip_lr, self.exclude = clip_lr, exclude_bias_n_norm

    @torch.no_grad()
    def step(self, lr):
        for p in self.params:
            if p.grad is None:
                continue
            d_p = p.grad
            p_norm, g_norm = torch.norm(p.data), torch.norm(p.grad.data)
            if (p.ndim != 1 or not self.exclude) and p_norm != 0 and g_norm != 0:
                rate = p_norm / (g_norm + p_norm * self.weight_decay + self.eps)
                rate *= self.eta
                if self.clip_lr:
                    rate = min(rate / lr, 1)
                d_p = d_p.add(p, alpha=self.weight_decay)
                d_p *= rate
            if id(p) not in self.buffers:
                self.buffers[id(p)] = torch.clone(d_p).detach()
            else:
                self.buffers[id(p)].mul_(self.momentum).add_(d_p)
            p.add_(self.buffers[id(p)], alpha=-lr)


class Net(nn.Module):
    """Linear, BatchNorm (zero bias: a zero parameter norm at the first step), a parameter
    whose gradient is zero, and one that never gets a gradient."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
        self.unused_in_loss = nn.Parameter(torch.randn(5))
        self.without_grad = nn.Parameter(torch.randn(4))

    def loss(self, x):
        return self.body(x).pow(2).mean() + 0 * self.unused_in_loss.sum()


def train(step, net, lr_setter=None):
    """Five steps on fixed random batches; ``step(lr)`` applies the optimizer."""
    generator = torch.Generator().manual_seed(1)
    for lr in LRS:
        net.zero_grad(set_to_none=True)
        net.loss(torch.randn(16, 6, generator=generator)).backward()
        if lr_setter is not None:
            lr_setter(lr)
        step(lr)
    return {name: p.detach().clone() for name, p in net.named_parameters()}


def with_lr(optimizer):
    def set_lr(lr):
        for group in optimizer.param_groups:
            group["lr"] = lr
    return set_lr


def make_net():
    torch.manual_seed(0)
    return Net()


def assert_same(ours, theirs):
    assert ours.keys() == theirs.keys()
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], atol=1e-6, rtol=1e-6, msg=name)


@pytest.mark.parametrize("clip", [False, True])
def test_equals_apex_larc_over_sgd(clip):
    reference = make_net()
    sgd = torch.optim.SGD(reference.parameters(), lr=LRS[0], momentum=0.9, weight_decay=1e-4)
    theirs = train(lambda lr: apex_larc_sgd_step(sgd, 0.001, clip), reference, with_lr(sgd))
    net = make_net()
    larc = LARC(net.parameters(), lr=LRS[0], momentum=0.9, weight_decay=1e-4,
                trust_coefficient=0.001, clip=clip)
    ours = train(lambda lr: larc.step(), net, with_lr(larc))
    assert_same(ours, theirs)
    # the reference really took the zero-norm and zero-gradient branches and moved everything
    start = make_net()
    assert not torch.equal(ours["body.1.bias"], start.body[1].bias)
    assert torch.equal(ours["without_grad"], start.without_grad)


@pytest.mark.parametrize("clip", [False, True])
def test_equals_solo_learn_lars_without_bias_and_norm(clip):
    reference = make_net()
    solo = SoloLearnLARS(reference.parameters(), momentum=0.9, weight_decay=1e-4, eta=0.02,
                         clip_lr=clip, exclude_bias_n_norm=True)
    theirs = train(solo.step, reference)
    net = make_net()
    larc = LARC(net.parameters(), lr=LRS[0], momentum=0.9, weight_decay=1e-4,
                trust_coefficient=0.02, clip=clip, exclude_bias_norm=True)
    ours = train(lambda lr: larc.step(), net, with_lr(larc))
    assert_same(ours, theirs)


def test_every_parameter_moves_by_eta_times_lr_at_the_first_step():
    # The paper's optimiser adapts batch-norm weights and biases too: each moves by about
    # η · lr of its norm, where plain SGD would move a bias by lr × its gradient.
    net = make_net()
    with torch.no_grad():
        net.body[1].bias.normal_()  # non-zero, so that the ratio is defined
    before = copy.deepcopy(net)
    larc = LARC(net.parameters(), lr=4.8, momentum=0.9, weight_decay=0.0)
    net.loss(torch.randn(16, 6, generator=torch.Generator().manual_seed(1))).backward()
    grad_norms = {name: p.grad.norm() for name, p in net.named_parameters() if p.grad is not None}
    larc.step()
    for (name, p), q in zip(net.named_parameters(), before.parameters(), strict=True):
        if name in ("unused_in_loss", "without_grad"):
            continue
        moved = (p - q).norm() / q.norm()
        # ε matters only where the gradient is nearly zero (the bias before the BatchNorm)
        expected = 0.001 * 4.8 * grad_norms[name] / (grad_norms[name] + 1e-8)
        assert moved.item() == pytest.approx(expected.item(), rel=1e-4), name


def test_excluded_parameters_take_the_plain_sgd_step():
    net = make_net()
    larc = LARC(net.parameters(), lr=0.5, momentum=0.0, weight_decay=0.1,
                exclude_bias_norm=True)
    net.loss(torch.randn(16, 6, generator=torch.Generator().manual_seed(1))).backward()
    bias_before, grad = net.body[0].bias.detach().clone(), net.body[0].bias.grad.clone()
    larc.step()
    torch.testing.assert_close(net.body[0].bias.detach(), bias_before - 0.5 * grad,
                               atol=0, rtol=0)


def test_state_dict_resumes_the_momentum_exactly():
    straight_net = make_net()
    straight = LARC(straight_net.parameters(), lr=1.0, weight_decay=1e-4)
    expected = train(lambda lr: straight.step(), straight_net, with_lr(straight))

    net = make_net()
    first = LARC(net.parameters(), lr=1.0, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(1)
    batches = [torch.randn(16, 6, generator=generator) for _ in LRS]
    for x, lr in zip(batches[:2], LRS[:2], strict=True):
        net.zero_grad(set_to_none=True)
        net.loss(x).backward()
        with_lr(first)(lr)
        first.step()
    saved = copy.deepcopy(first.state_dict())
    resumed = LARC(net.parameters(), lr=1.0, weight_decay=1e-4)
    resumed.load_state_dict(saved)
    for x, lr in zip(batches[2:], LRS[2:], strict=True):
        net.zero_grad(set_to_none=True)
        net.loss(x).backward()
        with_lr(resumed)(lr)
        resumed.step()
    assert_same({n: p.detach() for n, p in net.named_parameters()}, expected)


def test_a_step_reads_nothing_back_from_the_device():
    # meta tensors hold no values: a comparison read in Python (``if norm != 0``) raises
    params = [nn.Parameter(torch.empty(4, 3, device="meta")),
              nn.Parameter(torch.empty(3, device="meta"))]
    for p in params:
        p.grad = torch.empty_like(p)
    for options in ({}, {"clip": True}, {"exclude_bias_norm": True}):
        larc = LARC(params, lr=0.1, weight_decay=1e-6, **options)
        larc.step()
        larc.step()  # with momentum buffers
        assert all(larc.state[p]["momentum_buffer"].device.type == "meta" for p in params)


@pytest.mark.parametrize(("options", "message"), [
    ({"lr": -1.0}, "lr must be 0 or more"),
    ({"lr": 0.1, "momentum": -0.5}, "momentum must be 0 or more"),
    ({"lr": 0.1, "weight_decay": -1e-6}, "weight_decay must be 0 or more"),
    ({"lr": 0.1, "trust_coefficient": 0.0}, "trust_coefficient must be positive"),
])
def test_bad_settings_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        LARC([nn.Parameter(torch.zeros(2))], **options)
