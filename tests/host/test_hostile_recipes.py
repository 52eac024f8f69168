"""Recipes written to hurt: each is refused quickly, in one short line, exit status 2.

Every case is a recipe file (the ``tiny_recipe`` with one thing broken, or raw text or bytes)
and perhaps overrides; it is read by ``load_recipe`` and by ``swav-train`` in-process, and the
line must be exactly the expected one, within :data:`SECONDS` of wall-clock time.
``HOSTILE_RECIPES_PRINT=1`` prints the lines (with ``pytest -s``).
"""

from __future__ import annotations

import gc
import inspect
import os
import subprocess
import sys
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from swav_plugin.host.data import DataModule
from swav_plugin.host.errors import ConfigError
from swav_plugin.host.registry import BACKBONES
from swav_plugin.host.resolve import load_recipe
from swav_plugin.host.runner import main
from swav_plugin.host.sections import RUNNER_OWNED_DATA
from swav_plugin.swav.head import SwAVHead

#: The most a refusal may take. Each takes well under a second; the margin is for a busy
#: machine.
SECONDS = 5.0

MB = 1_000_000
VALUES = ("more than 10,000 values once its aliases are expanded; a recipe holds at most 10,000: "
          "write fewer values or aliases")
DEEP = "lists and mappings nested more than 50 deep; a recipe nests at most 50: flatten it"
INT64 = ("too large for 64 bits; write a number from -9223372036854775808 to "
         "9223372036854775807")
RECURSIVE = ("refers to a node that contains it; a recipe cannot hold a structure without end: "
             "refer only to a node that ends before the alias")
NOT_UTF8 = "is not valid UTF-8; save the file as UTF-8"
TOO_LARGE = ("more than the 1 MiB (1,048,576 bytes) a recipe may hold; keep large data in files "
             "that the recipe names")
LONG = "x" * MB
QUOTES = "'q" * 26
LONG_SHOWN = f"'{'x' * 54}…' (1,000,000 characters)"

Maker = Callable[[dict[str, Any]], "str | bytes | None"]


@dataclass
class Case:
    make: Maker  # the recipe file: edits the tiny recipe in place, or returns the whole text
    expected: str  # the message; {path} stands for the recipe's path
    overrides: tuple[str, ...] = ()


def text(content: str | bytes) -> Maker:
    return lambda recipe: content


def put(dotted: str, value: Any) -> Maker:
    def make(recipe: dict[str, Any]) -> None:
        *parents, last = dotted.split(".")
        node = recipe
        for part in parents:
            node = node[part]
        node[last] = value

    return make


def keep(recipe: dict[str, Any]) -> None:
    """The tiny recipe as it is (the case is in its overrides)."""


def add(dotted: str, key: Any, value: Any) -> Maker:
    """Add ``key`` (not a string: YAML reads ``1:`` or ``null:`` as such) under ``dotted``."""

    def make(recipe: dict[str, Any]) -> None:
        node = recipe
        for part in dotted.split("."):
            node = node[part]
        node[key] = value

    return make


def keys_of(factory: Callable[..., Any], owned: Collection[str] = ()) -> str:
    """``module.Name: key, key, ...`` as an unknown-key message lists a factory's keys, less
    those the runner ``owned``."""
    keys = [k for k in inspect.signature(factory).parameters if k not in ("self", *owned)]
    return f"{factory.__module__}.{factory.__qualname__}: {', '.join(keys)}"


def laughs(levels: int, width: int, lol: str = "lol") -> str:
    """Anchors that each name ``width`` uses of the one before: ``width ** levels`` values."""
    lines = [f"l0: &l0 [{', '.join([lol] * width)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def merge_laughs(levels: int) -> str:
    """The same through merge keys, which PyYAML copies into each mapping that uses them."""
    lines = ["m0: &m0 {a: 1, b: 2}"]
    lines += [f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}], k{i}: {i}}}" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


