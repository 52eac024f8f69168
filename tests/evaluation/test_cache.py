"""The feature cache: reused when valid; stale, corrupt or truncated files are rebuilt."""

import pytest
import torch

from swav_plugin.evaluation.cache import FeatureCache, cache_key
from swav_plugin.host.atomic import file_digest


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
