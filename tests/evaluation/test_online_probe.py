"""The online linear probe: logged every epoch, saved in checkpoints, and training is the same
without it."""

import types

import pytest
import torch

from swav_plugin.evaluation.online_probe import OnlineLinearProbe
from swav_plugin.host.checkpoint_files import read_checkpoint
from swav_plugin.host.errors import ConfigError
from tests.evaluation.test_monitor import train

PROBE = {"name": "online_linear_probe", "num_classes": 10, "lr": 0.5}


def test_probe_logs_each_epoch_and_leaves_training_unchanged(tiny_recipe, tmp_path):
    plain, _ = train(tiny_recipe, tmp_path, "plain", [])
    probed, rows = train(tiny_recipe, tmp_path, "probed", [PROBE])
    top1 = [float(r["probe/top1"]) for r in rows if r.get("probe/top1")]
    assert len(top1) == 2 and all(0 <= v <= 100 for v in top1)
    # bit-identical parameters and buffers: the probe drew from no global generator and sent
    # no gradient into the backbone
    assert plain.keys() == probed.keys()
    for name in plain:
        assert torch.equal(plain[name], probed[name]), name
    saved = read_checkpoint(tmp_path / "probed" / "checkpoints" / "last.ckpt")
    (state,) = [v for k, v in saved["callbacks"].items() if "OnlineLinearProbe" in k]
    assert state["classifier"]["weight"].shape == (10, 512)  # resnet18_cifar's width
    assert state["optimizer"]["state"]  # momentum buffers, for a resumed run to continue
    fresh = OnlineLinearProbe(num_classes=10)
    fresh.load_state_dict(state)  # before setup: kept until the classifier exists
    module = types.SimpleNamespace(backbone=types.SimpleNamespace(num_features=512),
                                   device=torch.device("cpu"))
    fresh.setup(None, module, "fit")
    assert torch.equal(fresh.classifier.weight, state["classifier"]["weight"])


class _Strategy:
    @staticmethod
    def reduce(tensor, reduce_op):
        return tensor


def _probe():
    probe = OnlineLinearProbe(num_classes=3, lr=1.0)
    module = types.SimpleNamespace(backbone=types.SimpleNamespace(num_features=4),
                                   device=torch.device("cpu"))
    probe.setup(None, module, "fit")
    return probe, types.SimpleNamespace(strategy=_Strategy())


def test_unlabelled_samples_are_left_out():
    probe, trainer = _probe()
    before = probe.classifier.weight.detach().clone()
    features = torch.randn(4, 4)
    probe.on_train_batch_end(trainer, None, {"loss": None, "features": features}, (None,
                             torch.full((4,), -1)), 0)
    assert torch.equal(probe.classifier.weight, before)  # nothing labelled: nothing learnt
    assert probe._counts.tolist() == [0.0, 0.0]
    probe.on_train_batch_end(trainer, None, {"loss": None, "features": features},
                             (None, torch.tensor([0, 1, -1, 2])), 0)
    assert not torch.equal(probe.classifier.weight, before) and probe._counts[1] == 3


def test_a_method_without_features_is_named():
    probe, trainer = _probe()
    with pytest.raises(ConfigError, match="training_step returns {'loss', 'features'}"):
        probe.on_train_batch_end(trainer, None, torch.tensor(1.0), (None, torch.zeros(2)), 0)


@pytest.mark.parametrize(("key", "value"), [("num_classes", 1), ("lr", 0.0)])
def test_bad_settings_are_refused(key, value):
    with pytest.raises(ValueError, match=key):
        OnlineLinearProbe(**{"num_classes": 10, key: value})


def test_a_class_count_other_than_the_data_sets_is_refused(tiny_recipe, tmp_path):
    with pytest.raises(ConfigError, match="num_classes is 7, but the training data set has 10 "
                                          "classes; set num_classes: 10"):
        train(tiny_recipe, tmp_path, "wrong", [{**PROBE, "num_classes": 7}])
