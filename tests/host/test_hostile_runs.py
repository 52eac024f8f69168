"""What a user or a cluster can do to a run, in process: device counts on the CPU, a second
run on one directory, damaged checkpoint records, storage failures, foreign resume files.

Each is answered in one line (exit 2 for bad input, 1 for a failure at run time) and loses
nothing already written. The real-process cases (two processes, killed launchers, Ctrl-C)
are in test_hostile_processes.py.
"""

import builtins
import copy
import errno
import os
import shutil
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torchvision
import yaml
from safetensors.torch import save_file

from swav_plugin.host import device_checks
from swav_plugin.host.checkpoint_files import (
    CheckpointError,
    latest_good_checkpoint,
    read_checkpoint,
    step_checkpoint_name,
    write_checkpoint,
)
from swav_plugin.host.checkpoints import Checkpoints
from swav_plugin.host.device_checks import check_devices_present
from swav_plugin.host.errors import ConfigError
from swav_plugin.host.preemption import Preemption
from swav_plugin.host.resolve import resolve
from swav_plugin.host.run_lock import LOCK_FILE, RunLock
from swav_plugin.host.runner import main, run


def cli(tmp_path, recipe, *overrides):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return main([str(path), *overrides])


def error_line(capsys):
    """The one error line of a failed command (warnings may precede it; no traceback)."""
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("swav-train: error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


# --- device counts on the CPU ---------------------------------------------------------------

@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.setattr(device_checks, "available_cores", lambda: 2)
    monkeypatch.setattr(device_checks, "available_memory", lambda: 8 * 2**30)


CPU_REFUSED = r"^trainer\.devices: {n} CPU ranks asked for, but this machine has 2 cores"


@pytest.mark.parametrize("section, ranks", [
    ({"accelerator": "cpu", "devices": 64}, 64),
    ({"accelerator": "cpu", "devices": 3}, 3),
    ({"accelerator": "cpu", "devices": [0, 1, 2]}, 3),
    ({"accelerator": "cpu", "devices": "5"}, 5),
    ({"accelerator": "cpu", "devices": 3, "num_nodes": 4}, 3),  # per machine
], ids=["64", "3", "list", "string", "per_node"])
def test_more_cpu_ranks_than_cores_are_refused(two_cores, section, ranks):
    with pytest.raises(ConfigError, match=CPU_REFUSED.format(n=ranks) + r".*"
                       r"run\.allow_cpu_oversubscription: true to start them anyway$"):
        check_devices_present(section)


def test_auto_accelerator_without_a_gpu_counts_as_the_cpu(two_cores):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: 'auto' picks it")  # never the case in CI
    with pytest.raises(ConfigError, match=CPU_REFUSED.format(n=16)):
        check_devices_present({"accelerator": "auto", "devices": 16})


def test_cpu_ranks_the_memory_cannot_hold_are_refused(monkeypatch):
    monkeypatch.setattr(device_checks, "available_cores", lambda: 64)
    monkeypatch.setattr(device_checks, "available_memory", lambda: 2 * 2**30)
    with pytest.raises(ConfigError, match=r"^trainer\.devices: 8 CPU ranks need at least 6\.7 GiB "
                       r"of memory, but 2\.0 GiB is available; lower trainer\.devices"):
        check_devices_present({"accelerator": "cpu", "devices": 8}, state_bytes=2**27)


@pytest.mark.parametrize("section", [
    {"accelerator": "cpu", "devices": 2}, {"accelerator": "cpu", "devices": 1},
    {"accelerator": "cpu", "devices": "auto"}, {"accelerator": "cpu", "devices": -1},
])
def test_cpu_launches_the_machine_holds_pass(two_cores, section):
    check_devices_present(section)


def test_the_override_starts_more_ranks_than_cores(two_cores):
    check_devices_present({"accelerator": "cpu", "devices": 64}, allow_cpu_oversubscription=True)


def test_the_cli_refuses_64_cpu_ranks_in_one_line_and_writes_nothing(tiny_recipe, tmp_path,
                                                                       two_cores, capsys):
    assert cli(tmp_path, tiny_recipe, "trainer.devices=64") == 2
    assert error_line(capsys).startswith(
        "swav-train: error: trainer.devices: 64 CPU ranks asked for, but this machine has 2 cores")
    assert not (tmp_path / "run").exists()


# --- one run per directory ------------------------------------------------------------------

def test_a_second_run_on_a_locked_directory_is_refused_and_touches_nothing(tiny_recipe, tmp_path,
                                                                          capsys):
    out = tmp_path / "run"
    with RunLock(out):
        assert cli(tmp_path, tiny_recipe) == 2
        line = error_line(capsys)
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]
    assert line == (f"swav-train: error: run.output_dir '{out.absolute()}' is in use by another "
                    f"swav-train process (pid {os.getpid()} on {os.uname().nodename}); wait for "
                    "it to end, or choose another run.output_dir")


