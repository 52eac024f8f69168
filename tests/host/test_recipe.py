"""Component nodes: resolved against their factories' signatures, then built."""

import copy
from typing import Annotated

import pytest
from torch import nn

from swav_plugin.host.errors import ConfigError
from swav_plugin.host.recipe import (
    build_component,
    call_with_kwargs,
    component_kinds,
    resolve_component,
    resolve_kwargs,
    unknown_key_message,
)
from swav_plugin.host.recipe_file import apply_overrides
from swav_plugin.host.registry import BACKBONES, HEADS
from swav_plugin.host.resolve import resolve


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


def test_unknown_key_that_is_not_a_string():
    assert unknown_key_message("data", 1, ["batch_size", "seed"], "Data") == (
        "data: unknown key 1 valid keys of Data: batch_size, seed")
    assert unknown_key_message("recipe", True, ["method"]) == (
        "recipe: unknown key True valid keys: method")


def test_keys_the_runner_owns_are_neither_valid_keys_nor_suggested():
    def widget(size: int = 1, seed: int | None = None) -> None:
        return None

    with pytest.raises(ConfigError) as err:
        resolve_kwargs(widget, {"sed": 1}, "w", owned={"seed": "set run.seed instead"})
    assert str(err.value) == (
        f"w: unknown key 'sed' valid keys of {widget.__module__}.{widget.__qualname__}: size")
    with pytest.raises(ConfigError, match=r"^w\.seed cannot be set in a recipe \(got 1\): set "):
        resolve_kwargs(widget, {"seed": 1}, "w", owned={"seed": "set run.seed instead"})


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
    ("name", "expected"),
    [
        (7, "q: a queue name must be a string, got 7"),
        (["swav_queue"] * 20, "q: a queue name must be a string, got ['swav_queue', "
                              "'swav_queue', 'swav_queue', 'swav_queue', 'swav_queue… (20 items)"),
        ("q" * 81, f"q: unknown queue '{'q' * 61}…' (81 characters) registered queues: "
                   "swav_queue"),
        ("swav_quue", "q: unknown queue 'swav_quue'; did you mean 'swav_queue'? registered "
                      "queues: swav_queue"),
    ],
)
def test_component_names_are_quoted_short(name, expected):
    with pytest.raises(ConfigError) as err:
        resolve_component({"name": name}, "queue", "q")
    assert str(err.value) == expected


def test_impossible_values_are_reported_at_build_time(tiny_recipe):
    tiny_recipe["method"]["loss"]["epsilon"] = 0
    resolved = resolve(tiny_recipe)
    with pytest.raises(ConfigError, match="method.loss: epsilon must be positive, got 0"):
        build_component(resolved["method"], "method")


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
