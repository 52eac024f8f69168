"""Whether the machine can run the launch a recipe asks for, checked before anything starts.

A GPU recipe on a machine without (enough) GPUs is refused. On the CPU every device is a
process of its own: ``trainer.devices: 64`` on a 2-core machine would start 64 ranks that fill
the memory and wait at the rendezvous, so a CPU launch is held to the machine's cores and to
what its memory can hold, unless ``run.allow_cpu_oversubscription`` says the user means it.
The messages name a recipe's keys, or the options of a tool that passes its own
(:class:`LaunchNames`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import is_lazy

from swav_plugin.host.errors import ConfigError
from swav_plugin.host.quoting import shown

#: Memory a CPU rank takes before its model (the interpreter, torch and Lightning, less what
#: the ranks share): a floor, not an estimate of a whole run.
RANK_BASE_BYTES = 350 * 2**20
#: A rank holds the weights, their gradients, the optimizer's state and a copy in flight.
STATE_COPIES = 4


@dataclass(frozen=True)
class LaunchNames:
    """How the refusals name a launch's settings and their fixes: a recipe's keys (swav-train)
    by default, a tool's options where the tool passes its own."""

    accelerator: str = "trainer.accelerator"
    devices: str = "trainer.devices"
    #: the fix that moves the launch to the CPU
    use_cpu: str = "set trainer.accelerator: cpu"
    #: the devices value that asks for every GPU
    all_gpus: str = "-1"
    #: what starts more CPU ranks than the machine holds anyway; None where nothing does
    override: str | None = "run.allow_cpu_oversubscription: true"


RECIPE_NAMES = LaunchNames()


def state_bytes(module: nn.Module) -> int:
    """Bytes of ``module``'s state dict (parameters not yet materialised count nothing)."""
    return sum(t.numel() * t.element_size() for t in module.state_dict().values()
               if isinstance(t, torch.Tensor) and not is_lazy(t))


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def available_memory() -> int | None:
    """Bytes of memory available to new processes (``MemAvailable``); ``None`` if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def uses_cpu(section: Mapping[str, Any]) -> bool:
    """Whether Lightning runs the trainer ``section`` (its ``accelerator``) on the CPU."""
    accelerator = section.get("accelerator", "auto")
    if accelerator == "cpu":
        return True
    return accelerator == "auto" and not torch.cuda.is_available() and not (
        torch.backends.mps.is_available())


def _count(devices: Any) -> int | None:
    if isinstance(devices, bool):
        return None
    if isinstance(devices, int) and devices > 0:
        return devices
    if isinstance(devices, list):
        return len(devices)
    if isinstance(devices, str) and devices.isdigit():
        return int(devices)
    return None  # 'auto' / -1: Lightning picks what the machine has


def check_devices_present(section: Mapping[str, Any], state_bytes: int = 0,
                          allow_cpu_oversubscription: bool = False,
                          names: LaunchNames = RECIPE_NAMES) -> None:
    """Refuse, in one line naming the fix, a launch the machine cannot hold: GPUs it lacks,
    or more CPU ranks (``trainer.devices`` on the CPU, per node) than its cores or its memory
    (:data:`RANK_BASE_BYTES` + :data:`STATE_COPIES` × ``state_bytes`` per rank) allow. The
    messages name the settings as ``names`` does."""
    if uses_cpu(section):
        if not allow_cpu_oversubscription:
            _check_cpu_ranks(_count(section.get("devices", "auto")), state_bytes, names)
        return
    _check_gpus(section, names)


def _check_cpu_ranks(ranks: int | None, state_bytes: int, names: LaunchNames) -> None:
    if ranks is None or ranks == 1:
        return
    anyway = f", or {names.override} to start them anyway" if names.override else ""
    cores = available_cores()
    if ranks > cores:
        raise ConfigError(
            f"{names.devices}: {ranks} CPU ranks asked for, but this machine has {cores} "
            f"cores (each CPU device is a process); set {names.devices} to at most {cores}"
            f"{anyway}"
        )
    memory = available_memory()
    needed = ranks * (RANK_BASE_BYTES + STATE_COPIES * state_bytes)
    if memory is not None and needed > memory:
        raise ConfigError(
            f"{names.devices}: {ranks} CPU ranks need at least {needed / 2**30:.1f} GiB of "
            f"memory, but {memory / 2**30:.1f} GiB is available; lower {names.devices}{anyway}"
        )


def _check_gpus(section: Mapping[str, Any], names: LaunchNames) -> None:
    accelerator = section.get("accelerator", "auto")
    if accelerator == "gpu" and torch.backends.mps.is_available():
        return  # Lightning's 'gpu' is Apple's MPS there
    # 'auto' is CUDA wherever torch finds it (MPS and CUDA are never both present)
    if accelerator not in ("gpu", "cuda") and not (accelerator == "auto"
                                                   and torch.cuda.is_available()):
        return
    available = torch.cuda.device_count()
    if available == 0:
        raise ConfigError(
            f"{names.accelerator}: {shown(accelerator)} but no GPU is available on this machine "
            f"(torch.cuda.device_count() is 0); {names.use_cpu}, or run on a machine with a GPU"
        )
    devices = section.get("devices", "auto")
    every = f"(or {names.all_gpus}: all of them)"
    if isinstance(devices, int) and not isinstance(devices, bool) and devices > available:
        raise ConfigError(
            f"{names.devices}: {devices} GPUs asked for but this machine has {available}; set "
            f"{names.devices} to at most {available} {every}"
        )
    if isinstance(devices, list):
        absent = [i for i in devices if isinstance(i, int) and i >= available]
        if absent:
            raise ConfigError(
                f"{names.devices}: GPU {absent[0]} asked for but this machine has {available}, "
                f"numbered from 0; set {names.devices} to indices below {available} {every}"
            )
