"""The eval tools' arguments, checked before any work: numbers, devices and where files go.

Each numeric or device argument is parsed by a ``type=`` function that refuses a bad value
with the value, the problem and the fix; :class:`ToolParser` turns every argument error into
a one-line :class:`ConfigError` (exit status 2, as the tools' other bad inputs). The
directories a tool writes to are tried (created with a temporary file, then removed again)
before any feature is extracted: a path that cannot be written is found in seconds, not after
an hour of extraction.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import torch

from swav_plugin.host.errors import ConfigError, storage_problem

#: The seeds Lightning and NumPy accept.
SEED_RANGE = (0, 2**32 - 1)
#: Lightning's precision names (``transformer-engine`` left out: it needs a package of its own).
PRECISIONS = ("64", "32", "16", "bf16", "64-true", "32-true", "16-true", "bf16-true",
              "16-mixed", "bf16-mixed")
#: The accelerators the tools train on (``gpu`` is Lightning's name for ``cuda``).
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")


class ToolParser(argparse.ArgumentParser):
    """An argument parser whose errors are a one-line :class:`ConfigError`, not usage text."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


def whole(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """A ``type=`` function for whole numbers from ``minimum`` (to ``maximum``)."""
    wanted = (f"a whole number of {minimum} or more" if maximum is None
              else f"a whole number from {minimum} to {maximum}")

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"'{text}' is not a whole number; give {wanted}") from None
        if value < minimum or (maximum is not None and value > maximum):
            size = "small" if value < minimum else "large"
            raise argparse.ArgumentTypeError(f"'{text}' is too {size}; give {wanted}")
        return value

    return parse


def number(
    above: float | None = None, at_least: float | None = None, at_most: float | None = None
) -> Callable[[str], float]:
    """A ``type=`` function for finite numbers ``> above`` or ``>= at_least``, ``<= at_most``."""
    bounds = ([f"above {above:g}"] if above is not None else []) + (
        [f"of {at_least:g} or more"] if at_least is not None else [])
    bounds += [f"at most {at_most:g}"] if at_most is not None else []
    wanted = "a number " + " and ".join(bounds)

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a number; give {wanted}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"'{text}' is not a finite number; give {wanted}")
        small = (above is not None and value <= above) or (at_least is not None
                                                           and value < at_least)
        if small or (at_most is not None and value > at_most):
            size = "small" if small else "large"
            raise argparse.ArgumentTypeError(f"'{text}' is too {size}; give {wanted}")
        return value

    return parse


def batches(text: str) -> float:
    """``--limit-train-batches``: a fraction of the batches (up to 1) or a whole count."""
    value = number(above=0)(text)
    if value > 1 and not value.is_integer():
        raise argparse.ArgumentTypeError(f"'{text}' is neither a fraction up to 1 nor a whole "
                                         "number of batches; give e.g. 0.5 or 20")
    return value


def _no_gpu(what: str, text: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(f"'{text}' needs a CUDA GPU, and torch finds none on this "
                                      f"machine; pass {what} cpu (or auto)")


def device(text: str) -> str:
    """``--device``: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, present on this
    machine."""
    if text == "auto":
        return text
    try:
        parsed = torch.device(text)
    except RuntimeError:
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"'{text}' is not a device; give auto, cpu, cuda, "
                                         "cuda:N or mps")
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise _no_gpu("--device", text)
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise argparse.ArgumentTypeError(
                f"'{text}' does not exist: torch finds {count} CUDA GPU(s) on this machine, "
                f"numbered from 0; pass --device cuda:N with N below {count}"
            )
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"'{text}' needs Apple's MPS backend, which this "
                                         "machine lacks; pass --device cpu (or auto)")
    return text


def accelerator(text: str) -> str:
    """``--accelerator``: one of :data:`ACCELERATORS`, present on this machine."""
    if text not in ACCELERATORS:
        raise argparse.ArgumentTypeError(f"'{text}' is not an accelerator the tools train on; "
                                         f"give one of {', '.join(ACCELERATORS)}")
    if text in ("gpu", "cuda") and not torch.cuda.is_available():
        raise _no_gpu("--accelerator", text)
    if text == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError("'mps' needs Apple's MPS backend, which this machine "
                                         "lacks; pass --accelerator cpu (or auto)")
    return text


def devices(text: str) -> str:
    """``--devices``: ``auto``, a number of devices, or GPU indices such as ``0,1``."""
    parts = text.split(",")
    if text == "auto" or (text.isdigit() and int(text) >= 1) or (
            len(parts) > 1 and all(p.isdigit() for p in parts)):
        return text
    raise argparse.ArgumentTypeError(f"'{text}' is not a number of devices; give auto, a whole "
                                     "number of 1 or more, or GPU indices such as 0,1")


def check_training_devices(args: argparse.Namespace) -> None:
    """Refuse ``--devices`` that the chosen ``--accelerator`` does not have."""
    gpu = args.accelerator in ("gpu", "cuda") or (args.accelerator == "auto"
                                                  and torch.cuda.is_available())
    if args.devices == "auto":
        return
    if not gpu:
        if not args.devices.isdigit():
            raise ConfigError(f"--devices {args.devices}: GPU indices, but training runs on the "
                              "CPU; give a number of processes or auto")
        return
    count = torch.cuda.device_count()
    found = f"--devices {args.devices}: torch finds {count} CUDA GPU(s) on this machine"
    if args.devices.isdigit():
        if int(args.devices) > count:
            raise ConfigError(f"{found}; give at most {count} (or auto)")
    elif max(int(p) for p in args.devices.split(",")) >= count:
        raise ConfigError(f"{found}, numbered from 0; give indices below {count} (or auto)")


def check_directory(directory: Path, argument: str) -> None:
    """Refuse ``directory`` (given as ``argument``, for the message) unless it can be created
    and a file written in it; what the check creates is removed again."""
    missing = []
    for folder in (directory, *directory.parents):
        if os.path.lexists(folder):
            break
        missing.append(folder)
    try:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            where = exc.filename or directory
            raise ConfigError(f"{argument} cannot be written: {storage_problem(exc, where)}") \
                from None
        try:
            with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-check-"):
                pass
        except OSError as exc:
            raise ConfigError(f"{argument} cannot be written: "
                              f"{storage_problem(exc, directory)}") from None
    finally:
        for folder in missing:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()


def check_output_file(path: Path, argument: str) -> None:
    """Refuse a result ``path`` that is a directory or whose directory cannot be written."""
    if path.is_dir():
        exc = IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        raise ConfigError(f"{argument} cannot be written: {storage_problem(exc, path)}")
    check_directory(path.parent, argument)
