"""Feature extraction through the cache: reused for the same weights, split and output only."""

import pytest
import torch

from swav_plugin.evaluation import features
from swav_plugin.evaluation.features import features_of
from swav_plugin.evaluation.pretrained import load_pretrained
from swav_plugin.host.checkpoint_files import write_checkpoint
from swav_plugin.host.errors import ConfigError
from swav_plugin.host.resolve import resolve
from swav_plugin.host.runner import run


@pytest.fixture
def checkpoint(tiny_recipe, tmp_path):
    run(resolve(tiny_recipe))
    return tmp_path / "run" / "checkpoints" / "last.ckpt"


def test_second_extraction_comes_from_the_cache(checkpoint, tmp_path):
    pretrained = load_pretrained(checkpoint)
    calls = []
    pretrained.method.backbone.register_forward_hook(lambda *_: calls.append(1))
    first = features_of(pretrained, "test", "backbone", tmp_path / "cache")
    extracted = len(calls)
    assert extracted > 0
    second = features_of(pretrained, "test", "backbone", tmp_path / "cache")
    assert len(calls) == extracted  # nothing ran the second time
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    # another split, another output or the random initialisation: separate entries
    features_of(pretrained, "train", "backbone", tmp_path / "cache")
    features_of(pretrained, "test", "embeddings", tmp_path / "cache")
    random = load_pretrained(checkpoint, random_init=True)
    features_of(random, "test", "backbone", tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 4
    assert len(calls) > extracted


def test_a_retrained_checkpoint_does_not_reuse_old_features(checkpoint, tmp_path):
    pretrained = load_pretrained(checkpoint)
    old, _ = features_of(pretrained, "test", "backbone", tmp_path / "cache")
    state = torch.load(checkpoint, weights_only=True)
    for name, value in state["state_dict"].items():
        if name.startswith("backbone.") and value.is_floating_point():
            state["state_dict"][name] = value * 0.5
    write_checkpoint(state, checkpoint.resolve())  # as the runner writes it: with its digest
    new, _ = features_of(load_pretrained(checkpoint), "test", "backbone", tmp_path / "cache")
    assert not torch.allclose(old, new)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2


def test_raw_pixels_do_not_depend_on_the_weights_and_too_many_are_refused(
    checkpoint, tmp_path, monkeypatch
):
    trained, _ = features_of(load_pretrained(checkpoint), "test", "pixels", tmp_path / "cache")
    random = load_pretrained(checkpoint, random_init=True)
    again, _ = features_of(random, "test", "pixels", tmp_path / "cache")
    assert torch.equal(trained, again) and trained.shape[1] == 3 * 8 * 8
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1  # one entry for both
    monkeypatch.setattr(features, "PIXEL_FEATURES_LIMIT", 1000)
    with pytest.raises(ConfigError, match=r"the raw pixels of split 'train' would take .* GiB "
                                          r"as features \(1347 images x 192 values\)"):
        features_of(random, "train", "pixels", tmp_path / "cache")
