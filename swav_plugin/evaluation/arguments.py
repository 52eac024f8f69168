"""The eval tools' arguments, checked before any work: numbers, devices and where files go.

Each numeric or device argument is parsed by a ``type=`` function that refuses a bad value
with the value, the problem and the fix; :class:`ToolParser` turns every argument error into
a one-line :class:`ConfigError` (exit status 2, as the tools' other bad inputs). Whether the
machine has the ``--accelerator`` and ``--devices`` a protocol trains on is judged as for
swav-train (:func:`~swav_plugin.host.device_checks.check_devices_present`). The directories a
tool writes to are tried (created with a temporary file, then removed again) before any
feature is extracted, so that a path that cannot be written is refused before the work whose
result it would hold.
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

from swav_plugin.host.device_checks import LaunchNames, check_devices_present, uses_cpu
from swav_plugin.host.errors import ConfigError, storage_problem

#: The seeds Lightning and NumPy accept.
SEED_RANGE = (0, 2**32 - 1)
#: Lightning's precision names (``transformer-engine`` left out: it needs a package of its own).
PRECISIONS = ("64", "32", "16", "bf16", "64-true", "32-true", "16-true", "bf16-true",
              "16-mixed", "bf16-mixed")
#: The accelerators the tools train on (``gpu`` is Lightning's name for ``cuda``, or for
#: ``mps`` on a Mac).
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
#: The training tools' names for the launch settings: no override starts more CPU ranks.
TOOL_NAMES = LaunchNames(accelerator="--accelerator", devices="--devices",
                         use_cpu="pass --accelerator cpu", all_gpus="auto", override=None)


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
            raise argparse.ArgumentTypeError(f"'{text}' needs a CUDA GPU, and torch finds none "
                                             "on this machine; pass --device cpu (or auto)")
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
    """``--accelerator``: one of :data:`ACCELERATORS`; ``mps`` only where Apple's backend is
    (the GPUs are judged with ``--devices``: :func:`check_training_devices`)."""
    if text not in ACCELERATORS:
        raise argparse.ArgumentTypeError(f"'{text}' is not an accelerator the tools train on; "
                                         f"give one of {', '.join(ACCELERATORS)}")
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


def lightning_devices(text: str) -> int | list[int] | str:
    """``--devices`` (checked by :func:`devices`) as Lightning takes it: ``auto``, a number,
    or a list of GPU indices."""
    if text == "auto":
        return text
    return int(text) if text.isdigit() else [int(p) for p in text.split(",")]


def check_training_devices(args: argparse.Namespace) -> None:
    """Refuse an ``--accelerator`` and ``--devices`` this machine cannot train on: GPUs it
    lacks, more CPU ranks than its cores or memory hold (swav-train's check), or GPU indices
    where training runs on the CPU."""
    section = {"accelerator": args.accelerator, "devices": lightning_devices(args.devices)}
    if isinstance(section["devices"], list) and uses_cpu(section):
        raise ConfigError(f"--devices {args.devices}: GPU indices, but training runs on the "
                          "CPU; give a number of processes or auto")
    # the model is not loaded yet: the memory check counts each rank's floor alone
    check_devices_present(section, names=TOOL_NAMES)


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
