import pytest
import torch

from swav_plugin.evaluation.cache import FeatureCache
from swav_plugin.evaluation.pretrained import load_pretrained
from swav_plugin.host.errors import ConfigError


def test_checkpoint_carrying_code_is_refused_and_nothing_runs(tmp_path, code_payload):
    payload, marker = code_payload
    ckpt = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "recipe": {}, "payload": payload}, ckpt)
    with pytest.raises(ConfigError, match="evil.ckpt' cannot be loaded safely"):
        load_pretrained(ckpt)
    assert not marker.exists()


def test_feature_cache_carrying_code_is_rebuilt_not_run(tmp_path, code_payload):
    payload, marker = code_payload
    cache = FeatureCache(tmp_path / "cache")
    path = cache.save("key", torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))
    torch.save({"features": payload}, path)
    with pytest.warns(UserWarning, match="extracting again"):
        assert cache.load("key") is None
    assert not marker.exists()
