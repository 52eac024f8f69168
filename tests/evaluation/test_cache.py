"""The feature cache: reused when valid; stale, corrupt or truncated files are rebuilt."""

import pytest
import torch

from swav_plugin.evaluation import features
from swav_plugin.evaluation.cache import FeatureCache, cache_key
from swav_plugin.evaluation.features import features_of, load_pretrained
from swav_plugin.host.atomic import file_digest
from swav_plugin.host.checkpoint_files import write_checkpoint
from swav_plugin.host.errors import ConfigError
from swav_plugin.host.resolve import resolve
from swav_plugin.host.runner import run


def tensors():
    return torch.randn(5, 3), torch.arange(5)


def test_round_trip_and_atomic_file(tmp_path):
    cache = FeatureCache(tmp_path)
    features, labels = tensors()
    path = cache.save("abc", features, labels)
    assert [p.name for p in tmp_path.iterdir()] == ["abc.pt"]  # no temporary left behind
    got_features, got_labels = cache.load("abc")
    assert torch.equal(got_features, features) and torch.equal(got_labels, labels)
    assert path == tmp_path / "abc.pt" and cache.load("missing") is None


def test_truncated_file_is_reported_and_not_used(tmp_path):
    cache = FeatureCache(tmp_path)
    path = cache.save("abc", *tensors())
    path.write_bytes(path.read_bytes()[:100])
    with pytest.warns(UserWarning, match="unreadable"):
        assert cache.load("abc") is None


def test_altered_values_fail_the_checksum(tmp_path):
    cache = FeatureCache(tmp_path)
    features, labels = tensors()
    path = cache.save("abc", features, labels)
    entry = torch.load(path, weights_only=True)
    entry["features"][0, 0] += 1.0
    torch.save(entry, path)
    with pytest.warns(UserWarning, match="corrupt"):
        assert cache.load("abc") is None


def test_a_file_written_for_another_key_is_stale(tmp_path):
    cache = FeatureCache(tmp_path)
    cache.save("abc", *tensors())
    (tmp_path / "abc.pt").rename(tmp_path / "xyz.pt")
    with pytest.warns(UserWarning, match="stale"):
        assert cache.load("xyz") is None


def test_keys_are_order_independent_and_digests_follow_content(tmp_path):
    assert cache_key({"a": 1, "b": [2]}) == cache_key({"b": [2], "a": 1})
    assert cache_key({"a": 1}) != cache_key({"a": 2})
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 10)
    first = file_digest(path, chunk_bytes=3)
    path.write_bytes(b"x" * 9 + b"y")
    assert file_digest(path) != first


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
