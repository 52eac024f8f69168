import pytest

from swav_plugin.host.errors import ConfigError
from swav_plugin.host.registry import REGISTRIES, Registry


@pytest.fixture
def registry():
    reg = Registry("widget")

    @reg.register("small_widget")
    def small_widget(size: int = 1):
        return ("small", size)

    @reg.register()
    def large_widget():
        return "large"

    return reg


def test_register_and_create(registry):
    assert registry.create("small_widget", size=3) == ("small", 3)
    assert registry.create("large_widget") == "large"
    assert "small_widget" in registry and "nope" not in registry
    assert list(registry) == ["large_widget", "small_widget"]
    assert len(registry) == 2
    assert "small_widget" in repr(registry)


def test_unknown_name_lists_valid_names_and_suggests_closest(registry):
    with pytest.raises(ConfigError) as err:
        registry.get("smal_widget")
    assert str(err.value) == (
        "unknown widget 'smal_widget'; did you mean 'small_widget'? "
        "registered widgets: large_widget, small_widget"
    )


def test_unknown_name_without_close_match(registry):
    with pytest.raises(ConfigError, match="unknown widget 'zzz' registered widgets: large_widget"):
        registry.get("zzz")


def test_duplicate_registration_names_the_first_owner(registry):
    with pytest.raises(ConfigError, match=r"already registered by .*small_widget"):

        @registry.register("small_widget")
        def other():
            return None


def test_unregister(registry):
    registry.unregister("large_widget")
    assert "large_widget" not in registry
    with pytest.raises(ConfigError):
        registry.unregister("large_widget")


def test_host_registries_cover_every_kind():
    assert set(REGISTRIES) >= {
        "method", "backbone", "head", "loss", "collate", "queue", "dataset", "transform"
    }


def test_plugins_registered_through_entry_points():
    # conftest loads the entry points; the host itself imports no plugin module.
    assert "swav" in REGISTRIES["method"]
    assert "swav_head" in REGISTRIES["head"]
    assert "swav_loss" in REGISTRIES["loss"]
    assert "swav_queue" in REGISTRIES["queue"]
    assert "multicrop_collate" in REGISTRIES["collate"]
    assert "digits" in REGISTRIES["dataset"]


def test_host_package_does_not_import_swav():
    import subprocess
    import sys

    code = (
        "import sys, swav_plugin.host; "
        "print(any(m.startswith('swav_plugin.swav') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
