"""Reading recipe files and applying command-line overrides."""

import os

import pytest
import yaml

from swav_plugin.host.errors import ConfigError
from swav_plugin.host.recipe_file import MAX_BYTES, apply_overrides, read_recipe
from swav_plugin.host.resolve import resolve


def write(tmp_path, recipe, name="recipe.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(recipe) if not isinstance(recipe, str) else recipe)
    return path


def test_overrides_parse_yaml_values(tiny_recipe):
    apply_overrides(
        tiny_recipe,
        ["trainer.max_epochs=5", "data.batch_size=64", "method.loss.crops_for_assign=[0]",
         "method.weight_decay=1e-6", "run.output_dir=elsewhere"],
    )
    resolved = resolve(tiny_recipe)
    assert resolved["trainer"]["max_epochs"] == 5
    assert resolved["data"]["batch_size"] == 64
    assert resolved["method"]["loss"]["crops_for_assign"] == [0]
    assert resolved["method"]["weight_decay"] == 1e-6  # YAML 1.1 reads 1e-6 as a string
    assert resolved["run"]["output_dir"] == "elsewhere"


@pytest.mark.parametrize("override", ["no_equals_sign", "=5"])
def test_malformed_override(tiny_recipe, override):
    with pytest.raises(ConfigError, match="must look like section.key=value"):
        apply_overrides(tiny_recipe, [override])


def test_override_through_a_scalar_is_an_error(tiny_recipe):
    with pytest.raises(ConfigError, match="'data.batch_size' is 32, not a mapping"):
        apply_overrides(tiny_recipe, ["data.batch_size.x=1"])


def test_override_value_that_is_not_yaml(tiny_recipe):
    with pytest.raises(ConfigError) as err:
        apply_overrides(tiny_recipe, ["data.batch_size=[1"])
    assert str(err.value) == "override 'data.batch_size=[1': the value is not valid YAML"


@pytest.mark.parametrize(
    ("override", "expected"),
    [("data.x={a: 1, a: 2}", "override 'data.x={a: 1, a: 2}' is not valid YAML: duplicate key 'a' "
                             "(YAML would silently keep the last one); keep one"),
     ("data.x=!!python/name:os.system ''",
      "override \"data.x=!!python/name:os.system ''\" is not valid YAML: the tag "
      "'!!python/name:os.system' is not allowed; a recipe holds plain YAML values only "
      "(mappings, lists, strings, numbers, booleans, null)")],
)
def test_override_value_that_no_recipe_holds_is_named(tiny_recipe, override, expected):
    with pytest.raises(ConfigError) as err:
        apply_overrides(tiny_recipe, [override])
    assert str(err.value) == expected


def test_override_changes_only_the_key_it_names_not_one_sharing_its_alias(tmp_path):
    path = write(tmp_path, "data: {transform: &t {name: multicrop, k: 1}, collate: *t}\n")
    recipe = apply_overrides(read_recipe(path), ["data.transform.k=2"])
    assert recipe["data"] == {"transform": {"name": "multicrop", "k": 2},
                              "collate": {"name": "multicrop", "k": 1}}


def test_override_key_may_be_as_deep_as_a_recipe_nests():
    recipe: dict = {}
    apply_overrides(recipe, [".".join(["k"] * 50) + "=1"])
    for _ in range(49):
        recipe = recipe["k"]
    assert recipe == {"k": 1}


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_recipe(tmp_path / "nope.yaml")


def test_a_directory_is_not_a_recipe(tmp_path):
    with pytest.raises(ConfigError) as err:
        read_recipe(tmp_path)
    assert str(err.value) == (f"recipe file '{tmp_path}' cannot be read: Is a directory; pass the "
                              "path of a readable YAML recipe")


def test_a_named_pipe_is_refused_without_waiting_for_a_writer(tmp_path):
    path = tmp_path / "recipe.yaml"
    os.mkfifo(path)
    with pytest.raises(ConfigError) as err:
        read_recipe(path)
    assert str(err.value) == f"recipe file '{path}' is not a file; pass the path of a YAML recipe"


def test_yaml_syntax_error_gives_line(tmp_path):
    path = write(tmp_path, "method: swav\ndata: {batch_size: 3\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d+"):
        read_recipe(path)


def test_python_object_tags_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = write(tmp_path, f"method: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_recipe(path)
    assert not marker.exists()


def test_anchors_aliases_and_merge_keys_still_read(tmp_path):
    path = write(tmp_path, "crop: &crop {size: 8, count: 2}\n"
                           "data: {crops: [*crop, {<<: *crop, size: 4}]}\n")
    assert read_recipe(path)["data"] == {"crops": [{"size": 8, "count": 2},
                                                   {"size": 4, "count": 2}]}


def test_a_recipe_of_exactly_the_largest_size_is_read(tmp_path):
    head = "method: swav\n# "
    path = tmp_path / "recipe.yaml"
    path.write_bytes((head + "é" * ((MAX_BYTES - len(head) - 1) // 2) + "\n").encode())
    assert path.stat().st_size == MAX_BYTES
    assert read_recipe(path) == {"method": "swav"}


def test_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_bytes("method: swav\n".encode("utf-8-sig"))
    assert read_recipe(path) == {"method": "swav"}
