"""Whole recipes resolved: every section checked, every default stated."""

import pytest
import yaml

from swav_plugin.host.errors import ConfigError
from swav_plugin.host.resolve import load_recipe, resolve


def test_resolve_fills_defaults_from_signatures(tiny_recipe):
    resolved = resolve(tiny_recipe)
    loss = resolved["method"]["loss"]
    assert loss == {
        "name": "swav_loss",
        "temperature": 0.1,
        "crops_for_assign": [0, 1],
        "epsilon": 0.05,
        "sinkhorn_iterations": 3,
        "distributed_sinkhorn": True,
    }
    assert resolved["method"]["optimizer"] == "lars"
    assert resolved["data"]["batch_size"] == 32
    assert resolved["data"]["drop_last"] is True
    assert resolved["run"]["seed"] == 0
    # the trainer section keeps only what the recipe states
    assert resolved["trainer"]["max_epochs"] == 1
    assert "precision" not in resolved["trainer"]


def test_resolved_recipe_is_plain_yaml_and_stable(tiny_recipe):
    resolved = resolve(tiny_recipe)
    assert resolve(yaml.safe_load(yaml.safe_dump(resolved))) == resolved


def test_unknown_section(tiny_recipe):
    tiny_recipe["trainr"] = {}
    with pytest.raises(ConfigError, match="recipe: unknown key 'trainr'; did you mean 'trainer'"):
        resolve(tiny_recipe)


@pytest.mark.parametrize(
    ("section", "value", "expected"),
    [
        ("data", [1, 2], "recipe section 'data' must be a mapping, got [1, 2]"),
        ("callbacks", "c" * 100, f"recipe section 'callbacks' must be a list of callbacks, got "
                                 f"'{'c' * 60}…' (100 characters)"),
    ],
)
def test_a_section_of_the_wrong_kind(tiny_recipe, section, value, expected):
    tiny_recipe[section] = value
    with pytest.raises(ConfigError) as err:
        resolve(tiny_recipe)
    assert str(err.value) == expected


def test_runner_owned_trainer_keys_are_refused(tiny_recipe):
    tiny_recipe["trainer"]["default_root_dir"] = "/tmp/x"
    with pytest.raises(ConfigError, match="trainer.default_root_dir cannot be set in a recipe"):
        resolve(tiny_recipe)


def test_load_recipe_reads_overrides_and_resolves(tmp_path, tiny_recipe):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe))
    resolved = load_recipe(path, ["method.head.num_prototypes=25"])
    assert resolved["method"]["head"]["num_prototypes"] == 25


def test_the_data_is_seeded_by_run_seed_alone(tiny_recipe):
    assert "seed" not in resolve(tiny_recipe)["data"]  # the runner passes run.seed
    tiny_recipe["data"]["seed"] = 3
    with pytest.raises(ConfigError, match=r"^data\.seed cannot be set in a recipe \(got 3\): the "
                                          r"data is seeded by run\.seed; set run\.seed instead$"):
        resolve(tiny_recipe)