CASES: dict[str, Case] = {
    # -- aliases that expand without bound ------------------------------------------------
    "billion laughs, 10 ** 9": Case(
        text(laughs(9, 10)),
        f"recipe '{{path}}' at line 4, column 45: {VALUES}"),
    "billion laughs, 2 ** 60": Case(
        text(laughs(60, 2)),
        f"recipe '{{path}}' at line 12, column 12: {VALUES}"),
    "billion laughs through merge keys": Case(
        text(merge_laughs(40)),
        f"recipe '{{path}}' at line 10, column 20: {VALUES}"),
    "billion laughs in an override": Case(
        keep,
        "override 'data.pin_memory={a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1], b: &b…' (195 "
        f"characters): {VALUES}",
        ("data.pin_memory={a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1], b: &b [*a, *a, *a, *a, *a, *a, "
         "*a, *a, *a, *a], c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b], d: [*c, *c, *c, *c, "
         "*c, *c, *c, *c, *c, *c]}",)),
    "overrides too many together": Case(
        keep,
        "the overrides bring the recipe to more than 10,000 values; a recipe holds at most "
        "10,000: override fewer or smaller values",
        tuple(f"method.x{i}=[{', '.join(['1'] * 3000)}]" for i in range(4))),
    "a flat list of 300,000 values": Case(
        text("[" + ", ".join(["1"] * 300_000) + "]\n"),
        f"recipe '{{path}}' at line 1, column 29999: {VALUES}"),
    # -- aliases inside the node they name --------------------------------------------------
    "recursive alias in a list": Case(
        text("method: swav\na: &a [*a]\n"),
        f"recipe '{{path}}' at line 2, column 8: the alias 'a' {RECURSIVE}"),
    "recursive alias in a mapping": Case(
        text("method: swav\na: &a {b: *a}\n"),
        f"recipe '{{path}}' at line 2, column 11: the alias 'a' {RECURSIVE}"),
    "recursive alias two levels down": Case(
        text("method: &m\n  name: swav\n  head: [1, {x: [*m]}]\n"),
        f"recipe '{{path}}' at line 3, column 18: the alias 'm' {RECURSIVE}"),
    "recursive merge key": Case(
        text("a: &a {<<: *a}\n"),
        f"recipe '{{path}}' at line 1, column 12: the alias 'a' {RECURSIVE}"),
    "recursive alias in an override": Case(
        keep, f"override 'data.x=&a [*a]': the alias 'a' {RECURSIVE}", ("data.x=&a [*a]",)),
    # -- nesting ----------------------------------------------------------------------------
    "20,000 nested lists": Case(
        text("data: " + "[" * 20_000 + "]" * 20_000 + "\n"),
        f"recipe '{{path}}' at line 1, column 56: {DEEP}"),
    "20,000 nested mappings": Case(
        text("data: " + "{a: " * 20_000 + "1" + "}" * 20_000 + "\n"),
        f"recipe '{{path}}' at line 1, column 203: {DEEP}"),
    "20,000 nested block lists": Case(
        text("- " * 20_000 + "x\n"), f"recipe '{{path}}' at line 1, column 101: {DEEP}"),
    "60 nested block mappings": Case(
        text("".join(f"{'  ' * i}a:\n" for i in range(60)) + "  " * 60 + "1\n"),
        f"recipe '{{path}}' at line 51, column 101: {DEEP}"),
    "deep through an alias": Case(
        text("a: &a " + "[" * 30 + "]" * 30 + "\nb: " + "[" * 25 + "*a" + "]" * 25 + "\n"),
        f"recipe '{{path}}' at line 2, column 29: {DEEP}"),
    "override key of 60 parts": Case(
        keep,
        f"override '{'data.' * 12}…' (301 characters): {DEEP}",
        (".".join(["data"] * 60) + "=1",)),
    "override value of 20,000 nested lists": Case(
        keep,
        f"override 'data.x={'[' * 50}…' (40,007 characters): {DEEP}",
        ("data.x=" + "[" * 20_000 + "]" * 20_000,)),
    # -- bytes that are not UTF-8 -----------------------------------------------------------
    "latin-1 byte in a value": Case(
        text(b"method: swav\ndata:\n  dataset: caf\xe9\n"),
        f"recipe '{{path}}' is not UTF-8 text: byte 0xe9 at offset 33 (line 3) {NOT_UTF8}"),
    "latin-1 byte in a key": Case(
        text(b"method: swav\ntr\xe4iner: {}\n"),
        f"recipe '{{path}}' is not UTF-8 text: byte 0xe4 at offset 15 (line 2) {NOT_UTF8}"),
    "a latin-1 file": Case(
        text("# Rezept für SwAV\nmethod: swav\n".encode("latin-1")),
        f"recipe '{{path}}' is not UTF-8 text: byte 0xfc at offset 10 (line 1) {NOT_UTF8}"),
    "a UTF-16 file": Case(
        text("method: swav\n".encode("utf-16")),
        f"recipe '{{path}}' is not UTF-8 text: byte 0xff at offset 0 (line 1) {NOT_UTF8}"),
    "undecodable byte in an override": Case(
        keep,
        "override 'data.x=caf\\udce9' is not UTF-8 text: byte 0xe9 at offset 10 is not valid "
        "UTF-8; pass it as UTF-8",
        (os.fsdecode(b"data.x=caf\xe9"),)),
    "escape past U+10FFFF": Case(
        text('method: swav\ndata: {dataset: "\\UFFFFFFFF"}\n'),
        "recipe '{path}' is not valid YAML at line 2, column 20: found an escape past U+10FFFF, "
        "\\UFFFFFFFF; fix the YAML syntax there"),
    "escaped surrogate pair": Case(
        text('method: swav\nrun: {output_dir: "runs/\\ud83d\\ude00"}\n'),
        "recipe '{path}' at line 2, column 19: the string 'runs/\\ud83d\\ude00' holds half of a "
        "UTF-16 surrogate pair; write the character itself, or its \\U escape (\\U0001F600)"),
    "NUL byte": Case(
        text("method: swav\ndata: {a\0: 1}\n"),
        "recipe '{path}' is not valid YAML at line 2, column 9: unacceptable character "
        "#x0000: special characters are not allowed; fix the YAML syntax there"),
    # -- integers Python will not convert, or libraries will not take ------------------------
    "integer of 5,000 digits": Case(
        text("method: swav\ndata: {batch_size: " + "9" * 5000 + "}\n"),
        f"recipe '{{path}}' at line 2, column 20: an integer of 5,000 digits, {INT64}"),
    "negative integer of 5,000 digits": Case(
        text("run: {seed: -" + "1" * 5000 + "}\n"),
        f"recipe '{{path}}' at line 1, column 13: an integer of 5,000 digits, {INT64}"),
    "hexadecimal integer of 100,000 digits": Case(
        text("run: {seed: 0x" + "f" * 100_000 + "}\n"),
        f"recipe '{{path}}' at line 1, column 13: an integer of 100,000 digits, {INT64}"),
    "sexagesimal integer of 300,000 places": Case(
        text("run: {seed: " + ":".join(["1"] * 300_000) + "}\n"),
        f"recipe '{{path}}' at line 1, column 13: an integer of 300,000 digits, {INT64}"),
    "one past the 64-bit range": Case(
        text("run: {seed: 9223372036854775808}\n"),
        f"recipe '{{path}}' at line 1, column 13: an integer of 19 digits, {INT64}"),
    "YAML version of 5,000 digits": Case(
        text("%YAML 1." + "1" * 5000 + "\n---\nmethod: swav\n"),
        "recipe '{path}' is not valid YAML at line 1, column 9: expected a YAML version such as "
        "1.1, but found a number of 5,000 digits; fix the YAML syntax there"),
    "sexagesimal float of 300,000 places": Case(
        text("run: {seed: " + ":".join(["1"] * 300_000) + ".5}\n"),
        f"recipe '{{path}}' at line 1, column 13: '{'1:' * 28}…' (600,001 characters) cannot be "
        "read as !!float; write a valid !!float value, or quote it as a string without a tag"),
    "1 MB of digits and a letter where a float fits": Case(
        put("method.weight_decay", "1" * MB + "x"),
        f"method.weight_decay: expected float, got '{'1' * 54}…' (1,000,001 characters) (str)"),
    "integer of 5,000 digits in an override": Case(
        keep,
        f"override 'data.batch_size={'7' * 42}…' (5,016 characters): an integer of 5,000 "
        f"digits, {INT64}",
        ("data.batch_size=" + "7" * 5000,)),
    # -- explicitly tagged scalars PyYAML cannot read --------------------------------------
    "!!int that is not one": Case(
        text("run: {seed: !!int abc}\n"),
        "recipe '{path}' at line 1, column 13: 'abc' cannot be read as !!int; write a valid "
        "!!int value, or quote it as a string without a tag"),
    "!!int of nothing": Case(
        text("run: {seed: !!int ''}\n"),
        "recipe '{path}' at line 1, column 13: '' cannot be read as !!int; write a valid !!int "
        "value, or quote it as a string without a tag"),
    "!!bool that is not one": Case(
        text("data: {pin_memory: !!bool maybe}\n"),
        "recipe '{path}' at line 1, column 20: 'maybe' cannot be read as !!bool; write a valid "
        "!!bool value, or quote it as a string without a tag"),
    "!!timestamp that is not one": Case(
        text("run: {seed: !!timestamp later}\n"),
        "recipe '{path}' at line 1, column 13: 'later' cannot be read as !!timestamp; write a "
        "valid !!timestamp value, or quote it as a string without a tag"),
    # -- keys YAML reads as something other than a string -----------------------------------
    "number as a key": Case(
        add("data", 1, 2), f"data: unknown key 1 valid keys of "
                              f"{keys_of(DataModule, RUNNER_OWNED_DATA)}"),
    "'on' as a section": Case(
        text("method: swav\non: {}\n"),
        "recipe: unknown key True valid keys: method, data, trainer, run, callbacks, loggers"),
    "null as a key": Case(
        add("method.head", None, 1), f"method.head: unknown key None valid keys of "
                                     f"{keys_of(SwAVHead)}"),
    # -- large values, each quoted short --------------------------------------------------
    "1 MB string as a number": Case(
        put("data.batch_size", LONG), f"data.batch_size: expected int, got {LONG_SHOWN} (str)"),
    "1 MB string as a section": Case(
        put("data", LONG), f"recipe section 'data' must be a mapping, got {LONG_SHOWN}"),
    "1 MB component name": Case(
        put("method.backbone", LONG),
        f"method.backbone: unknown backbone {LONG_SHOWN} registered backbones: "
        f"{', '.join(BACKBONES.names())}"),
    "9,000 numbers as a component name": Case(
        put("method.loss.name", [0] * 9000),
        f"method.loss: a loss name must be a string, got [{'0, ' * 21}0… (9,000 items)"),
    "component node of 3,000 keys without a name": Case(
        put("method.queue", {f"k{i}": i for i in range(3000)}),
        "method.queue: expected a queue name or a mapping with a 'name' key, got {'k0': 0, "
        "'k1': 1, 'k2': 2, 'k3': 3, 'k4': 4, 'k5': 5, 'k6': 6, '… (3,000 items); registered "
        "queues: swav_queue"),
    "unknown key of 100,000 characters": Case(
        put("data." + "k" * 100_000, 1),
        f"data: unknown key '{'k' * 56}…' (100,000 characters) valid keys of "
        f"{keys_of(DataModule, RUNNER_OWNED_DATA)}"),
    "unknown section of 100,000 characters": Case(
        put("s" * 100_000, {}),
        f"recipe: unknown key '{'s' * 56}…' (100,000 characters) valid keys: method, data, "
        "trainer, run, callbacks, loggers"),
    "duplicate key of 100,000 characters": Case(
        text("method: swav\n? " + "d" * 100_000 + "\n: 1\n? " + "d" * 100_000 + "\n: 2\n"),
        f"recipe '{{path}}' is not valid YAML at line 4, column 3: duplicate key '{'d' * 56}…' "
        "(100,000 characters) (YAML would silently keep the last one); keep one"),
    "undefined alias of 100,000 characters": Case(
        text("method: *" + "u" * 100_000 + "\n"),
        f"recipe '{{path}}' is not valid YAML at line 1, column 9: found undefined alias "
        f"'{'u' * 56}…' (100,000 characters); fix the YAML syntax there"),
    "tag of 100,000 characters": Case(
        text("method: !" + "t" * 100_000 + " swav\n"),
        f"recipe '{{path}}' is not valid YAML at line 1, column 9: the tag '!{'t' * 55}…' "
        "(100,001 characters) is not allowed; a recipe holds plain YAML values only (mappings, "
        "lists, strings, numbers, booleans, null)"),
    "tag of 100,000 characters with quotes": Case(
        text("method: !<tag:" + "'q" * 50_000 + "> swav\n"),
        f"recipe '{{path}}' is not valid YAML at line 1, column 9: the tag \"tag:{QUOTES}…\" "
        "(100,004 characters) is not allowed; a recipe holds plain YAML values only (mappings, "
        "lists, strings, numbers, booleans, null)"),
    "1 MB string in an override": Case(
        keep, f"data.batch_size: expected int, got {LONG_SHOWN} (str)",
        ("data.batch_size=" + LONG,)),
    "1 MB override without '='": Case(
        keep, f"override {LONG_SHOWN} must look like section.key=value", (LONG,)),
    # -- size -------------------------------------------------------------------------------
    "2 MB file": Case(
        text("method: swav\n" + "#" * 2 * MB + "\n"),
        f"recipe '{{path}}' is 2,000,014 bytes, {TOO_LARGE}"),
    "one byte past 1 MiB": Case(
        text("method: swav\n#" + "x" * (2**20 - 14) + "\n"),
        f"recipe '{{path}}' is 1,048,577 bytes, {TOO_LARGE}"),
    "2 MB override": Case(
        keep,
        f"override \"data.x='{'x' * 46}…\" (2,000,009 characters) is 2,000,009 bytes, "
        f"{TOO_LARGE}",
        ("data.x='" + "x" * 2 * MB + "'",)),
}


