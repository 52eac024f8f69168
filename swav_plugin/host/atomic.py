"""Atomic file writes: a file is either its old self or complete, never half-written.

Everything this package writes that a user keeps (recipes, results, feature caches, exported
weights) goes through a temporary file beside the target and a rename, which is atomic on
POSIX file systems: a crash, a full disk or a kill mid-write leaves the previous file intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import yaml


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write; renamed onto ``path`` if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    # mkstemp makes the file private (0600); give it the permissions of any new file
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: Path, write: Callable[[IO[str]], None]) -> None:
    """Write text to ``path`` through ``write(file)``, atomically."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        write(f)


def save_yaml_atomic(data: Any, path: Path) -> None:
    """Write ``data`` as YAML, atomically."""
    write_atomic(path, lambda f: yaml.safe_dump(data, f, sort_keys=False))


def save_json_atomic(data: Any, path: Path) -> None:
    """Write ``data`` as indented JSON, atomically."""
    write_atomic(path, lambda f: json.dump(data, f, indent=2))


def file_digest(path: str | Path, chunk_bytes: int = 1 << 22) -> str:
    """SHA-256 of a file's contents (streamed: bounded memory for large checkpoints)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
