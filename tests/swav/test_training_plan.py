import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from swav_plugin.swav.training_plan import (
    TrainingPlan,
    build_optimizer,
    build_scheduler,
    check_optimisation_args,
    plan_of_trainer,
    steps_per_epoch,
)
from swav_plugin.zoo.larc import LARC

VALID = dict(lr=0.6, lr_batch_size=256, final_lr_ratio=0.001, warmup_start_ratio=0.0,
             warmup_epochs=10.0, weight_decay=1e-6, momentum=0.9)


def plan(**changes):
    kwargs = dict(batch_size=64, world_size=4, steps_per_epoch=10, total_steps=100, lr=0.6,
                  lr_batch_size=256, warmup_epochs=2.5)
    return TrainingPlan.derive(**{**kwargs, **changes})


def test_the_lr_scales_with_the_global_batch_and_the_warm_up_is_in_epochs():
    assert plan() == TrainingPlan(global_batch=256, lr=0.6, steps_per_epoch=10,
                                  total_steps=100, warmup_steps=25)
    assert plan(world_size=64, lr=0.3).lr == pytest.approx(4.8)  # the paper: 0.3 per 256
    assert plan(batch_size=32, world_size=1).lr == pytest.approx(0.075)


def test_the_warm_up_never_outlasts_the_run():
    assert plan(total_steps=20).warmup_steps == 20


def test_the_summary_states_the_scaling_and_the_frozen_steps():
    line = plan(world_size=2).summary(world_size=2, base_lr=0.6, lr_batch_size=256,
                                      frozen_steps=313)
    assert line == ("SwAV: global batch 128 (64 per device x 2), lr 0.6 x 128/256 = 0.3, "
                    "25 warm-up of 100 steps, prototypes frozen for 313 steps")


@pytest.mark.parametrize(("batches", "total", "max_epochs", "expected"), [
    (12, 100, 5, 12),  # a loader with a length: its batches
    (math.inf, 100, 4, 25),  # without one: an even share of the total
    (math.inf, 100, None, 100),  # no epoch limit: one epoch
    (0, 0, 1, 1),  # never 0: the warm-up is counted in epochs of it
])
def test_steps_per_epoch(batches, total, max_epochs, expected):
    assert steps_per_epoch(batches, total, max_epochs) == expected


def fake_trainer(datamodule_batch, loader_batch):
    return SimpleNamespace(
        estimated_stepping_batches=60, num_training_batches=20, max_epochs=3,
        datamodule=SimpleNamespace(batch_size=datamodule_batch) if datamodule_batch else None,
        train_dataloader=SimpleNamespace(batch_size=loader_batch),
    )


@pytest.mark.parametrize(("datamodule_batch", "global_batch"), [(32, 64), (None, 16)])
def test_plan_of_trainer_takes_the_datamodules_batch_else_the_loaders(datamodule_batch,
                                                                      global_batch):
    derived = plan_of_trainer(fake_trainer(datamodule_batch, 8), world_size=2, lr=0.4,
                              lr_batch_size=32, warmup_epochs=0.5)
    assert derived == TrainingPlan(global_batch=global_batch, lr=0.4 * global_batch / 32,
                                   steps_per_epoch=20, total_steps=60, warmup_steps=10)


@pytest.mark.parametrize(("changes", "message"), [
    ({"lr": 0}, "lr must be positive, got 0"),
    ({"lr_batch_size": -1}, "lr_batch_size must be positive, got -1"),
    ({"final_lr_ratio": 1.5}, "final_lr_ratio must be in \\[0, 1\\], got 1.5"),
    ({"warmup_start_ratio": -0.1}, "warmup_start_ratio must be in \\[0, 1\\], got -0.1"),
    ({"warmup_epochs": -1}, "warmup_epochs must be 0 or more, got -1"),
    ({"weight_decay": -1e-6}, "weight_decay must be 0 or more"),
    ({"momentum": -0.9}, "momentum must be 0 or more"),
])
def test_out_of_range_values_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        check_optimisation_args(**{**VALID, **changes})


def test_in_range_values_pass():
    check_optimisation_args(**{**VALID, "final_lr_ratio": 0.0, "warmup_start_ratio": 1.0,
                               "warmup_epochs": 0, "weight_decay": 0, "momentum": 0})


def model():
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2, bias=False))


OPTIONS = dict(lr=0.3, momentum=0.8, weight_decay=1e-4, trust_coefficient=0.02)


def test_lars_is_larc_over_every_parameter_with_its_options():
    net = model()
    optimizer = build_optimizer(net.parameters(), "lars", clip=True, exclude_bias_norm=True,
                                **OPTIONS)
    assert type(optimizer) is LARC
    (group,) = optimizer.param_groups
    assert [id(p) for p in group["params"]] == [id(p) for p in net.parameters()]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.3, 0.8, 1e-4)
    assert group["trust_coefficient"] == 0.02 and group["clip"] and group["exclude_bias_norm"]


@pytest.mark.parametrize(("name", "kind"), [("sgd", torch.optim.SGD),
                                          ("adamw", torch.optim.AdamW)])
def test_sgd_and_adamw_put_biases_and_norms_in_a_group_without_decay(name, kind):
    net = model()
    optimizer = build_optimizer(net.parameters(), name, clip=False, exclude_bias_norm=True,
                                **OPTIONS)
    assert type(optimizer) is kind
    decayed, free = optimizer.param_groups
    assert [p.ndim for p in decayed["params"]] == [2, 2]
    assert [p.ndim for p in free["params"]] == [1, 1, 1]  # linear bias, norm weight and bias
    assert (decayed["weight_decay"], free["weight_decay"]) == (1e-4, 0.0)
    assert decayed["lr"] == free["lr"] == 0.3


def test_sgd_decays_every_parameter_in_one_group_by_default():
    net = model()
    optimizer = build_optimizer(net.parameters(), "sgd", clip=False, exclude_bias_norm=False,
                                **OPTIONS)
    (group,) = optimizer.param_groups
    assert len(group["params"]) == 5 and group["momentum"] == 0.8
    assert group["weight_decay"] == 1e-4


def test_the_schedule_warms_up_linearly_then_decays_along_a_cosine_to_the_final_ratio():
    parameter = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=2.0)
    scheduled = TrainingPlan(global_batch=256, lr=2.0, steps_per_epoch=2, total_steps=6,
                             warmup_steps=2)
    scheduler = build_scheduler(optimizer, scheduled, final_lr_ratio=0.01,
                                warmup_start_ratio=0.2)
    lrs = []
    for _ in range(6):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # warm-up from 0.2 of the peak, reaching it at its last step; then 4 cosine steps
    cosine = [0.01 + 0.99 * (1 + math.cos(math.pi * s / 3)) / 2 for s in range(4)]
    assert lrs == pytest.approx([2.0 * 0.6, 2.0] + [2.0 * c for c in cosine])
    assert lrs[-1] == pytest.approx(2.0 * 0.01)
