from importlib.metadata import entry_points

from swav_plugin.host.plugins import GROUP, load_plugins


def test_entry_point_group_declares_swav_and_zoo():
    names = {ep.name: ep.value for ep in entry_points(group=GROUP)}
    assert names["swav"] == "swav_plugin.swav"
    assert names["zoo"] == "swav_plugin.zoo"


def test_load_plugins_is_idempotent():
    first = load_plugins()
    assert load_plugins() == first
    assert {"swav", "zoo"} <= set(first)
