"""Checkpoints: atomic, verified, rotated; auto-resume falls back past a corrupt one."""

import copy
import csv
import os
import random
import signal
import stat

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import yaml
from torch import nn

from swav_plugin.host.checkpoint_files import (
    LAST,
    CheckpointError,
    latest_good_checkpoint,
    read_checkpoint,
    step_checkpoint_name,
    step_checkpoints,
    write_checkpoint,
)
from swav_plugin.host.errors import ConfigError, RunError
from swav_plugin.host.preemption import was_preempted
from swav_plugin.host.registry import METHODS
from swav_plugin.host.resolve import resolve
from swav_plugin.host.runner import main, run


def corrupt(path, how):
    data = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:  # one flipped byte inside a tensor's data: torch.load alone would not notice
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(data)


def test_write_is_atomic_flushed_and_readable_by_others(tmp_path):
    path = tmp_path / "a.ckpt"
    write_checkpoint({"w": torch.arange(4)}, path)
    assert torch.equal(read_checkpoint(path)["w"], torch.arange(4))
    assert (tmp_path / "a.ckpt.sha256").read_text().endswith("  a.ckpt\n")
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode == 0o666 & ~_umask()  # not the temporary file's private 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ckpt", "a.ckpt.sha256"]


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_crash_while_writing_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "a.ckpt"
    write_checkpoint({"w": torch.zeros(3)}, path)
    before = path.read_bytes()

    def dies_midway(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(RunError, match=rf"^cannot write checkpoint '{path}': the disk is full; "):
        write_checkpoint({"w": torch.ones(3)}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ckpt", "a.ckpt.sha256"]


@pytest.mark.parametrize("how", ["truncated", "flipped"])
def test_damaged_checkpoint_is_reported_by_name(tmp_path, how):
    path = tmp_path / "a.ckpt"
    write_checkpoint({"w": torch.randn(1000)}, path)
    corrupt(path, how)
    with pytest.raises(CheckpointError, match=f"checkpoint '{path}' is truncated or corrupt"):
        read_checkpoint(path)


def test_damaged_checkpoint_without_digest_is_reported_by_name(tmp_path):
    path = tmp_path / "a.ckpt"
    torch.save({"w": torch.randn(1000)}, path)  # e.g. written by another tool
    corrupt(path, "truncated")
    with pytest.raises(CheckpointError, match=r"is truncated or corrupt \(\d+ bytes; "):
        read_checkpoint(path)


def test_checkpoint_carrying_code_is_refused(tmp_path, code_payload):
    payload, marker = code_payload
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": payload}, path)
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        read_checkpoint(path)
    assert not marker.exists()


def test_fallback_to_the_newest_good_checkpoint_with_a_warning_per_bad_one(tmp_path):
    for step in (2, 4, 6):
        write_checkpoint({"global_step": step}, tmp_path / step_checkpoint_name(step))
    corrupt(tmp_path / step_checkpoint_name(6), "truncated")
    (tmp_path / step_checkpoint_name(4)).write_bytes(b"")
    warnings = []
    path, checkpoint = latest_good_checkpoint(tmp_path, warnings.append)
    assert path.name == step_checkpoint_name(2) and checkpoint["global_step"] == 2
    assert len(warnings) == 2 and step_checkpoint_name(6) in warnings[0]
    assert "falling back to the previous checkpoint" in warnings[1]

    corrupt(tmp_path / step_checkpoint_name(2), "flipped")
    with pytest.raises(CheckpointError, match="none of the 3 checkpoints in"):
        latest_good_checkpoint(tmp_path, warnings.append)
    assert latest_good_checkpoint(tmp_path / "none", warnings.append) is None


def steps(tiny_recipe, **run):
    recipe = copy.deepcopy(tiny_recipe)
    recipe["trainer"].update(limit_train_batches=3, max_epochs=2)
    recipe["run"].update(checkpoint_every_n_steps=2, **run)
    return resolve(recipe)


def rows(metrics_csv, timing=True):
    """metrics.csv's rows, each as its non-empty values (timing: with the perf/ columns)."""
    with open(metrics_csv, newline="") as f:
        return [{k: v for k, v in r.items() if v and (timing or not k.startswith("perf/"))}
                for r in csv.DictReader(f)]


def test_checkpoints_mid_epoch_and_at_epoch_ends_keeping_the_newest(
    tiny_recipe, tmp_path, monkeypatch
):
    metrics_csv = tmp_path / "run" / "metrics.csv"
    on_disk = {}  # each checkpoint's step: the rows metrics.csv held as it was written

    def write_and_look(checkpoint, path):
        on_disk[checkpoint["global_step"]] = rows(metrics_csv)
        write_checkpoint(checkpoint, path)

    monkeypatch.setattr("swav_plugin.host.checkpoint_io.write_checkpoint", write_and_look)
    trainer = run(steps(tiny_recipe, keep_checkpoints=3))
    directory = tmp_path / "run" / "checkpoints"
    final = rows(metrics_csv)
    losses = [r["step"] for r in final if "train/loss" in r]
    epoch_rows = [r["step"] for r in final if "train/usage_entropy_epoch" in r]
    assert losses == [str(s) for s in range(6)] and epoch_rows == ["2", "5"]  # none twice
    # every row a checkpoint covers (step and epoch rows) is on disk before it: a kill
    # right after the checkpoint loses no row
    assert on_disk.keys() == {2, 3, 4, 6}
    for step, seen in on_disk.items():
        assert seen == [r for r in final if int(r["step"]) < step], step
    # every 2 steps and at the ends of epochs (steps 3 and 6), the newest 3 kept
    assert [p.name for p in step_checkpoints(directory)] == [
        step_checkpoint_name(s) for s in (6, 4, 3)]
    assert os.readlink(directory / LAST) == step_checkpoint_name(6)
    assert read_checkpoint(directory / LAST)["global_step"] == trainer.global_step == 6


def test_rerun_resumes_past_a_corrupt_newest_checkpoint_and_keeps_the_metrics(
    tiny_recipe, tmp_path, capsys
):
    recipe = steps(tiny_recipe)
    run(recipe)
    directory = tmp_path / "run" / "checkpoints"
    newest = directory / step_checkpoint_name(6)
    corrupt(newest, "flipped")
    with open(tmp_path / "run" / "metrics.csv") as f:
        logged = [r for r in csv.DictReader(f) if r["train/loss"]]
    assert len(logged) == 6

    trainer = run(recipe)
    err = capsys.readouterr().err
    assert f"checkpoint '{newest}' is truncated or corrupt" in err
    assert f"resuming from {directory / step_checkpoint_name(4)} (step 4)" in err
    assert trainer.global_step == 6
    with open(tmp_path / "run" / "metrics.csv") as f:
        relogged = [r for r in csv.DictReader(f) if r["train/loss"]]
    # steps 0-3 kept from the first run, 4-5 trained again after the resume
    assert [r["step"] for r in relogged] == [r["step"] for r in logged]
    assert relogged[:4] == logged[:4]
    # the corrupt file is kept aside, out of the rotation, and step 6 is written anew
    assert (directory / f"{newest.name}.abandoned").is_file()
    assert read_checkpoint(newest)["global_step"] == 6


def test_a_new_run_never_overwrites_an_earlier_runs_checkpoints(tiny_recipe, tmp_path, capsys):
    recipe = steps(tiny_recipe)
    run(recipe)
    directory = tmp_path / "run" / "checkpoints"
    before = {p.name: p.read_bytes() for p in directory.iterdir()}

    changed = copy.deepcopy(recipe)
    changed["method"]["lr"] = 0.3
    with pytest.raises(ConfigError, match=r"was trained with another recipe \(1 key\(s\) differ, "
                                          r"e.g. method.lr\)"):
        run(changed)
    fresh = copy.deepcopy(recipe)
    fresh["run"]["resume"] = False
    with pytest.raises(ConfigError, match="holds the checkpoints of an earlier run"):
        run(fresh)
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before


def test_cli_refuses_a_corrupt_resume_checkpoint_in_one_line(tiny_recipe, tmp_path, capsys):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(tiny_recipe))
    assert main([str(recipe_path), f"run.resume_from={bad}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"swav-train: error: checkpoint '{bad}' is truncated or corrupt "
                   f"(16 bytes; {err[0].split('bytes; ')[1]}"]
    assert not (tmp_path / "run").exists()


class Noisy(pl.LightningModule):
    """A method drawing from the global generators in every step (as dropout would)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x = batch[0].flatten(1)[:, :4].float()
        noise = torch.randn(len(x), 1) + np.random.rand() + random.random()
        loss = (self.net(x) + noise).pow(2).mean()
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


@pytest.fixture
def noisy_method():
    METHODS.register("noisy_for_test")(Noisy)
    yield
    METHODS.unregister("noisy_for_test")


def test_a_method_drawing_from_the_global_generators_resumes_exactly(noisy_method, tmp_path):
    def recipe(name, **run_options):
        return resolve({
            "method": {"name": "noisy_for_test"},
            "data": {"dataset": {"name": "digits", "image_size": 8},
                     "transform": {"name": "center_crop", "size": 8, "crop_fraction": 1.0},
                     "batch_size": 64, "num_workers": 0, "pin_memory": False},
            "trainer": {"max_epochs": 1, "limit_train_batches": 6, "accelerator": "cpu",
                        "enable_progress_bar": False, "enable_model_summary": False,
                        "log_every_n_steps": 1},
            "run": {"output_dir": str(tmp_path / name), "checkpoint_every_n_steps": 2,
                    **run_options},
        })

    def logged(name):
        with open(tmp_path / name / "metrics.csv") as f:
            return {r["step"]: r["train/loss"] for r in csv.DictReader(f) if r["train/loss"]}

    run(recipe("straight", keep_checkpoints=5))
    middle = tmp_path / "straight" / "checkpoints" / step_checkpoint_name(2)
    run(recipe("resumed", resume_from=str(middle)))
    straight, resumed = logged("straight"), logged("resumed")
    assert list(resumed) == ["2", "3", "4", "5"]
    assert resumed == {step: straight[step] for step in resumed}


def test_resume_from_an_epoch_end_then_rerun_continues_its_own_run(tiny_recipe, tmp_path):
    def recipe(name, **run_options):
        changed = copy.deepcopy(tiny_recipe)
        changed["trainer"].update(limit_train_batches=3, max_epochs=2)
        changed["run"].update(output_dir=str(tmp_path / name), checkpoint_every_n_steps=3,
                              **run_options)
        return resolve(changed)

    def logged(name):
        with open(tmp_path / name / "metrics.csv") as f:
            return {r["step"]: r["train/loss"] for r in csv.DictReader(f) if r["train/loss"]}

    run(recipe("straight", keep_checkpoints=5))
    # every 3 steps = every epoch: the epoch end writes it, not the last batch's hook
    epoch_end = tmp_path / "straight" / "checkpoints" / step_checkpoint_name(3)
    resumed = recipe("resumed", resume_from=str(epoch_end))
    run(resumed)
    assert logged("resumed") == {s: v for s, v in logged("straight").items() if int(s) >= 3}

    epoch_end.unlink()  # the same command again: the run's own checkpoints come first
    trainer = run(resumed)
    assert trainer.global_step == 6


class SignalAt(pl.Callback):
    """Sends the run SIGTERM during the step that ends at ``step``, as a scheduler would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.parametrize("step", [2, 3], ids=["mid_epoch", "last_batch_of_an_epoch"])
def test_preempted_then_rerun_logs_what_a_straight_run_logs(tiny_recipe, tmp_path, step):
    """A signal in an epoch's last step stops the run after that epoch's end (its epoch row
    complete); mid-epoch, the epoch row of the interrupted epoch covers the resumed steps."""
    def recipe(name):
        changed = copy.deepcopy(tiny_recipe)
        changed["trainer"].update(limit_train_batches=3, max_epochs=2)
        changed["run"].update(output_dir=str(tmp_path / name), checkpoint_every_n_steps=100)
        return resolve(changed)

    straight = run(recipe("straight"))
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        preempted = run(recipe("preempted"), extra_callbacks=[SignalAt(step)])
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    assert was_preempted(preempted)
    assert preempted.global_step == step
    resumed = run(recipe("preempted"))
    assert resumed.global_step == straight.global_step == 6
    # every row (timings aside) as the straight run logged it, but for the interrupted
    # epoch's mean (Lightning does not checkpoint a part-epoch's running means)
    def comparable(name):
        logged = rows(tmp_path / name / "metrics.csv", timing=False)
        if step % 3:
            epoch_row = next(r for r in logged if "train/usage_entropy_epoch" in r)
            assert float(epoch_row.pop("train/usage_entropy_epoch")) > 0
        return logged

    assert comparable("preempted") == comparable("straight")
    for a, b in zip(straight.lightning_module.parameters(),
                    resumed.lightning_module.parameters(), strict=True):
        assert torch.equal(a, b)
