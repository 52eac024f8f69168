"""Recipe files and command-line overrides, read within limits and reported in one line.

A recipe has four sections (and two optional lists)::

    method:  {name: swav, backbone: {name: resnet18_cifar}, head: {...}, ...}   # or just: swav
    data:    {dataset: {name: digits}, transform: {...}, batch_size: 128, ...}
    trainer: {max_epochs: 20, accelerator: auto, precision: 32}                  # pl.Trainer kwargs
    run:     {output_dir: runs/demo, seed: 0}

A recipe is at most :data:`MAX_BYTES` of UTF-8 text holding plain YAML values within the
limits of :mod:`swav_plugin.host.recipe_yaml`; an override ``key=value`` is held to the same.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from swav_plugin.host.errors import ConfigError
from swav_plugin.host.quoting import SHOWN_LIMIT, shown, shown_path
from swav_plugin.host.recipe_yaml import MAX_VALUES, RefusedYAML, load_yaml

SECTIONS = ("method", "data", "trainer", "run", "callbacks", "loggers")

#: The largest recipe file, and the largest override: recipes are a few kilobytes.
MAX_BYTES = 1 << 20

_TOO_LARGE = (f"more than the 1 MiB ({MAX_BYTES:,} bytes) a recipe may hold; keep large data "
              "in files that the recipe names")
_SURROGATE = re.compile("[\ud800-\udfff]")  # what undecodable command-line bytes become
_LONG_QUOTE = re.compile(f"'([^']{{{SHOWN_LIMIT},}})'|\"([^\"]{{{SHOWN_LIMIT},}})\"")


def read_recipe(path: str | Path) -> dict[str, Any]:
    """Read a recipe file: plain YAML, no Python object tags, no key given twice, within the
    limits of size, values, nesting and integers."""
    path = Path(path)
    name = f"recipe {shown_path(path)}"
    data = _read_bytes(path)
    text = _decode(data, name)
    try:
        recipe = load_yaml(text)
    except RefusedYAML as exc:
        where = _where(exc.problem_mark.line, exc.problem_mark.column)
        raise ConfigError(f"{name} at {where}: {exc.problem}; {exc.note}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_error_message(name, exc, text)) from None
    if not isinstance(recipe, dict):
        raise ConfigError(f"{name} must be a mapping with sections {', '.join(SECTIONS)}")
    return recipe


def _read_bytes(path: Path) -> bytes:
    try:
        if not path.is_file():
            raise ConfigError(f"recipe file {shown_path(path)} does not exist; pass the path of "
                              "a YAML recipe")
        with path.open("rb") as file:
            data = file.read(MAX_BYTES + 1)  # not more: the file may be huge or still growing
            size = max(len(data), path.stat().st_size)
    except OSError as exc:
        raise ConfigError(f"recipe file {shown_path(path)} cannot be read: "
                          f"{exc.strerror or exc}; pass the path of a readable YAML recipe"
                          ) from None
    if size > MAX_BYTES:
        raise ConfigError(f"recipe {shown_path(path)} is {size:,} bytes, {_TOO_LARGE}")
    return data


def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{name} is not UTF-8 text: byte 0x{data[exc.start]:02x} at offset "
                          f"{exc.start:,} (line {line}) is not valid UTF-8; save the file as "
                          "UTF-8") from None


def _where(line: int, column: int) -> str:
    return f"line {line + 1}, column {column + 1}"


def _yaml_error_message(name: str, exc: yaml.YAMLError, text: str) -> str:
    mark = getattr(exc, "problem_mark", None)
    at = f" at {_where(mark.line, mark.column)}" if mark else ""
    if isinstance(exc, yaml.reader.ReaderError):  # it has a position but no mark
        start = text.rfind("\n", 0, exc.position) + 1
        line = text.count("\n", 0, exc.position)
        at = f" at {_where(line, exc.position - start)}"
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    tag = re.search(r"constructor for the tag (['\"])(.*)\1$", problem)
    if tag:
        tag_name = tag.group(2).replace("tag:yaml.org,2002:", "!!")
        problem = (
            f"the tag {shown(tag_name)} is not allowed; a recipe holds plain YAML values only "
            "(mappings, lists, strings, numbers, booleans, null)"
        )
    elif problem.startswith("duplicate key"):
        problem += " (YAML would silently keep the last one); keep one"
    else:
        # PyYAML quotes anchors, aliases and tag handles in full
        problem = _LONG_QUOTE.sub(lambda m: shown(m.group(1) or m.group(2)), problem)
        problem += "; fix the YAML syntax there"
    return f"{name} is not valid YAML{at}: {problem}"


def apply_overrides(recipe: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply dotted ``key=value`` overrides; values are parsed as YAML (``5``, ``[1, 2]``)
    within a recipe's limits."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        name = f"override {shown(item)}"
        if not sep or not key:
            raise ConfigError(f"{name} must look like section.key=value")
        _check_override_text(item, name)
        parts = key.split(".")
        try:
            value = load_yaml(raw, depth=len(parts))
        except RefusedYAML as exc:
            raise ConfigError(f"{name}: {exc.problem}; {exc.note}") from None
        except yaml.YAMLError:
            raise ConfigError(f"{name}: the value is not valid YAML") from None
        node = recipe
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if isinstance(child, str):  # a bare component name grows into a mapping
                child = {"name": child}
            elif child is None:
                child = {}
            elif not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise ConfigError(f"{name}: {shown(where)} is {shown(child)}, not a mapping")
            node[part] = child
            node = child
        node[parts[-1]] = value
    if overrides and _count_values(recipe) > MAX_VALUES:
        raise ConfigError(f"the overrides bring the recipe to more than {MAX_VALUES:,} values; "
                          f"a recipe holds at most {MAX_VALUES:,}: override fewer or smaller "
                          "values")
    return recipe


def _check_override_text(item: str, name: str) -> None:
    bad = _SURROGATE.search(item)
    if bad:
        offset = len(item[: bad.start()].encode("utf-8"))
        code = ord(bad.group())
        what = (f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF
                else f"character U+{code:04X}")
        raise ConfigError(f"{name} is not UTF-8 text: {what} at offset {offset:,} is not valid "
                          "UTF-8; pass it as UTF-8")
    size = len(item.encode("utf-8"))
    if size > MAX_BYTES:
        raise ConfigError(f"{name} is {size:,} bytes, {_TOO_LARGE}")


def _count_values(value: Any) -> int:
    """The values in ``value``, keys included, as :mod:`.recipe_yaml` counts them, up to one
    past :data:`MAX_VALUES` (shared lists and mappings count once per use)."""
    count, pending = 0, [value]
    while pending and count <= MAX_VALUES:
        item = pending.pop()
        count += 1
        if isinstance(item, dict):
            count += len(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return count
