"""The recipe YAML loader at its limits: the last value, level and integer in, the next out."""

import pytest
import yaml

from swav_plugin.host.recipe_yaml import (
    INT_MAX,
    INT_MIN,
    MAX_DEPTH,
    MAX_VALUES,
    InvalidYAML,
    RefusedYAML,
    count_values,
    load_yaml,
)


def refusal(text: str, depth: int = 0) -> str:
    with pytest.raises(RefusedYAML) as err:
        load_yaml(text, depth)
    mark = err.value.problem_mark
    return f"{mark.line + 1}:{mark.column + 1} {err.value.problem}"


def flat_list(values: int) -> str:
    return "[" + ", ".join(["1"] * (values - 1)) + "]"  # the list is a value too


def test_values_up_to_the_limit():
    assert len(load_yaml(flat_list(MAX_VALUES))) == MAX_VALUES - 1
    assert refusal(flat_list(MAX_VALUES + 1)) == (
        "1:29999 more than 10,000 values once its aliases are expanded")


@pytest.mark.parametrize(("uses", "accepted"), [(97, True), (98, False)])
def test_an_alias_counts_its_node_once_per_use(uses, accepted):
    # 5 values besides the uses (the mapping, two keys, b's list, a's list) and 100 in a's list
    text = f"a: &a {flat_list(101)}\nb: [{', '.join(['*a'] * uses)}]\n"
    if accepted:
        value = load_yaml(text)
        assert len(value["b"]) == uses and value["b"][0] is value["a"]
    else:
        assert refusal(text) == (
            "2:393 more than 10,000 values once its aliases are expanded")


def test_nesting_up_to_the_limit():
    nested = load_yaml("[" * MAX_DEPTH + "1" + "]" * MAX_DEPTH)
    for _ in range(MAX_DEPTH):
        nested = nested[0]
    assert nested == 1
    assert refusal("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)) == (
        "1:51 lists and mappings nested more than 50 deep")


def test_depth_counts_the_mappings_an_override_lands_in():
    assert load_yaml("[[1]]", depth=MAX_DEPTH - 2) == [[1]]
    assert refusal("[[1]]", depth=MAX_DEPTH - 1) == (
        "1:2 lists and mappings nested more than 50 deep")
    assert refusal("1", depth=MAX_DEPTH + 1) == "1:1 lists and mappings nested more than 50 deep"


@pytest.mark.parametrize(
    ("text", "value"),
    [(str(INT_MAX), INT_MAX), (str(INT_MIN), INT_MIN), ("0x7fffffffffffffff", INT_MAX),
     ("1:30", 90), ("1_000", 1000), ("0", 0), ("-0b101", -5), ("017", 15)],
)
def test_integers_of_64_bits_read(text, value):
    assert load_yaml(text) == value


@pytest.mark.parametrize(
    ("text", "digits"),
    [(str(INT_MAX + 1), 19), (str(INT_MIN - 1), 19), ("0x8000000000000000", 16),
     ("1" * 65, 65), ("!!int '" + "5" * 4301 + "'", 4301)],
)
def test_integers_past_64_bits_are_refused(text, digits):
    assert refusal(text) == f"1:1 an integer of {digits:,} digits, too large for 64 bits"


def test_a_node_that_ends_before_its_alias_is_no_recursion():
    value = load_yaml("a: &a [1, [2]]\nb: [*a, {c: *a}]\n")
    assert value["b"] == [[1, [2]], {"c": [1, [2]]}]


def test_repeated_key_is_a_yaml_error_at_the_second():
    with pytest.raises(InvalidYAML) as err:
        load_yaml("a: 1\nb: {c: 1}\na: 2\n")
    assert isinstance(err.value, yaml.YAMLError)
    assert (err.value.problem, err.value.problem_mark.line) == (
        "duplicate key 'a' (YAML would silently keep the last one)", 2)
    assert err.value.note == "keep one"


@pytest.mark.parametrize(
    ("text", "tag"),
    [("!!python/object/apply:os.system [ls]", "'!!python/object/apply:os.system'"),
     ("a: !local {b: 1}", "'!local'"),
     ("- !<tag:example.com,2024:x> 1", "'tag:example.com,2024:x'")],
)
def test_a_tag_without_a_safe_constructor_is_refused(text, tag):
    with pytest.raises(InvalidYAML) as err:
        load_yaml(text)
    assert err.value.problem == f"the tag {tag} is not allowed"


@pytest.mark.parametrize(("uses", "accepted"), [(97, True), (98, False)])
def test_values_are_counted_as_the_loader_counts_them(uses, accepted):
    assert count_values({"a": [1, 2], "b": {"c": None}}) == 9
    text = f"a: &a {flat_list(101)}\nb: [{', '.join(['*a'] * uses)}]\n"
    assert (count_values(yaml.safe_load(text)) <= MAX_VALUES) == accepted


def test_a_second_document_is_a_yaml_error():
    with pytest.raises(yaml.composer.ComposerError, match="expected a single document"):
        load_yaml("a: 1\n---\nb: 2\n")
