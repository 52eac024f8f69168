"""Recipe YAML: one document of plain values, within limits no hostile text can get past.

PyYAML's safe loader builds no Python object, but nothing else bounds it. An alias is a shared
node, so a few hundred bytes of anchors that refer to anchors ("billion laughs") stand for
billions of values, which any code that walks the recipe visits one by one; an alias inside
the node it names makes a structure without end; every level of nesting is a level of
recursion; an integer can have more digits than Python will convert; and some text makes
PyYAML fail with a Python error instead of a YAML one (``!!int abc``, ``"\\UFFFFFFFF"``, a
``%YAML`` version of 5,000 digits). :func:`load_yaml` counts each value once per use of an
alias while it composes the document and stops at the first limit it passes, so reading takes
time in proportion to what it accepts; it turns each of those failures into a YAML error. A
key given twice or a tag without a safe constructor is an :class:`InvalidYAML`.
"""

from __future__ import annotations

import re
import string
from typing import Any

import yaml

from swav_plugin.host.quoting import shown

#: The most values (scalars, lists and mappings, keys included) a recipe holds once every
#: alias is expanded.
MAX_VALUES = 10_000

#: The most lists and mappings nested inside one another.
MAX_DEPTH = 50

#: Integers are those of 64 bits, as every library a recipe configures takes them.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1

_INT_TAG = "tag:yaml.org,2002:int"
_HEX_DIGITS = frozenset(string.hexdigits)
_SURROGATE = re.compile("[\ud800-\udfff]")


class RefusedYAML(yaml.MarkedYAMLError):
    """YAML that a recipe cannot hold: ``problem`` says what, ``note`` the fix."""


class InvalidYAML(RefusedYAML):
    """YAML that is no recipe's at all, rather than past a limit: a key given twice (which the
    YAML spec forbids) or a tag the safe loader has no constructor for (``!!python/...``)."""


def count_values(value: Any) -> int:
    """The values in ``value``, keys included, as :func:`load_yaml` counts them (shared lists
    and mappings once per use); it stops counting soon past :data:`MAX_VALUES`."""
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


