"""How an error message quotes what a user wrote: on one short line, however large it is.

A recipe value can be a megabyte long; an error message that names it must still be one line a
person can read, so every value a message quotes goes through :func:`shown`. A message that
refuses a name suggests the closest valid one with :func:`close_match_hint`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: The most characters :func:`shown` writes for one value.
SHOWN_LIMIT = 80

#: Paths are quoted in full up to the longest path Linux resolves (PATH_MAX).
PATH_LIMIT = 4096


def shown(value: Any, limit: int = SHOWN_LIMIT) -> str:
    """``repr(value)`` on one line, cut to ``limit`` characters ending in ``…`` and the full
    length when it is longer: ``'xxxx…' (1,000,000 characters)``."""
    try:
        text = repr(value)
    except ValueError:  # an int past Python's int-to-str digit limit
        text = f"<{type(value).__name__} too large to show>"
    if "\n" in text:
        text = " ".join(text.split())
    if len(text) <= limit:
        return text
    if isinstance(value, str):
        size = f"{len(value):,} characters"
    elif isinstance(value, (list, tuple, dict, set)):
        size = f"{len(value):,} items"
    else:
        size = f"{len(text):,} characters"
    close = text[0] if isinstance(value, str) else ""  # the repr's quote mark
    tail = f"…{close} ({size})"
    return text[: max(limit - len(tail), 1)] + tail


def shown_path(path: str | Path) -> str:
    """``'PATH'``: in full, unless it is longer than any path a file system resolves."""
    text = str(path)
    return f"'{text}'" if len(text) <= PATH_LIMIT else shown(text)


def close_match_hint(word: Any, valid: Iterable[str]) -> str:
    """``; did you mean 'NAME'?`` for the name in ``valid`` closest to ``word``, or ``""`` when
    none is close."""
    # YAML reads keys such as ``1:`` or ``on:`` as numbers and booleans: no name is close
    close = difflib.get_close_matches(word, list(valid), n=1) if isinstance(word, str) else []
    return f"; did you mean '{close[0]}'?" if close else ""
