"""Checkpoint files a long run can trust: written atomically, verified when read.

:func:`write_checkpoint` writes each checkpoint to a temporary file, flushes it to disk and
renames it (a crash or a full disk mid-write leaves the previous checkpoint intact), and
records its SHA-256 beside it (``NAME.sha256``); :func:`read_checkpoint` checks that digest,
or, when the record is missing or garbled, the CRC-32 that torch's zip format stores for every
member, so a truncated or altered file is reported by name instead of resuming from garbage.
Lightning's own writer also renames a temporary file, but first serialises the whole
checkpoint in memory, never flushes it to disk and records nothing to check it against.
:func:`latest_good_checkpoint` finds where to resume: the newest checkpoint that verifies,
falling back to older ones with a warning naming each bad file.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from swav_plugin.host.atomic import atomic_path, file_digest, write_atomic
from swav_plugin.host.errors import ConfigError, storage_errors

LAST = "last.ckpt"
_STEP_NAME = re.compile(r"^step=(\d+)\.ckpt$")
#: The fix of every file that is not a training checkpoint.
NEEDED = ("this needs a checkpoint written by swav-train (RUN/checkpoints/*.ckpt), which carries "
          "the recipe that rebuilds its model")
#: Weights-only refusals of an object that would run code (other refusals: a corrupt file).
_REFUSED = re.compile(r"GLOBAL|unrecognized function|allowlisted")
_HEX_DIGEST = re.compile(r"^[0-9a-f]{64}$")


class CheckpointError(ConfigError):
    """A checkpoint that is missing, truncated, corrupt or unsafe to load."""


class NotACheckpoint(CheckpointError):
    """A file that is something else: exported weights, a bare object, or pickled code.

    ``problem`` says what the file is; the message adds what is needed instead.
    """

    def __init__(self, problem: str) -> None:
        super().__init__(f"{problem}; {NEEDED}")
        self.problem = problem


def step_checkpoint_name(step: int) -> str:
    """File name of the checkpoint after ``step`` optimizer steps (sorts by step)."""
    return f"step={step:09d}.ckpt"


def step_of(path: Path) -> int:
    """The step of a ``step=N.ckpt`` file name (:func:`step_checkpoint_name`)."""
    return int(_STEP_NAME.match(path.name).group(1))


def digest_path(path: Path) -> Path:
    """Where the SHA-256 of checkpoint ``path`` is recorded."""
    return path.with_name(path.name + ".sha256")


def write_checkpoint(checkpoint: dict[str, Any], path: Path) -> None:
    """Save ``checkpoint`` to ``path`` atomically, flushed to disk, with its SHA-256 beside it.

    A storage failure (a full disk, a read-only or vanished directory) raises
    :class:`~swav_plugin.host.errors.RunError` naming the path and the cause (and the
    checkpoints written before are intact).
    """
    with storage_errors("cannot write checkpoint", path,
                        " (the checkpoints written before are intact)"):
        with atomic_path(path) as tmp:
            # through a Python file, so that a full disk is an OSError (ENOSPC) and not
            # torch's "unexpected pos"
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())  # on disk before the rename makes it the checkpoint
            digest = file_digest(tmp)
        write_atomic(digest_path(path), lambda f: f.write(f"{digest}  {path.name}\n"))
    with contextlib.suppress(OSError):  # the rename itself durable (not possible everywhere)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def recorded_digest(path: Path) -> str | None:
    """The SHA-256 recorded beside checkpoint ``path``; ``None`` when there is no sidecar or
    it is garbled (not a hex digest), so that the checkpoint is checked by its contents."""
    try:
        text = digest_path(path).read_bytes()[:200].decode("ascii")
    except (OSError, UnicodeDecodeError):
        return None
    digest = text.partition(" ")[0].strip()
    return digest if _HEX_DIGEST.match(digest) else None


def _verify(path: Path, real: Path) -> None:
    """Check ``real`` (the file ``path`` names) against its sidecar's SHA-256, or, without a
    usable sidecar, against the CRC-32 of every member of its zip archive."""
    recorded = recorded_digest(real)
    if recorded is not None:
        if file_digest(real) != recorded:
            raise CheckpointError(
                f"checkpoint '{path}' is truncated or corrupt: its SHA-256 differs from the one "
                f"recorded when it was written ({digest_path(real).name}); copy it again or use "
                "another checkpoint"
            )
        return
    if not zipfile.is_zipfile(real):  # not torch's zip format: torch.load judges it
        return
    try:
        with zipfile.ZipFile(real) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
        bad = f"{type(exc).__name__}: {exc}"
    if bad is not None:
        raise CheckpointError(
            f"checkpoint '{path}' is truncated or corrupt: its member '{bad}' fails its CRC-32 "
            f"check (and {digest_path(real).name} is missing or garbled); copy it again or use "
            "another checkpoint"
        )


def is_safetensors(path: Path) -> bool:
    """Whether ``path`` opens as safetensors do: an 8-byte little-endian length, then JSON."""
    with path.open("rb") as f:
        head = f.read(9)
    return (len(head) == 9 and head[8:] == b"{"
            and 8 + int.from_bytes(head[:8], "little") <= path.stat().st_size)


def _load_error(exc: Exception) -> str:
    """``Type: first sentence`` of a load error; of PyTorch's many-line weights-only message,
    the reason it quotes (e.g. the global it refused)."""
    text = str(exc).partition("WeightsUnpickler error:")[2] or str(exc)
    lines = text.strip().splitlines()
    return f"{type(exc).__name__}: {lines[0].split('. ')[0]}" if lines else type(exc).__name__


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` after checking its recorded SHA-256 (or,
    without a usable record, the CRC-32s of its zip members).

    The one reader of checkpoints (training resume, the eval tools, ``swav-export``). Raises
    :class:`CheckpointError` (one line naming the file) when it is missing, exported weights,
    does not match its digest, is truncated or corrupt, or holds objects that only an unsafe
    load could build (a pickled callable would run code).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist; train first or fix the path")
    real = path.resolve()  # last.ckpt may be re-pointed meanwhile: read one file throughout
    if is_safetensors(real):
        raise NotACheckpoint(
            f"'{path}' is a safetensors file of exported weights (e.g. from swav-export), not "
            "the training checkpoint"
        )
    _verify(path, real)
    try:
        with warnings.catch_warnings():  # whatever torch.load warns of, the outcome is reported
            warnings.simplefilter("ignore")
            checkpoint = torch.load(real, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        reason = _load_error(exc)
        if isinstance(exc, pickle.UnpicklingError) and _REFUSED.search(reason):
            raise NotACheckpoint(
                f"checkpoint '{path}' cannot be loaded safely ({reason}): it holds objects "
                "beyond tensors and plain values, and loading them could run code"
            ) from None
        raise CheckpointError(  # empty, cut short, or not a torch file at all
            f"checkpoint '{path}' is truncated or corrupt ({real.stat().st_size} bytes; "
            f"{reason}); copy it again or use another checkpoint"
        ) from None
    if not isinstance(checkpoint, dict):
        raise NotACheckpoint(
            f"'{path}' is a {type(checkpoint).__name__}, not a training checkpoint"
        )
    return checkpoint


def step_checkpoints(directory: Path) -> list[Path]:
    """The ``step=N.ckpt`` files of ``directory``, newest (highest step) first."""
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if _STEP_NAME.match(p.name)]
    return sorted(found, key=step_of, reverse=True)


def latest_good_checkpoint(
    directory: Path, warn: Callable[[str], None]
) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint in ``directory`` that loads and verifies, and its contents.

    The bad ones skipped on the way to a good one are reported through ``warn``; ``None`` when
    there are none at all; :class:`CheckpointError` (one line) when there are some but none
    is good.
    """
    candidates = step_checkpoints(directory)
    legacy = directory / LAST
    if legacy.is_file() and not legacy.is_symlink():  # written by an earlier version
        candidates.append(legacy)
    problems: list[str] = []
    for path in candidates:
        try:
            found = path, read_checkpoint(path)
        except CheckpointError as exc:
            problems.append(str(exc))
            continue
        for problem in problems:
            warn(f"{problem}; falling back to the previous checkpoint")
        return found
    if candidates:
        raise CheckpointError(
            f"none of the {len(candidates)} checkpoints in '{directory}' can be resumed from "
            f"(newest: {problems[0]}); move the directory away to start afresh"
        )
    return None