class _RecipeLoader(yaml.SafeLoader):
    """The safe loader, refusing repeated keys and counting what it composes."""

    def __init__(self, text: str, depth: int) -> None:
        super().__init__(text)
        self._depth = depth  # lists and mappings open around the node being composed
        self._deepest = depth
        self._values = 0
        self._sizes: dict[str, tuple[int, int]] = {}  # anchor: (values, levels) of its node

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            anchor = event.anchor
            if anchor in self.anchors and anchor not in self._sizes:
                raise RefusedYAML(
                    problem=f"the alias {shown(anchor)} refers to a node that contains it",
                    problem_mark=event.start_mark,
                    note="a recipe cannot hold a structure without end: refer only to a node "
                         "that ends before the alias")
            values, levels = self._sizes.get(anchor, (0, 0))  # undefined: the Composer raises
            self._count(values, self._depth + levels, event.start_mark)
            return super().compose_node(parent, index)
        if isinstance(event, yaml.ScalarEvent) and _SURROGATE.search(event.value):
            # Only an escape such as "\ud83d\ude00" makes one: Python keeps the two halves
            # apart, and no path or UTF-8 file can hold them.
            raise RefusedYAML(
                problem=f"the string {shown(event.value)} holds half of a UTF-16 surrogate pair",
                problem_mark=event.start_mark,
                note="write the character itself, or its \\U escape (\\U0001F600)")
        outer_depth, outer_deepest, outer_values = self._depth, self._deepest, self._values
        self._depth += isinstance(event, yaml.CollectionStartEvent)
        self._deepest = self._depth
        self._count(1, self._depth, event.start_mark)
        node = super().compose_node(parent, index)
        if event.anchor is not None:
            self._sizes[event.anchor] = (self._values - outer_values, self._deepest - outer_depth)
        self._depth, self._deepest = outer_depth, max(self._deepest, outer_deepest)
        return node

    def _count(self, values: int, depth: int, mark: yaml.Mark) -> None:
        self._values += values
        self._deepest = max(self._deepest, depth)
        if depth > MAX_DEPTH:
            raise RefusedYAML(
                problem=f"lists and mappings nested more than {MAX_DEPTH} deep",
                problem_mark=mark,
                note=f"a recipe nests at most {MAX_DEPTH}: flatten it")
        if self._values > MAX_VALUES:
            raise RefusedYAML(
                problem=f"more than {MAX_VALUES:,} values once its aliases are expanded",
                problem_mark=mark,
                note=f"a recipe holds at most {MAX_VALUES:,}: write fewer values or aliases")

    def compose_mapping_node(self, anchor: str | None) -> yaml.MappingNode:
        # Plain YAML keeps the last of two equal keys, so a second ``data:`` section or a
        # repeated ``batch_size`` would silently replace the first.
        node = super().compose_mapping_node(anchor)
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen:
                    raise InvalidYAML(
                        problem=f"duplicate key {shown(key_node.value)} (YAML would silently "
                                "keep the last one)",
                        problem_mark=key_node.start_mark,
                        note="keep one")
                seen.add(key_node.value)
        return node

    def construct_undefined(self, node: yaml.Node) -> Any:
        # Any tag the safe loader has no constructor for: ``!!python/object/apply``, ``!local``
        tag = node.tag.replace("tag:yaml.org,2002:", "!!")
        raise InvalidYAML(
            problem=f"the tag {shown(tag)} is not allowed",
            problem_mark=node.start_mark,
            note="a recipe holds plain YAML values only (mappings, lists, strings, numbers, "
                 "booleans, null)")

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError):
            # PyYAML's constructors fail this way on a tagged scalar they cannot read, such as
            # ``!!int abc``, ``!!bool maybe`` or a float of 300 sexagesimal places.
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            raise RefusedYAML(
                problem=f"{shown(node.value)} cannot be read as {tag}",
                problem_mark=node.start_mark,
                note=f"write a valid {tag} value, or quote it as a string without a tag"
            ) from None

    def scan_yaml_directive_number(self, start_mark: yaml.Mark) -> int:
        length = 0
        while "0" <= self.peek(length) <= "9":
            length += 1
        if length > 9:  # PyYAML converts it whole, as int() will not past 4,300 digits
            raise yaml.scanner.ScannerError(
                "while scanning a directive", start_mark,
                f"expected a YAML version such as 1.1, but found a number of {length:,} digits",
                self.get_mark())
        return super().scan_yaml_directive_number(start_mark)

    def scan_flow_scalar_non_spaces(self, double: bool, start_mark: yaml.Mark) -> list[str]:
        try:
            return super().scan_flow_scalar_non_spaces(double, start_mark)
        except (ValueError, OverflowError):  # chr() of a \U escape past U+10FFFF
            raise yaml.scanner.ScannerError(
                "while scanning a double-quoted scalar", start_mark,
                f"found an escape past U+10FFFF, \\U{self.prefix(8)}", self.get_mark()
            ) from None

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        text = self.construct_scalar(node).lstrip("+-")
        if text[:2] in ("0x", "0b"):
            text = text[2:]
        digits = sum(c in _HEX_DIGITS for c in text)
        # Counted before converting: int() of many digits is slow or refused, and sexagesimal
        # ``1:2:3...`` multiplies without bound.
        if digits > 64:
            raise _too_large(digits, node.start_mark)
        value = super().construct_yaml_int(node)
        if not INT_MIN <= value <= INT_MAX:
            raise _too_large(digits, node.start_mark)
        return value


# The loader calls the constructors in this table, not its methods of the same names
_RecipeLoader.add_constructor(_INT_TAG, _RecipeLoader.construct_yaml_int)
_RecipeLoader.add_constructor(None, _RecipeLoader.construct_undefined)


def _too_large(digits: int, mark: yaml.Mark) -> RefusedYAML:
    return RefusedYAML(problem=f"an integer of {digits:,} digits, too large for 64 bits",
                       problem_mark=mark, note=f"write a number from {INT_MIN} to {INT_MAX}")


def load_yaml(text: str, depth: int = 0) -> Any:
    """The value of the one YAML document in ``text``, checked as a recipe's.

    ``depth`` is the number of mappings the value will sit in (an override's key parts).
    Raises :class:`RefusedYAML` past a limit, ``yaml.YAMLError`` on any other YAML problem.
    """
    loader = _RecipeLoader(text, depth)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
