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

import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from swav_plugin.host.errors import ConfigError
from swav_plugin.host.quoting import SHOWN_LIMIT, shown, shown_path
from swav_plugin.host.recipe_yaml import (
    MAX_VALUES,
    InvalidYAML,
    RefusedYAML,
    count_values,
    load_yaml,
)

SECTIONS = ("method", "data", "trainer", "run", "callbacks", "loggers")

#: The largest recipe file, and the largest override: recipes are a few kilobytes.
MAX_BYTES = 1 << 20

_TOO_LARGE = (f"more than the {MAX_BYTES / 2**20:g} MiB ({MAX_BYTES:,} bytes) a recipe may hold; "
              "keep large data in files that the recipe names")
_LONG_QUOTE = re.compile(f"'([^']{{{SHOWN_LIMIT},}})'|\"([^\"]{{{SHOWN_LIMIT},}})\"")


def read_recipe(path: str | Path) -> dict[str, Any]:
    """Read a recipe file: plain YAML, no Python object tags, no key given twice, within the
    limits of size, values, nesting and integers."""
    path = Path(path)
    name = f"recipe {shown_path(path)}"
    data, size = _read_bytes(path)
    text = _text(data, size, name, from_file=True)
    try:
        recipe = load_yaml(text)
    except RefusedYAML as exc:
        where = _where(exc.problem_mark.line, exc.problem_mark.column)
        raise ConfigError(_refused_message(name, exc, f" at {where}")) from None
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_error_message(name, exc, text)) from None
    if not isinstance(recipe, dict):
        raise ConfigError(f"{name} must be a mapping with sections {', '.join(SECTIONS)}")
    return recipe


def _read_bytes(path: Path) -> tuple[bytes, int]:
    """The first ``MAX_BYTES + 1`` bytes of the file at ``path``, and its size."""
    try:
        # Without O_NONBLOCK, opening a named pipe would wait for a writer before it is refused
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as file:
            info = os.fstat(file.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ConfigError(f"recipe file {shown_path(path)} is not a file; pass the path "
                                  "of a YAML recipe")
            data = file.read(MAX_BYTES + 1)  # not more: the file may be huge or still growing
    except (FileNotFoundError, NotADirectoryError):
        raise ConfigError(f"recipe file {shown_path(path)} does not exist; pass the path of a "
                          "YAML recipe") from None
    except OSError as exc:
        raise ConfigError(f"recipe file {shown_path(path)} cannot be read: "
                          f"{exc.strerror or exc}; pass the path of a readable YAML recipe"
                          ) from None
    return data, max(len(data), info.st_size)


def _text(data: bytes, size: int, name: str, from_file: bool) -> str:
    """``data`` (all of ``name``'s ``size`` bytes, or the first of them) as text: refused past
    :data:`MAX_BYTES` and where it is not UTF-8."""
    if size > MAX_BYTES:
        raise ConfigError(f"{name} is {size:,} bytes, {_TOO_LARGE}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if from_file:
            lines = data.count(b"\n", 0, exc.start) + 1
            line, fix = f" (line {lines})", "save the file as UTF-8"
        else:
            line, fix = "", "pass it as UTF-8"
        raise ConfigError(f"{name} is not UTF-8 text: byte 0x{data[exc.start]:02x} at offset "
                          f"{exc.start:,}{line} is not valid UTF-8; {fix}") from None


def _override_bytes(item: str) -> bytes:
    """The bytes of the command-line argument that Python decoded as ``item``."""
    try:
        return item.encode("utf-8", "surrogateescape")  # undecodable bytes back as they came
    except UnicodeEncodeError:
        # Only a caller, not a command line, passes another surrogate: its surrogatepass bytes
        # are not UTF-8 either, so it is refused all the same
        return item.encode("utf-8", "surrogatepass")


def _where(line: int, column: int) -> str:
    return f"line {line + 1}, column {column + 1}"


def _refused_message(name: str, exc: RefusedYAML, at: str = "") -> str:
    """The line for what the loader refuses in ``name``; ``at`` says where, in a file."""
    invalid = " is not valid YAML" if isinstance(exc, InvalidYAML) else ""
    return f"{name}{invalid}{at}: {exc.problem}; {exc.note}"


def _yaml_error_message(name: str, exc: yaml.YAMLError, text: str) -> str:
    mark = getattr(exc, "problem_mark", None)
    at = f" at {_where(mark.line, mark.column)}" if mark else ""
    if isinstance(exc, yaml.reader.ReaderError):  # it has a position but no mark
        start = text.rfind("\n", 0, exc.position) + 1
        line = text.count("\n", 0, exc.position)
        at = f" at {_where(line, exc.position - start)}"
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    # PyYAML quotes anchors, aliases and tag handles in full
    problem = _LONG_QUOTE.sub(lambda m: shown(m.group(1) or m.group(2)), problem)
    return f"{name} is not valid YAML{at}: {problem}; fix the YAML syntax there"


def apply_overrides(recipe: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply dotted ``key=value`` overrides; values are parsed as YAML (``5``, ``[1, 2]``)
    within a recipe's limits."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        name = f"override {shown(item)}"
        if not sep or not key:
            raise ConfigError(f"{name} must look like section.key=value")
        data = _override_bytes(item)
        _text(data, len(data), name, from_file=False)
        parts = key.split(".")
        try:
            value = load_yaml(raw, depth=len(parts))
        except RefusedYAML as exc:
            raise ConfigError(_refused_message(name, exc)) from None
        except yaml.YAMLError:
            raise ConfigError(f"{name}: the value is not valid YAML") from None
        node = recipe
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if isinstance(child, str):  # a bare component name grows into a mapping
                child = {"name": child}
            elif child is None:
                child = {}
            elif isinstance(child, dict):
                child = dict(child)  # an alias shares it with other keys, which keep their value
            else:
                where = ".".join(parts[: depth + 1])
                raise ConfigError(f"{name}: {shown(where)} is {shown(child)}, not a mapping")
            node[part] = child
            node = child
        node[parts[-1]] = value
    if overrides and count_values(recipe) > MAX_VALUES:
        raise ConfigError(f"the overrides bring the recipe to more than {MAX_VALUES:,} values; "
                          f"a recipe holds at most {MAX_VALUES:,}: override fewer or smaller "
                          "values")
    return recipe
