import copy
from typing import Annotated

import pytest
import yaml
from torch import nn

from swav_plugin.host.errors import ConfigError
from swav_plugin.host.recipe import (
    apply_overrides,
    build_component,
    call_with_kwargs,
    component_kinds,
    read_recipe,
    resolve_kwargs,
)
from swav_plugin.host.registry import BACKBONES, HEADS
from swav_plugin.host.resolve import load_recipe, resolve


def write(tmp_path, recipe, name="recipe.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(recipe) if not isinstance(recipe, str) else recipe)
    return path


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


def test_bare_method_name_is_a_component_node(tiny_recipe):
    recipe = copy.deepcopy(tiny_recipe)
    method = recipe.pop("method")
    recipe["method"] = "swav"
    apply_overrides(recipe, [f"method.backbone={method['backbone']['name']}",
                             "method.head.name=swav_head", "method.head.input_dim=512"])
    resolved = resolve(recipe)
    assert resolved["method"]["name"] == "swav"
    assert resolved["method"]["backbone"] == {"name": "resnet18_cifar", "zero_init_residual": False,
                                              "stem_padding": 1}


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


def test_unknown_key_names_key_and_valid_keys(tiny_recipe):
    tiny_recipe["method"]["head"]["num_protoypes"] = 10
    with pytest.raises(ConfigError) as err:
        resolve(tiny_recipe)
    message = str(err.value)
    assert message.startswith(
        "method.head: unknown key 'num_protoypes'; did you mean 'num_prototypes'? valid keys of "
        "swav_plugin.swav.head.SwAVHead: input_dim, hidden_dim, output_dim, num_prototypes"
    )
    assert "\n" not in message


def test_unknown_section(tiny_recipe):
    tiny_recipe["trainr"] = {}
    with pytest.raises(ConfigError, match="recipe: unknown key 'trainr'; did you mean 'trainer'"):
        resolve(tiny_recipe)


def test_unknown_component_name_suggests(tiny_recipe):
    tiny_recipe["method"]["backbone"]["name"] = "resnet18_cifr"
    with pytest.raises(ConfigError, match=r"method.backbone: unknown backbone 'resnet18_cifr'; "
                                          r"did you mean 'resnet18_cifar'\?"):
        resolve(tiny_recipe)


def test_unknown_method(tiny_recipe):
    tiny_recipe["method"]["name"] = "swov"
    with pytest.raises(ConfigError, match="method: unknown method 'swov'; did you mean 'swav'"):
        resolve(tiny_recipe)


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("data", "batch_size", "big", "data.batch_size: expected int, got 'big' (str)"),
        ("data", "batch_size", 1.5, "data.batch_size: expected int, got 1.5 (float)"),
        ("data", "pin_memory", "yes please", "expected bool"),
        ("method", "optimizer", "adam", "method.optimizer: expected one of 'lars', 'sgd'"),
        ("trainer", "max_epochs", "five", "trainer.max_epochs: expected int or None"),
    ],
)
def test_wrong_type_is_named(tiny_recipe, section, key, value, expected):
    tiny_recipe[section][key] = value
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        resolve(tiny_recipe)


def test_impossible_values_are_reported_at_build_time(tiny_recipe):
    tiny_recipe["method"]["loss"]["epsilon"] = 0
    resolved = resolve(tiny_recipe)
    with pytest.raises(ConfigError, match="method.loss: epsilon must be positive, got 0"):
        build_component(resolved["method"], "method")


def test_runner_owned_trainer_keys_are_refused(tiny_recipe):
    tiny_recipe["trainer"]["default_root_dir"] = "/tmp/x"
    with pytest.raises(ConfigError, match="trainer.default_root_dir cannot be set in a recipe"):
        resolve(tiny_recipe)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_recipe(tmp_path / "nope.yaml")


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


def test_load_recipe_reads_overrides_and_resolves(tmp_path, tiny_recipe):
    path = write(tmp_path, tiny_recipe)
    resolved = load_recipe(path, ["method.head.num_prototypes=25"])
    assert resolved["method"]["head"]["num_prototypes"] == 25


def test_a_parameter_is_a_component_node_by_its_annotation_not_its_name():
    built = {}

    def widget(encoder: Annotated[nn.Module, BACKBONES], backbone: str = "plain",
               head: Annotated[nn.Module, HEADS] | None = None) -> None:
        built.update(encoder=encoder, backbone=backbone, head=head)

    assert component_kinds(widget) == {"encoder": "backbone", "head": "head"}
    resolved = resolve_kwargs(widget, {"encoder": "resnet18_cifar", "backbone": "resnet18"}, "w")
    assert resolved["encoder"]["name"] == "resnet18_cifar" and resolved["backbone"] == "resnet18"
    call_with_kwargs(widget, resolved, "w")
    assert isinstance(built["encoder"], nn.Module)  # built from its registry
    assert built["backbone"] == "resnet18" and built["head"] is None  # a plain value, as given
    with pytest.raises(ConfigError, match=r"^w\.encoder: unknown backbone 'nope'"):
        resolve_kwargs(widget, {"encoder": "nope"}, "w")


def test_the_data_is_seeded_by_run_seed_alone(tiny_recipe):
    assert "seed" not in resolve(tiny_recipe)["data"]  # the runner passes run.seed
    tiny_recipe["data"]["seed"] = 3
    with pytest.raises(ConfigError, match=r"^data\.seed: the data is seeded by run\.seed; set "
                                          r"run\.seed instead$"):
        resolve(tiny_recipe)
