"""Exact resume: a run killed (SIGKILL) or preempted (SIGTERM) and run again ends bit-identical.

Each run is the real command (``python -m swav_plugin RECIPE``) in its own process group, so
that a kill takes every process of the run, as a dead node or a scheduler does. The queue is
in use from the first epoch, the kill lands mid-epoch, and the resumed run is the same command
run again (auto-resume from the run directory).
"""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from swav_plugin.host.checkpoint_files import step_checkpoint_name
from swav_plugin.host.preemption import PREEMPTED_EXIT

STEPS_PER_EPOCH = 4
EPOCHS = 2


def recipe(out: Path, devices: int = 1, augment: str = "cpu", workers: int = 1) -> dict:
    return {
        "method": {
            "name": "swav",
            "backbone": {"name": "resnet18_cifar"},
            "head": {"name": "swav_head", "input_dim": 512, "hidden_dim": 32, "output_dim": 16,
                     "num_prototypes": 20, "freeze_prototypes_iters": 3},
            # full after the first step and in use from the second on, across every kill
            "queue": {"name": "swav_queue", "length": 16 * devices, "start_epoch": 0},
            "warmup_epochs": 0.5,
        },
        "data": {
            "dataset": {"name": "digits", "image_size": 8},
            "transform": {"name": "multicrop", "blur_prob": 0.5, "crops": [
                {"size": 8, "count": 2, "scale": [0.5, 1.0]},
                {"size": 4, "count": 1, "scale": [0.2, 0.5]}]},
            "collate": "multicrop_collate",
            "batch_size": 16,
            "num_workers": workers,
            "pin_memory": False,
            "augment": augment,
        },
        "trainer": {"max_epochs": EPOCHS, "limit_train_batches": STEPS_PER_EPOCH,
                    "accelerator": "cpu", "devices": devices,
                    "strategy": "ddp" if devices > 1 else "auto",
                    "enable_progress_bar": False, "enable_model_summary": False,
                    "log_every_n_steps": 1},
        "run": {"output_dir": str(out), "seed": 3, "checkpoint_every_n_steps": 2},
    }


def start(recipe_path: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "swav_plugin", str(recipe_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    output, _ = proc.communicate(timeout=timeout)
    return proc.returncode, output


def wait_for(proc: subprocess.Popen, checkpoint: Path) -> None:
    """Return once ``checkpoint`` (and its digest) is written."""
    digest = checkpoint.with_name(checkpoint.name + ".sha256")
    deadline = time.monotonic() + 300
    while not digest.exists():
        assert proc.poll() is None, f"the run ended before {checkpoint.name}:\n{finish(proc)[1]}"
        assert time.monotonic() < deadline, f"no {checkpoint.name} after 300 s"
        time.sleep(0.02)


def signal_after(proc: subprocess.Popen, checkpoint: Path, signum: int) -> None:
    """Send ``signum`` to the whole run once ``checkpoint`` (and its digest) is written."""
    wait_for(proc, checkpoint)
    os.killpg(proc.pid, signum)


def children(pid: int) -> list[int]:
    """The processes ``pid`` started (for a DDP run on one machine: the other ranks)."""
    return [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()]


def write_recipe(tmp_path: Path, name: str, **kwargs) -> tuple[Path, Path]:
    out = tmp_path / name
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe(out, **kwargs)))
    return path, out


def losses(out: Path) -> dict[int, str]:
    """The logged loss of every step, as written (no rounding)."""
    with open(out / "metrics.csv", newline="") as f:
        return {int(r["step"]): r["train/loss"] for r in csv.DictReader(f) if r["train/loss"]}


def final_state(out: Path) -> dict:
    path = out / "checkpoints" / step_checkpoint_name(STEPS_PER_EPOCH * EPOCHS)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return {"model": checkpoint["state_dict"], "optimizer": checkpoint["optimizer_states"],
            "queues": checkpoint["swav_queues"]}


def assert_bit_identical(a, b, where="") -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_bit_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_bit_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def straight_and_interrupted(tmp_path: Path, **kwargs) -> tuple[Path, Path, list[str]]:
    """A straight run, and the same run SIGKILLed after step 2 (mid-epoch 0): the start of
    the tests below."""
    straight_recipe, straight = write_recipe(tmp_path, "straight", **kwargs)
    code, output = finish(start(straight_recipe))
    assert code == 0, output

    interrupted_recipe, interrupted = write_recipe(tmp_path, "interrupted", **kwargs)
    checkpoints = interrupted / "checkpoints"
    outputs = []
    proc = start(interrupted_recipe)
    signal_after(proc, checkpoints / step_checkpoint_name(2), signal.SIGKILL)
    code, output = finish(proc)
    outputs.append(output)
    assert code == -signal.SIGKILL, output
    return straight, interrupted, outputs


