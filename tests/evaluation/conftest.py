"""Fixtures of the evaluation tests."""

import pytest

from swav_plugin.host.recipe import build_component
from swav_plugin.host.resolve import resolve


@pytest.fixture
def content(tiny_recipe):
    """What swav-train stores in a checkpoint of the tiny recipe (the weights untrained: no
    check depends on their values)."""
    recipe = resolve(tiny_recipe)
    return {"state_dict": build_component(recipe["method"], "method").state_dict(),
            "recipe": recipe}
