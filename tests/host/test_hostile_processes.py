"""What a user or a cluster can do to running swav-train processes: start a second one on the
same directory, kill the launcher of a DDP run, press Ctrl-C, close the terminal, ask for 64
CPU ranks. Real processes, as a shell or a scheduler would run them."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from swav_plugin.host.checkpoint_files import step_checkpoint_name
from swav_plugin.host.preemption import PREEMPTED_EXIT
from tests.host.test_resume import children, finish, losses, recipe, start, wait_for


def write(tmp_path: Path, name: str, epochs: int = 2, **kwargs) -> tuple[Path, Path]:
    out = tmp_path / name
    content = recipe(out, **kwargs)
    content["trainer"]["max_epochs"] = epochs
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(content))
    return path, out


def gone(pid: int) -> bool:
    """Whether ``pid`` has ended (a zombie left for a parent that no longer reaps counts)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


@pytest.mark.slow
def test_a_second_process_on_a_run_directory_is_refused_and_the_first_runs_on(tmp_path):
    recipe_path, out = write(tmp_path, "shared", workers=0)
    first = start(recipe_path)
    wait_for(first, out / "checkpoints" / step_checkpoint_name(2))
    code, output = finish(start(recipe_path), timeout=120)
    assert code == 2, output
    errors = [line for line in output.splitlines() if line.startswith("swav-train: error:")]
    assert errors == [f"swav-train: error: run.output_dir '{out}' is in use by another swav-train "
                      f"process (pid {first.pid} on {os.uname().nodename}); wait for it to end, "
                      "or choose another run.output_dir"], output
    code, output = finish(first)
    assert code == 0, output
    steps = list(losses(out))
    assert steps == sorted(set(steps)) == list(range(8))  # one row per step, none twice


@pytest.mark.slow
def test_the_other_ranks_die_with_a_killed_launcher(tmp_path):
    recipe_path, out = write(tmp_path, "orphans", epochs=50, devices=2, workers=0)
    launcher = start(recipe_path)
    wait_for(launcher, out / "checkpoints" / step_checkpoint_name(2))
    (rank1,) = children(launcher.pid)
    os.kill(launcher.pid, signal.SIGKILL)  # as the out-of-memory killer would
    launcher.wait()
    deadline = time.monotonic() + 30
    while not gone(rank1) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert gone(rank1), f"rank 1 (pid {rank1}) outlived its launcher"


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGHUP], ids=["ctrl_c", "hangup"])
def test_ctrl_c_and_a_closed_terminal_checkpoint_and_exit_for_a_rerun(tmp_path, signum):
    recipe_path, out = write(tmp_path, "interrupted", workers=1)
    proc = start(recipe_path)
    wait_for(proc, out / "checkpoints" / step_checkpoint_name(2))
    os.killpg(proc.pid, signum)  # the terminal signals its whole process group
    code, output = finish(proc)
    assert code == PREEMPTED_EXIT, output
    stopped = int(output.split("stopped by a signal after step ")[1].split(";")[0])
    assert (out / "checkpoints" / step_checkpoint_name(stopped)).is_file()
    if signum == signal.SIGINT:  # the rerun, once: it does not depend on the signal
        code, output = finish(start(recipe_path))
        assert code == 0, output
        assert sorted(losses(out)) == list(range(8))


@pytest.mark.slow
def test_64_cpu_ranks_are_refused_in_one_line_within_seconds(tmp_path):
    recipe_path, out = write(tmp_path, "many", workers=0)
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "swav_plugin", str(recipe_path),
                           "trainer.devices=64", "trainer.strategy=ddp"],
                          capture_output=True, text=True, timeout=120)
    code, output = done.returncode, done.stdout + done.stderr
    elapsed = time.monotonic() - began
    assert code == 2, output
    assert output.strip().splitlines()[-1].startswith(
        "swav-train: error: trainer.devices: 64 CPU ranks asked for, but this machine has "
        f"{len(os.sched_getaffinity(0))} cores")
    assert elapsed < 60, f"refused after {elapsed:.0f} s"
    assert not out.exists()