@pytest.mark.slow
def test_sigkill_then_sigterm_then_resume_is_bit_identical_to_a_straight_run(tmp_path):
    straight, interrupted, outputs = straight_and_interrupted(tmp_path, workers=2)
    recipe_path = tmp_path / "interrupted.yaml"
    checkpoints = interrupted / "checkpoints"

    proc = start(recipe_path)  # the same command again: resumes from step 2
    signal_after(proc, checkpoints / step_checkpoint_name(6), signal.SIGTERM)
    code, output = finish(proc)
    assert "resuming from" in output and step_checkpoint_name(2) in output, output
    assert code == PREEMPTED_EXIT, output
    assert "stopped by a signal" in output and "run the same command to resume" in output
    preempted = int(output.split("stopped by a signal after step ")[1].split(";")[0])
    assert 6 <= preempted < STEPS_PER_EPOCH * EPOCHS  # mid-epoch 1
    assert (checkpoints / step_checkpoint_name(preempted)).is_file()

    code, output = finish(start(recipe_path))
    assert code == 0, output
    assert step_checkpoint_name(preempted) in output

    assert losses(interrupted) == losses(straight)
    assert len(losses(straight)) == STEPS_PER_EPOCH * EPOCHS
    assert_bit_identical(final_state(interrupted), final_state(straight))


@pytest.mark.slow
def test_resume_under_two_process_ddp_with_gpu_style_augmentation_is_bit_identical(tmp_path):
    straight, interrupted, _ = straight_and_interrupted(
        tmp_path, devices=2, augment="gpu", workers=0
    )
    code, output = finish(start(tmp_path / "interrupted.yaml"))
    assert code == 0, output
    assert step_checkpoint_name(2) in output
    assert losses(interrupted) == losses(straight)
    state = final_state(straight)
    assert state["queues"]["embeddings"].shape[0] == 2  # both ranks' queues are saved
    assert not torch.equal(*state["queues"]["embeddings"])
    assert_bit_identical(final_state(interrupted), state)


@pytest.mark.slow
def test_a_signal_to_one_ddp_rank_stops_every_rank_after_the_same_step(tmp_path):
    # SIGTERM to rank 1 alone: the ranks agree on it (over a CPU process group) and all save
    # and stop after the same step; the same command then finishes the run
    recipe_path, out = write_recipe(tmp_path, "one_rank", devices=2, augment="gpu", workers=0)
    proc = start(recipe_path)
    wait_for(proc, out / "checkpoints" / step_checkpoint_name(2))
    (rank1,) = children(proc.pid)
    os.kill(rank1, signal.SIGTERM)
    code, output = finish(proc)
    assert code == PREEMPTED_EXIT, output
    stopped = int(output.split("stopped by a signal after step ")[1].split(";")[0])
    assert 2 <= stopped < STEPS_PER_EPOCH * EPOCHS
    saved = torch.load(out / "checkpoints" / step_checkpoint_name(stopped), weights_only=True)
    assert saved["global_step"] == stopped and saved["swav_queues"]["filled"].shape[0] == 2
    code, output = finish(start(recipe_path))
    assert code == 0, output
    assert sorted(losses(out)) == list(range(STEPS_PER_EPOCH * EPOCHS))


@pytest.mark.slow
def test_sigusr1_before_a_time_limit_checkpoints_and_exits_for_requeueing(tmp_path):
    recipe_path, out = write_recipe(tmp_path, "usr1", workers=0)
    proc = start(recipe_path)
    signal_after(proc, out / "checkpoints" / step_checkpoint_name(2), signal.SIGUSR1)
    code, output = finish(proc)
    assert code == PREEMPTED_EXIT, output
    stopped = int(output.split("stopped by a signal after step ")[1].split(";")[0])
    assert (out / "checkpoints" / step_checkpoint_name(stopped)).is_file()
    assert os.readlink(out / "checkpoints" / "last.ckpt") == step_checkpoint_name(stopped)
