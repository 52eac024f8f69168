from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from swav_plugin.host.errors import ConfigError
from swav_plugin.host.registry import BACKBONES
from swav_plugin.swav.head import SwAVHead
from swav_plugin.swav.launch_checks import (
    backbone_width,
    check_batch,
    check_crops,
    check_launch,
    check_unit_norm,
)
from swav_plugin.swav.loss import SwAVLoss


def test_the_backbone_width_is_read_from_a_recipe_node_without_building_weights():
    assert backbone_width({"name": "resnet18_cifar"}, "method") == 512


def test_a_backbone_without_num_features_names_the_setting_to_give():
    BACKBONES.register("identity_for_launch_test")(nn.Identity)
    try:
        with pytest.raises(ConfigError, match="^method.head.input_dim is not set and the "
                           "backbone 'identity_for_launch_test' has no integer num_features"):
            backbone_width({"name": "identity_for_launch_test"}, "method")
    finally:
        BACKBONES.unregister("identity_for_launch_test")


def launch(*, width=16, input_dim=16, crops_for_assign=(0, 1), crop_sizes=(8, 8, 4),
           batch_size=32, world_size=1, queue_length=0, accumulate=1, num_prototypes=20):
    backbone = nn.Identity()
    backbone.num_features = width
    data = SimpleNamespace(transform=SimpleNamespace(crop_sizes=list(crop_sizes)),
                           batch_size=batch_size)
    return check_launch(
        backbone=backbone, head=SwAVHead(input_dim, 0, 4, num_prototypes),
        loss=SwAVLoss(crops_for_assign=crops_for_assign), queue_length=queue_length,
        datamodule=data, trainer={"accumulate_grad_batches": accumulate}, world_size=world_size,
    )


def test_a_launch_that_can_run_passes_and_has_its_batch_checked():
    assert launch() is True


def test_the_batch_waits_for_a_known_world_size_and_batch_size():
    assert launch(world_size=None, num_prototypes=1000) is False
    assert check_launch(backbone=nn.Identity(), head=SwAVHead(16, 0, 4, 1000), loss=SwAVLoss(),
                        queue_length=0, datamodule=None, trainer={}, world_size=4) is False


@pytest.mark.parametrize(("changes", "message"), [
    ({"width": 2048}, "^the backbone outputs 2048 features but head.input_dim is 16; "
                      "set method.head.input_dim=2048$"),
    ({"accumulate": 4}, "^gradient accumulation is on \\(trainer.accumulate_grad_batches=4\\)"),
    ({"crops_for_assign": (0, 3)}, "^method.loss: crops_for_assign=\\[0, 3\\] but there are "
                                   "only 3 crops"),
    ({"crop_sizes": (8,), "crops_for_assign": (0,)}, "^method.loss: SwAV needs at least 2 "
                                                     "crops per image"),
    ({"num_prototypes": 33}, "^global batch 32 \\+ queue 0 < 33 prototypes"),
])
def test_a_launch_that_cannot_run_is_refused_in_one_line(changes, message):
    with pytest.raises(ConfigError, match=message):
        launch(**changes)


def test_the_first_failing_check_is_the_one_reported():
    with pytest.raises(ConfigError, match="^the backbone outputs"):
        launch(width=8, accumulate=2, num_prototypes=1000)


def test_each_ranks_queue_must_hold_a_per_device_batch():
    check_batch(batch_size=32, world_size=4, queue_length=128, num_prototypes=[10])
    with pytest.raises(ConfigError, match="^method.queue.length=120 holds 30 embeddings per "
                       "rank, fewer than the per-device batch of 32; raise method.queue.length "
                       "to at least 128$"):
        check_batch(batch_size=32, world_size=4, queue_length=120, num_prototypes=[10])


def test_the_equipartition_needs_as_many_samples_as_prototypes_in_every_set():
    check_batch(batch_size=32, world_size=2, queue_length=64, num_prototypes=[128, 3])
    with pytest.raises(ConfigError, match="global batch 64 \\+ queue 64 < 129 prototypes"):
        check_batch(batch_size=32, world_size=2, queue_length=64, num_prototypes=[3, 129])


def test_uint8_crops_are_refused_and_float_crops_pass():
    check_crops([torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 4, 4)])
    with pytest.raises(ConfigError, match="^the crops arrive as torch.uint8, not normalised"):
        check_crops([torch.zeros(2, 3, 8, 8, dtype=torch.uint8)])


def test_unit_norm_within_tolerance_passes():
    embeddings = F.normalize(torch.randn(8, 4), dim=1) * 1.005
    check_unit_norm(embeddings, F.normalize(torch.randn(5, 4), dim=1))


@pytest.mark.parametrize(("scale", "which"), [((3.0, 1.0), "embeddings"),
                                              ((1.0, 0.5), "prototypes")])
def test_vectors_off_the_unit_sphere_are_refused_with_their_norms(scale, which):
    embeddings = F.normalize(torch.randn(8, 4), dim=1) * scale[0]
    prototypes = F.normalize(torch.randn(5, 4), dim=1) * scale[1]
    norm = f"{max(scale) if which == 'embeddings' else min(scale):.3f}"
    with pytest.raises(ConfigError, match=f"^SwAV needs unit-norm {which} \\(norms range "
                       f"{norm}–{norm}\\); L2-normalise them in the head$"):
        check_unit_norm(embeddings, prototypes)
