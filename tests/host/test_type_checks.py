"""Recipe values checked against type hints."""

from pathlib import Path
from typing import Annotated, Literal

import pytest

from swav_plugin.host.errors import ConfigError
from swav_plugin.host.resolve import resolve
from swav_plugin.host.type_checks import check_type, coerce_number, is_plain, to_plain


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


@pytest.mark.parametrize(
    ("value", "annotation", "expected"),
    [
        (True, int, "k: expected int, got True (bool)"),
        ([1, "2"], list[int], "k: expected a list of int, got [1, '2'] (list)"),
        ([1], tuple[int, int], "k: expected a list of 2 (int, int), got [1] (list)"),
        ({"a": "b"}, dict[str, float], "k: expected a mapping, got {'a': 'b'} (dict)"),
        ("auto", Literal[1, 2] | None, "k: expected one of 1, 2 or None, got 'auto' (str)"),
        (3, Path, "k: expected Path, got 3 (int)"),
        ("w" * 100, float, f"k: expected float, got '{'w' * 60}…' (100 characters) (str)"),
        (1.5, Annotated[int, "metadata"], "k: expected int, got 1.5 (float)"),
        ("x", Annotated[list[int], "metadata"] | None,
         "k: expected a list of int or None, got 'x' (str)"),
    ],
)
def test_check_type_names_the_expected_type_and_the_value(value, annotation, expected):
    with pytest.raises(ConfigError) as err:
        check_type(value, annotation, "k")
    assert str(err.value) == expected


@pytest.mark.parametrize(
    ("value", "annotation"),
    [(1, float), (None, int | None), ([1, 2], tuple[int, ...]), ("runs", Path), ("x", object),
     (3, Annotated[int, "metadata"]), (None, Annotated[Path, "metadata"] | None)],
)
def test_check_type_accepts_what_fits(value, annotation):
    check_type(value, annotation, "k")


def test_coerce_number_reads_yaml_1_1_floats_only_where_a_float_fits():
    assert coerce_number("1e-6", float) == 1e-6
    assert coerce_number("1e-6", float | None) == 1e-6
    assert coerce_number("1e-6", str) == "1e-6"
    assert coerce_number("abc", float) == "abc"
    assert coerce_number("1e-6", Annotated[float, "metadata"]) == 1e-6


def test_plain_values_are_copied_as_yaml_writes_them():
    default = {"scale": (0.2, 1.0), "names": ["a"]}
    assert is_plain(default) and not is_plain({"p": Path("x")}) and not is_plain({1: "a"})
    plain = to_plain(default)
    assert plain == {"scale": [0.2, 1.0], "names": ["a"]}
    assert plain["names"] is not default["names"]
