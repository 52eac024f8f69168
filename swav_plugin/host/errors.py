"""The two exception types a command-line tool reports in one line, without a traceback.

- :class:`ConfigError`: a mistake the user can fix before running (a recipe, an argument, a
  path); exit status 2.
- :class:`RunError`: a failure while running (a full disk, a lost file system); exit status 1.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class ConfigError(ValueError):
    """A user-fixable problem, reported as one line that names the problem and the fix.

    Command-line tools print it without a traceback and exit with status 2.
    """


class RunError(RuntimeError):
    """A failure at run time, reported as one line naming the cause (and the path, if any).

    Command-line tools print it without a traceback and exit with status 1.
    """


def missing_extra(component: str, package: str, extra: str) -> ConfigError:
    """The error for ``component`` (e.g. ``"logger 'wandb'"``) when an extra is not installed."""
    return ConfigError(f"{component} needs the {package} package; install it with "
                       f"pip install 'swav-plugin[{extra}]'")


#: What a user should do about the storage errors that have a remedy.
_STORAGE_FIXES = {
    errno.ENOSPC: "the disk is full; free space there or choose another directory",
    errno.EDQUOT: "the disk quota is exceeded; free space there or choose another directory",
    errno.EROFS: "the file system is read-only; choose a writable directory",
    errno.EACCES: "permission denied; choose a directory you can write to, or fix its "
                  "permissions",
    errno.EPERM: "permission denied; choose a directory you can write to, or fix its "
                 "permissions",
    errno.ENOTDIR: "a part of the path is a file, not a directory; choose another path",
    errno.EEXIST: "a file is in the way of a directory there; choose another path",
    errno.EISDIR: "it is a directory, not a file; choose another path",
}


def storage_problem(exc: OSError, path: str | Path | None = None) -> str:
    """``'PATH': cause; fix`` for a failed file operation (the cause in words)."""
    where = path if path is not None else (exc.filename or "?")
    fix = _STORAGE_FIXES.get(exc.errno or 0)
    if fix is None:
        fix = f"{exc.strerror or type(exc).__name__}; check the storage there"
    return f"'{where}': {fix}"


@contextmanager
def storage_errors(what: str, path: str | Path | None = None, note: str = "") -> Iterator[None]:
    """Turn an ``OSError`` inside into :class:`RunError` ``"WHAT 'PATH': cause; fix NOTE"``
    (the path: ``path``, else the one the error names)."""
    try:
        yield
    except OSError as exc:
        raise RunError(f"{what} {storage_problem(exc, path)}{note}") from None


#: The line a DataLoader worker's re-raised exception ends its traceback text with.
_WORKER_LAST_LINE = re.compile(r"^[\w.]+: (.*)$")


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line. An error raised in a DataLoader worker comes back
    with the worker's traceback as its text; its last line (``module.Type: message``) is
    the message."""
    text = str(exc)
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        found = _WORKER_LAST_LINE.match(last)
        text = found.group(1) if found else last
    return " ".join(text.split())
