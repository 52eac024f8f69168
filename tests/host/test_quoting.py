"""Values quoted in error messages: short, on one line."""

import pytest

from swav_plugin.host.quoting import (
    PATH_LIMIT,
    SHOWN_LIMIT,
    close_match_hint,
    shown,
    shown_path,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("swav", "'swav'"),
        ([1, 2], "[1, 2]"),
        ("a" * 78, "'" + "a" * 78 + "'"),
        ("a" * 79, "'" + "a" * 61 + "…' (79 characters)"),
        ("it's" * 30, '"' + "it's" * 15 + "…\" (120 characters)"),
        (list(range(100)), "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, "
                           "… (100 items)"),
        ("line\nbreak", "'line\\nbreak'"),
    ],
)
def test_shown(value, expected):
    assert shown(value) == expected
    assert len(shown(value)) <= SHOWN_LIMIT


def test_an_int_python_will_not_convert():
    assert shown(10**5000) == "<int too large to show>"


def test_a_repr_over_lines_is_joined():
    class Multiline:
        def __repr__(self) -> str:
            return "first\n  second"

    assert shown(Multiline()) == "first second"


def test_paths_are_quoted_in_full_up_to_the_longest_a_file_system_takes():
    assert shown_path("/runs/a b/recipe.yaml") == "'/runs/a b/recipe.yaml'"
    long = "/" + "d" * (PATH_LIMIT - 1)
    assert shown_path(long) == f"'{long}'"
    assert shown_path(long + "d") == "'/" + "d" * 57 + "…' (4,097 characters)"


def test_a_hint_names_the_closest_valid_name_if_any_is_close():
    assert close_match_hint("batchsize", ["seed", "batch_size"]) == "; did you mean 'batch_size'?"
    assert close_match_hint("zzz", ["seed", "batch_size"]) == ""
    assert close_match_hint(1, ["1", "seed"]) == ""  # YAML reads ``1:`` as a number