def test_the_lock_of_an_ended_process_is_not_stale(tiny_recipe, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_FILE).write_text("pid 999999 on a-host-long-gone\n")  # left by a kill -9
    recipe = resolve(copy.deepcopy(tiny_recipe))
    assert run(recipe).global_step == 3
    assert run(resolve(copy.deepcopy(tiny_recipe))).global_step == 3  # released after the run


@pytest.mark.parametrize("where, message", [
    ("file", "is a file; choose a directory for the run"),
    ("under_a_file", "a part of the path is a file, not a directory; choose another path"),
])
def test_an_output_path_in_the_way_is_refused(tiny_recipe, tmp_path, capsys, where, message):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    out = blocker if where == "file" else blocker / "run"
    assert cli(tmp_path, tiny_recipe, f"run.output_dir={out}") == 2
    assert message in error_line(capsys)
    assert blocker.read_text() == "a file"


@pytest.mark.parametrize("code, message", [
    (errno.EROFS, "the file system is read-only; choose a writable directory"),
    (errno.EACCES, "permission denied; choose a directory you can write to"),
])
def test_an_unwritable_output_directory_is_refused_before_any_work(
        tiny_recipe, tmp_path, capsys, monkeypatch, code, message):
    # as root (here and in CI) a chmod'ed directory stays writable: the system call fails instead
    real_open = os.open

    def refusing_open(path, *args, **kwargs):
        if str(path).endswith(LOCK_FILE):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    assert cli(tmp_path, tiny_recipe) == 2
    line = error_line(capsys)
    assert line.startswith(f"swav-train: error: run.output_dir '{tmp_path / 'run'}': {message}")


# --- checkpoints verified by their own contents ---------------------------------------------

def flip_4k(path):
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 4096] = bytes(b ^ 0xFF for b in data[middle:middle + 4096])
    path.write_bytes(data)


@pytest.fixture
def written(tmp_path):
    path = tmp_path / step_checkpoint_name(2)
    write_checkpoint({"w": torch.randn(20_000), "global_step": 2}, path)
    return path


CRC_REFUSED = "fails its CRC-32 check (and {name}.sha256 is missing or garbled)"


def test_a_damaged_checkpoint_without_its_sidecar_is_refused(written):
    written.with_name(written.name + ".sha256").unlink()
    flip_4k(written)
    with pytest.raises(CheckpointError, match=r"its member '.*' fails its CRC-32 check"):
        read_checkpoint(written)


@pytest.mark.parametrize("garble", [b"\xff\xfe\x00binary", b"0123abc", b"", b"z" * 64 + b"  x"],
                         ids=["not_utf8", "short", "empty", "not_hex"])
def test_a_garbled_sidecar_falls_back_to_the_archive_crcs(written, garble):
    sidecar = written.with_name(written.name + ".sha256")
    sidecar.write_bytes(garble)
    assert read_checkpoint(written)["global_step"] == 2  # intact: trusted by its CRCs
    flip_4k(written)
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint(written)
    assert CRC_REFUSED.format(name=written.name) in str(caught.value)


def test_resume_falls_back_past_a_damaged_checkpoint_without_sidecar(tmp_path):
    older, newer = tmp_path / step_checkpoint_name(1), tmp_path / step_checkpoint_name(2)
    write_checkpoint({"global_step": 1, "w": torch.randn(20_000)}, older)
    write_checkpoint({"global_step": 2, "w": torch.randn(20_000)}, newer)
    newer.with_name(newer.name + ".sha256").unlink()
    flip_4k(newer)
    warnings = []
    path, checkpoint = latest_good_checkpoint(tmp_path, warnings.append)
    assert (path, checkpoint["global_step"]) == (older, 1)
    assert len(warnings) == 1 and "fails its CRC-32 check" in warnings[0]


# --- storage failures at run time ------------------------------------------------------------

def test_a_full_disk_at_a_checkpoint_is_one_line_exit_1_and_keeps_the_earlier_ones(
        tiny_recipe, tmp_path, capsys, monkeypatch):
    recipe = copy.deepcopy(tiny_recipe)
    recipe["trainer"].update(max_epochs=2)
    assert cli(tmp_path, recipe, "trainer.max_epochs=1") == 0
    checkpoints = tmp_path / "run" / "checkpoints"
    before = {p.name: p.read_bytes() for p in checkpoints.iterdir()}
    real_open = builtins.open

    def full_disk(file, mode="r", *args, **kwargs):  # the kernel's own ENOSPC
        if "w" in mode and str(file).endswith(".tmp") and "step=" in str(file):
            return real_open("/dev/full", mode, *args, **kwargs)
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", full_disk)
    assert cli(tmp_path, recipe) == 1
    line = error_line(capsys)
    assert line.startswith(f"swav-train: error: cannot write checkpoint '{checkpoints.absolute()}"
                           f"/{step_checkpoint_name(6)}': the disk is full; free space there")
    assert line.endswith("(the checkpoints written before are intact)")
    monkeypatch.setattr(builtins, "open", real_open)
    assert {p.name: p.read_bytes() for p in checkpoints.iterdir()} == before
    assert read_checkpoint(checkpoints / "last.ckpt")["global_step"] == 3