def _write(case: Case, recipe: dict[str, Any], tmp_path: Path) -> Path:
    content = case.make(recipe)
    if content is None:
        content = yaml.safe_dump(recipe, sort_keys=False)  # keys of mixed types do not sort
    path = tmp_path / "recipe.yaml"
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_recipe_is_refused_quickly_in_one_short_line(name, tiny_recipe, tmp_path, capsys):
    case = CASES[name]
    path = _write(case, tiny_recipe, tmp_path)
    expected = case.expected.replace("{path}", str(path))
    gc.collect()  # what earlier tests left for the collector is not this case's time
    start = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        load_recipe(path, case.overrides)
    took = time.perf_counter() - start
    assert str(err.value) == expected
    assert took < SECONDS, f"{took:.1f} s"
    assert len(expected) < 400 + len(str(path))  # no value is quoted in full

    assert main([str(path), *case.overrides]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"swav-train: error: {expected}\n"
    if os.environ.get("HOSTILE_RECIPES_PRINT"):
        with capsys.disabled():
            print(f"\n    {expected}")
    assert not (tmp_path / "run").exists()


def test_command_line_refuses_billion_laughs_in_one_line(tmp_path):
    """The real command, in a process of its own: status 2 and the one line on stderr."""
    path = tmp_path / "recipe.yaml"
    path.write_text(laughs(9, 10))
    proc = subprocess.run([sys.executable, "-m", "swav_plugin", str(path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == (f"swav-train: error: {CASES['billion laughs, 10 ** 9'].expected}\n"
                           .replace("{path}", str(path)))


def test_a_path_too_long_for_the_file_system(tmp_path, capsys):
    path = tmp_path / ("r" * 300 + ".yaml")
    expected = (f"recipe file '{path}' cannot be read: File name too long; pass the path of a "
                "readable YAML recipe")
    with pytest.raises(ConfigError) as err:
        load_recipe(path)
    assert str(err.value) == expected
    assert main([str(path)]) == 2
    assert capsys.readouterr().err == f"swav-train: error: {expected}\n"


def test_a_megabyte_path_is_quoted_short(tmp_path):
    path = "/" + "p" * MB
    with pytest.raises(ConfigError) as err:
        load_recipe(path)
    assert str(err.value) == (
        f"recipe file '/{'p' * 53}…' (1,000,001 characters)"
        " cannot be read: File name too long; pass the path of a readable YAML recipe")