def test_a_disk_too_small_for_the_checkpoints_is_refused_before_training(
        tiny_recipe, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(free=5 * 2**20))
    assert cli(tmp_path, tiny_recipe) == 2
    line = error_line(capsys)
    assert "has 5 MiB free, but 3 checkpoints of this model take about" in line
    assert not (tmp_path / "run").exists()


def test_a_metrics_write_failure_names_the_file_and_the_cause(tiny_recipe, tmp_path, capsys,
                                                              monkeypatch):
    real_open = builtins.open

    def full_disk(file, mode="r", *args, **kwargs):
        if str(file).endswith("metrics.csv") and "a" in mode:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))
        return real_open(file, mode, *args, **kwargs)

    recipe = copy.deepcopy(tiny_recipe)
    recipe["trainer"].update(limit_train_batches=4)
    monkeypatch.setattr(builtins, "open", full_disk)
    assert cli(tmp_path, recipe) == 1
    assert error_line(capsys) == (
        f"swav-train: error: cannot write the run '{(tmp_path / 'run').absolute()}/metrics.csv': "
        "the disk is full; free space there or choose another directory")


# --- resuming from foreign files ---------------------------------------------------------------

def foreign_files(tmp_path):
    resnet = torchvision.models.resnet18().state_dict()
    torch.save(resnet, tmp_path / "tv.pth")
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 3}, tmp_path / "lightning.ckpt")
    save_file({"w": torch.zeros(2)}, tmp_path / "backbone.safetensors")
    (tmp_path / "noise.ckpt").write_bytes(os.urandom(3000))
    return {
        "tv.pth": "is a bare state dict (122 entries, e.g. 'conv1.weight'), not a swav-train "
                  "checkpoint of this recipe",
        "lightning.ckpt": "is a Lightning checkpoint without a recipe (state_dict of 1 entries, "
                          "e.g. 'w'), not a swav-train checkpoint of this recipe",
        "backbone.safetensors": "is a safetensors file of exported weights",
        "noise.ckpt": "is truncated or corrupt (3000 bytes;",
    }


def test_resume_from_a_foreign_file_is_refused_in_one_line(tiny_recipe, tmp_path, capsys):
    for name, message in foreign_files(tmp_path).items():
        assert cli(tmp_path, tiny_recipe, f"run.resume_from={tmp_path / name}") == 2, name
        assert message in error_line(capsys), name
        assert not (tmp_path / "run").exists(), name


def test_an_own_checkpoint_without_a_recipe_is_not_resumed(tiny_recipe, tmp_path, capsys):
    checkpoints = tmp_path / "run" / "checkpoints"
    write_checkpoint({"state_dict": {"w": torch.zeros(2)}, "global_step": 4},
                     checkpoints / step_checkpoint_name(4))
    assert cli(tmp_path, tiny_recipe) == 2
    assert error_line(capsys) == (
        f"swav-train: error: '{checkpoints.absolute() / step_checkpoint_name(4)}' is a Lightning "
        "checkpoint without a recipe (state_dict of 1 entries, e.g. 'w'), not a swav-train "
        "checkpoint of this recipe, so it cannot be checked against the recipe or resumed; point "
        "run.resume_from at RUN/checkpoints/*.ckpt of a run of this recipe, or start afresh in "
        "another run.output_dir")


# --- signals: handlers are the run's only while it runs --------------------------------------

def test_the_stop_signals_get_their_handlers_back_after_a_run(tiny_recipe):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM)}
    run(resolve(copy.deepcopy(tiny_recipe)))
    assert {s: signal.getsignal(s) for s in before} == before


def test_a_first_ctrl_c_asks_for_a_checkpoint_and_a_second_aborts_at_once():
    preemption = Preemption(Checkpoints(Path("unused")))
    trainer = SimpleNamespace(strategy=SimpleNamespace(launcher=None), world_size=1)
    preemption.setup(trainer, None, "fit")
    preemption.on_train_start(trainer, None)
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        os.kill(os.getpid(), signal.SIGINT)  # a first Ctrl-C: the run stops at the step's end
        assert preemption._stop_requested(trainer)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # the second: now
            time.sleep(1)  # the handler runs at the next bytecode; never reached
    finally:
        preemption.teardown(trainer, None, "fit")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
