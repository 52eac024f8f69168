"""The eval tools under hostile arguments: every bad number, device or path is refused in one
line before any feature is extracted; a k above the bank's size is reported as the k used; a
full disk is one line, exit status 1, with the earlier result intact."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch

from swav_plugin.evaluation import arguments, features
from swav_plugin.evaluation.cache import FeatureCache
from swav_plugin.evaluation.knn import knn_accuracy
from swav_plugin.evaluation.label_subsets import read_subset_file
from swav_plugin.host import atomic, device_checks
from swav_plugin.host.errors import ConfigError, RunError
from tests.evaluation.tools import ROOT, error_line, run, save

#: What the storage errors say (swav_plugin.host.errors.storage_problem).
IN_THE_WAY = "a file is in the way of a directory there; choose another path"
NOT_A_DIRECTORY = "a part of the path is a file, not a directory; choose another path"
FULL = "the disk is full; free space there or choose another directory"
NO_GPU = "needs a CUDA GPU, and torch finds none on this machine"
#: What the training tools say of a GPU accelerator on a machine without one
#: (swav_plugin.host.device_checks, in the tools' option names).
NO_GPU_TO_TRAIN = ("but no GPU is available on this machine (torch.cuda.device_count() is 0); "
                   "pass --accelerator cpu, or run on a machine with a GPU")


@pytest.fixture
def checkpoint(content, tmp_path):
    """A swav-train checkpoint of the tiny recipe (digits at 8 px: 1347 train images)."""
    return save(content, tmp_path)


@pytest.fixture
def nothing_runs(monkeypatch):
    """Feature extraction and training fail the test: a refusal must come before both."""

    def started(*args, **kwargs):
        raise AssertionError("the tool started work before refusing its arguments")

    monkeypatch.setattr(features, "extract_features", started)
    monkeypatch.setattr(pl.Trainer, "fit", started)


def no_gpu(monkeypatch, count: int = 0) -> None:
    """Make torch see ``count`` CUDA GPUs, whatever the machine has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def whole_number(argument: str, value: str, wanted: str, problem: str = "is too small") -> str:
    return f"argument {argument}: '{value}' {problem}; give a whole number {wanted}"


def a_number(argument: str, value: str, wanted: str, problem: str = "is too small") -> str:
    return f"argument {argument}: '{value}' {problem}; give a number {wanted}"


BAD_NUMBERS = [
    ("knn", ["--k", "0"], whole_number("--k", "0", "of 1 or more")),
    ("knn", ["--k", "10", "-5"], whole_number("--k", "-5", "of 1 or more")),
    ("knn", ["--k", "2.5"], whole_number("--k", "2.5", "of 1 or more", "is not a whole number")),
    ("knn", ["--t", "0"], a_number("--t", "0", "above 0")),
    ("knn", ["--t", "-0.07"], a_number("--t", "-0.07", "above 0")),
    ("knn", ["--t", "nan"], a_number("--t", "nan", "above 0", "is not a finite number")),
    ("knn", ["--t", "inf"], a_number("--t", "inf", "above 0", "is not a finite number")),
    ("knn", ["--batch-size", "0"], whole_number("--batch-size", "0", "of 1 or more")),
    ("knn", ["--num-workers", "-1"], whole_number("--num-workers", "-1", "of 0 or more")),
    ("knn", ["--seed", "4294967296"],
     whole_number("--seed", "4294967296", "from 0 to 4294967295", "is too large")),
    ("knn", ["--index", "hnsw"], "argument --index: invalid choice: 'hnsw' (choose from 'flat', "
                                 "'ivf')"),
    ("linear", ["--max-iter", "0"], whole_number("--max-iter", "0", "of 1 or more")),
    ("linear", ["--weight-decays", "0", "-0.1"],
     a_number("--weight-decays", "-0.1", "of 0 or more")),
    ("linear", ["--weight-decays", "nan"],
     a_number("--weight-decays", "nan", "of 0 or more", "is not a finite number")),
    ("linear", ["--batch-size", "-8"], whole_number("--batch-size", "-8", "of 1 or more")),
    ("linear", ["--mode", "standard", "--epochs", "0"],
     whole_number("--epochs", "0", "of 1 or more")),
    ("linear", ["--mode", "standard", "--lr", "0"], a_number("--lr", "0", "above 0")),
    ("linear", ["--mode", "standard", "--linear-weight-decay=-1e-6"],
     a_number("--linear-weight-decay", "-1e-6", "of 0 or more")),
    ("linear", ["--mode", "standard", "--limit-train-batches", "0"],
     a_number("--limit-train-batches", "0", "above 0")),
    ("linear", ["--mode", "standard", "--limit-train-batches", "2.5"],
     "argument --limit-train-batches: '2.5' is neither a fraction up to 1 nor a whole number of "
     "batches; give e.g. 0.5 or 20"),
    ("linear", ["--mode", "standard", "--min-scale", "0"],
     a_number("--min-scale", "0", "above 0 and at most 1")),
    ("linear", ["--mode", "standard", "--min-scale", "1.5"],
     a_number("--min-scale", "1.5", "above 0 and at most 1", "is too large")),
    ("linear", ["--mode", "standard", "--devices", "0"],
     "argument --devices: '0' is not a number of devices; give auto, a whole number of 1 or "
     "more, or GPU indices such as 0,1"),
    ("linear", ["--mode", "standard", "--precision", "fp8"],
     "argument --precision: invalid choice: 'fp8' (choose from '64', '32', '16', 'bf16', "
     "'64-true', '32-true', '16-true', 'bf16-true', '16-mixed', 'bf16-mixed')"),
    ("linear", ["--mode", "standard", "--batch-size", "5000"],
     "--batch-size 5000 is more than the 1347 images of split 'train': the standard protocol "
     "drops the last partial batch, so no step would be taken; pass a --batch-size of at most "
     "1347"),
    ("prototypes", ["--grid-rows", "0"], whole_number("--grid-rows", "0", "of 1 or more")),
    ("prototypes", ["--grid-columns", "-2"],
     whole_number("--grid-columns", "-2", "of 1 or more")),
    ("prototypes", ["--max-points", "0"], whole_number("--max-points", "0", "of 1 or more")),
    ("prototypes", ["--head", "-1"], whole_number("--head", "-1", "of 0 or more")),
    ("prototypes", ["--head", "3"],
     "--head 3 does not exist; the checkpoint has 1 prototype set(s)"),
    ("prototypes", ["--batch-size", "x"],
     whole_number("--batch-size", "x", "of 1 or more", "is not a whole number")),
    ("finetune", ["--epochs", "0"], whole_number("--epochs", "0", "of 1 or more")),
    ("finetune", ["--lr", "-0.01"], a_number("--lr", "-0.01", "above 0")),
    ("finetune", ["--lr-head", "0"], a_number("--lr-head", "0", "above 0")),
    ("finetune", ["--decay-epochs", "12", "0"],
     whole_number("--decay-epochs", "0", "of 1 or more")),
    ("finetune", ["--gamma", "0"], a_number("--gamma", "0", "above 0 and at most 1")),
    ("finetune", ["--gamma", "1.5"],
     a_number("--gamma", "1.5", "above 0 and at most 1", "is too large")),
    ("finetune", ["--seed", "-1"], whole_number("--seed", "-1", "from 0 to 4294967295")),
    ("finetune", ["--labels", "5"], "argument --labels: invalid choice: 5 (choose from 1, 10)"),
    ("finetune", ["--batch-size", "0"], whole_number("--batch-size", "0", "of 1 or more")),
]


@pytest.mark.parametrize(("tool", "args", "message"), BAD_NUMBERS,
                         ids=[f"{t}{' '.join(a)}" for t, a, _ in BAD_NUMBERS])
def test_a_bad_number_is_refused_in_one_line(capsys, checkpoint, nothing_runs, tool, args,
                                             message):
    assert error_line(capsys, tool, checkpoint, *args) == message
    assert not (checkpoint.parent.parent / "eval").exists()  # nothing written


def test_a_fraction_of_batches_that_leaves_none_is_refused_by_lightning(capsys, checkpoint):
    line = error_line(capsys, "finetune", checkpoint, "--epochs", "1",
                      "--limit-train-batches", "0.01")
    assert line == ("Lightning refused the training settings: You requested to check 0.01 of "
                    "the `train_dataloader` but 0.01 * 5 < 1. Please increase the "
                    "`limit_train_batches` argument. Try at least `limit_train_batches=0.2`")
    assert not (checkpoint.parent.parent / "eval" / "finetune_10pct.json").exists()


@pytest.mark.parametrize(("tool", "args"), [
    ("knn", []), ("linear", []), ("prototypes", []), ("finetune", []),
    ("linear", ["--mode", "standard"]),
])
def test_cuda_without_a_gpu_is_refused(capsys, monkeypatch, checkpoint, nothing_runs, tool,
                                       args):
    no_gpu(monkeypatch)
    line = error_line(capsys, tool, checkpoint, *args, "--device", "cuda")
    assert line == f"argument --device: 'cuda' {NO_GPU}; pass --device cpu (or auto)"


@pytest.mark.parametrize(("tool", "args", "message"), [
    ("linear", ["--mode", "standard", "--accelerator", "gpu"],
     f"--accelerator: 'gpu' {NO_GPU_TO_TRAIN}"),
    ("finetune", ["--accelerator", "cuda"], f"--accelerator: 'cuda' {NO_GPU_TO_TRAIN}"),
    ("finetune", ["--accelerator", "tpu"],
     "argument --accelerator: 'tpu' is not an accelerator the tools train on; give one of auto, "
     "cpu, gpu, cuda, mps"),
    ("linear", ["--mode", "standard", "--devices", "0,1"],
     "--devices 0,1: GPU indices, but training runs on the CPU; give a number of processes or "
     "auto"),
    ("knn", ["--device", "tpu"],
     "argument --device: 'tpu' is not a device; give auto, cpu, cuda, cuda:N or mps"),
    ("prototypes", ["--device", "cuda:x"],
     "argument --device: 'cuda:x' is not a device; give auto, cpu, cuda, cuda:N or mps"),
])
def test_a_device_this_machine_lacks_is_refused(capsys, monkeypatch, checkpoint, nothing_runs,
                                                tool, args, message):
    no_gpu(monkeypatch)
    assert error_line(capsys, tool, checkpoint, *args) == message


def test_mps_without_apples_backend_is_refused(capsys, monkeypatch, checkpoint, nothing_runs):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert error_line(capsys, "knn", checkpoint, "--device", "mps") == (
        "argument --device: 'mps' needs Apple's MPS backend, which this machine lacks; pass "
        "--device cpu (or auto)")


@pytest.mark.parametrize(("tool", "args", "message"), [
    ("knn", ["--device", "cuda:1"],
     "argument --device: 'cuda:1' does not exist: torch finds 1 CUDA GPU(s) on this machine, "
     "numbered from 0; pass --device cuda:N with N below 1"),
    ("finetune", ["--accelerator", "gpu", "--devices", "2"],
     "--devices: 2 GPUs asked for but this machine has 1; set --devices to at most 1 (or auto: "
     "all of them)"),
    ("linear", ["--mode", "standard", "--devices", "0,3"],
     "--devices: GPU 3 asked for but this machine has 1, numbered from 0; set --devices to "
     "indices below 1 (or auto: all of them)"),
])
def test_more_gpus_than_the_machine_has_are_refused(capsys, monkeypatch, checkpoint,
                                                    nothing_runs, tool, args, message):
    no_gpu(monkeypatch, count=1)
    assert error_line(capsys, tool, checkpoint, *args) == message


@pytest.mark.parametrize(("tool", "args"), [
    ("finetune", ["--accelerator", "cpu", "--devices", "64"]),
    ("linear", ["--mode", "standard", "--accelerator", "cpu", "--devices", "64"]),
])
def test_more_cpu_ranks_than_cores_are_refused(capsys, monkeypatch, checkpoint, nothing_runs,
                                               tool, args):
    monkeypatch.setattr(device_checks, "available_cores", lambda: 2)
    assert error_line(capsys, tool, checkpoint, *args) == (
        "--devices: 64 CPU ranks asked for, but this machine has 2 cores (each CPU device is a "
        "process); set --devices to at most 2")  # no recipe override to suggest


def test_gpu_is_apples_mps_where_lightning_says_so(monkeypatch):
    no_gpu(monkeypatch)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert arguments.accelerator("gpu") == "gpu"
    arguments.check_training_devices(SimpleNamespace(accelerator="gpu", devices="auto"))
    with pytest.raises(ConfigError, match=f"^--accelerator: 'cuda' {re.escape(NO_GPU_TO_TRAIN)}$"):
        arguments.check_training_devices(SimpleNamespace(accelerator="cuda", devices="auto"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="refuses cuda only without a GPU")
def test_cuda_without_a_gpu_in_a_real_process(checkpoint):
    proc = subprocess.run([sys.executable, "eval/knn.py", str(checkpoint), "--device", "cuda"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr == f"knn: error: argument --device: 'cuda' {NO_GPU}; pass --device cpu " \
                          "(or auto)\n"


def test_a_k_above_the_bank_is_reported_as_the_k_used(capsys, checkpoint):
    status, out, err = run(capsys, "knn", checkpoint, "--k", "5", "2000", "5")
    assert status == 0, err[-3000:]
    (row,) = [line for line in out.splitlines() if line.startswith("  pretrained")]
    assert re.fullmatch(r"  pretrained   k=5: [\d.]+ / [\d.]+  k=2000 \(clamped to the bank's "
                        r"1347\): [\d.]+ / [\d.]+", row), row  # the repeated 5 counts once
    result = json.loads((checkpoint.parent.parent / "eval" / "knn.json").read_text())
    assert result["pretrained"]["5"]["k_used"] == 5
    assert result["pretrained"]["2000"]["k_used"] == 1347
    status, out, err = run(capsys, "knn", checkpoint, "--k", "2000", "--index", "ivf")
    assert status == 0, err[-3000:]
    assert re.search(r"k=2000 \(clamped to the bank's 1347\): .*\(IVF recall@1347 vs exact: "
                     r"[01]\.\d{3}\)$", out.splitlines()[1]), out


def test_the_k_used_is_each_k_up_to_the_banks_size():
    bank, labels = torch.randn(5, 4), torch.tensor([0, 1, 0, 1, 0])
    result = knn_accuracy(bank, labels, bank, labels, ks=[3, 5, 200])
    assert [result[k]["k_used"] for k in (3, 5, 200)] == [3, 5, 5]
    assert result[200]["top1"] == result[5]["top1"]  # the same five neighbours voted


@pytest.fixture
def a_file(tmp_path) -> Path:
    """A plain file where a tool would need a directory."""
    path = tmp_path / "notes.txt"
    path.write_text("not a directory")
    return path


@pytest.mark.parametrize(("tool", "place", "message"), [
    ("knn", lambda f, t: ["--output", f / "knn.json"],
     lambda f, t: f"--output '{f / 'knn.json'}' cannot be written: '{f}': {IN_THE_WAY}"),
    ("linear", lambda f, t: ["--output", f / "sub" / "linear.json"],
     lambda f, t: f"--output '{f / 'sub' / 'linear.json'}' cannot be written: '{f / 'sub'}': "
                  f"{NOT_A_DIRECTORY}"),
    ("knn", lambda f, t: ["--output", t],
     lambda f, t: f"--output '{t}' cannot be written: '{t}': it is a directory, not a file; "
                  "choose another path"),
    ("knn", lambda f, t: ["--cache-dir", f],
     lambda f, t: f"--cache-dir '{f}' cannot be written: '{f}': {IN_THE_WAY}"),
    ("linear", lambda f, t: ["--cache-dir", f / "cache"],
     lambda f, t: f"--cache-dir '{f / 'cache'}' cannot be written: '{f / 'cache'}': "
                  f"{NOT_A_DIRECTORY}"),
    ("prototypes", lambda f, t: ["--output", f],
     lambda f, t: f"--output '{f}' cannot be written: '{f}': {IN_THE_WAY}"),
    ("prototypes", lambda f, t: ["--cache-dir", f],
     lambda f, t: f"--cache-dir '{f}' cannot be written: '{f}': {IN_THE_WAY}"),
    ("finetune", lambda f, t: ["--checkpoint-dir", f / "runs"],
     lambda f, t: f"--checkpoint-dir '{f / 'runs'}' cannot be written: '{f / 'runs'}': "
                  f"{NOT_A_DIRECTORY}"),
    ("finetune", lambda f, t: ["--compare-linear", "--cache-dir", f],
     lambda f, t: f"--cache-dir '{f}' cannot be written: '{f}': {IN_THE_WAY}"),
    ("finetune", lambda f, t: ["--output", f / "ft.json"],
     lambda f, t: f"--output '{f / 'ft.json'}' cannot be written: '{f}': {IN_THE_WAY}"),
], ids=["knn-output", "linear-output-deeper", "knn-output-is-a-directory", "knn-cache",
        "linear-cache", "prototypes-output", "prototypes-cache", "finetune-checkpoint-dir",
        "finetune-probe-cache", "finetune-output"])
def test_an_unwritable_path_is_refused_before_extraction(capsys, checkpoint, nothing_runs,
                                                         a_file, tmp_path, tool, place,
                                                         message):
    line = error_line(capsys, tool, checkpoint, *place(a_file, tmp_path))
    assert line == message(a_file, tmp_path)
    assert a_file.read_text() == "not a directory"
    assert not (checkpoint.parent.parent / "eval").exists()  # the check left nothing behind


def test_the_default_result_directory_is_checked_too(capsys, checkpoint, nothing_runs):
    blocked = checkpoint.parent.parent / "eval"
    blocked.write_text("a file where RUN/eval goes")
    line = error_line(capsys, "knn", checkpoint)
    assert line == f"--output '{blocked / 'knn.json'}' cannot be written: '{blocked}': {IN_THE_WAY}"


def test_a_cache_the_mode_does_not_use_is_not_checked(capsys, monkeypatch, checkpoint, a_file):
    def reached(*args, **kwargs):
        raise RunError("training reached")

    monkeypatch.setattr(pl.Trainer, "fit", reached)
    line = error_line(capsys, "linear", checkpoint, "--mode", "standard", "--cache-dir", a_file,
                      status=1)
    assert line == "training reached"


@pytest.mark.parametrize(("code", "cause"), [
    (errno.EACCES, "permission denied; choose a directory you can write to, or fix its "
                   "permissions"),
    (errno.EROFS, "the file system is read-only; choose a writable directory"),
    (errno.ENOSPC, FULL),
])
def test_a_directory_refusing_files_is_found_before_extraction(capsys, monkeypatch, checkpoint,
                                                               nothing_runs, tmp_path, code,
                                                               cause):
    def refuse(*args, **kwargs):
        raise OSError(code, "refused", str(tmp_path / "out" / ".write-check-x"))

    monkeypatch.setattr(arguments, "tempfile", SimpleNamespace(NamedTemporaryFile=refuse))
    line = error_line(capsys, "knn", checkpoint, "--output", tmp_path / "out" / "knn.json")
    assert line == f"--output '{tmp_path / 'out' / 'knn.json'}' cannot be written: " \
                   f"'{tmp_path / 'out'}': {cause}"
    assert not (tmp_path / "out").exists() and not (tmp_path / "run" / "eval").exists()


def test_an_unreadable_subset_file_is_one_line(monkeypatch, tmp_path):
    listing = tmp_path / "10percent.txt"
    listing.write_text("a/0.png\n")

    def unreadable(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(Path, "read_text", unreadable)
    with pytest.raises(ConfigError) as refused:
        read_subset_file(listing)
    assert str(refused.value) == (f"subset file '{listing}' cannot be read (Permission denied); "
                                  "give a readable list of file names")


@pytest.fixture
def earlier(checkpoint):
    """An earlier result of each tool in RUN/eval: a failed write must leave it as it is."""
    folder = checkpoint.parent.parent / "eval"
    folder.mkdir()
    for name in ("knn.json", "linear.json", "prototypes.json", "finetune_10pct.json"):
        (folder / name).write_text('{"earlier": true}')
    return folder


def disk_fills(monkeypatch, code: int = errno.ENOSPC) -> None:
    """JSON results write half their text, then the disk is full."""

    def dump(data, file, **kwargs):
        file.write(json.dumps(data)[:10])
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(atomic, "json", SimpleNamespace(dump=dump))


@pytest.mark.parametrize(("tool", "args", "result", "code", "cause"), [
    ("knn", ["--k", "5"], "knn.json", errno.ENOSPC, FULL),
    ("linear", ["--max-iter", "5", "--weight-decays", "0"], "linear.json", errno.EDQUOT,
     "the disk quota is exceeded; free space there or choose another directory"),
    ("prototypes", ["--split", "test"], "prototypes.json", errno.ENOSPC, FULL),
    ("knn", ["--k", "5", "--no-cache"], "knn.json", errno.EIO,
     "Input/output error; check the storage there"),
], ids=["knn-ENOSPC", "linear-EDQUOT", "prototypes-ENOSPC", "knn-EIO"])
def test_a_full_disk_while_writing_a_result_is_one_line(capsys, monkeypatch, earlier, checkpoint,
                                                        tool, args, result, code, cause):
    disk_fills(monkeypatch, code)
    line = error_line(capsys, tool, checkpoint, *args, status=1)
    assert line == f"result not written: '{earlier / result}': {cause}"
    assert (earlier / result).read_text() == '{"earlier": true}'  # not half-written
    assert not [p for p in earlier.rglob("*") if p.name.endswith(".tmp")]


def test_a_full_disk_while_fine_tuning_is_one_line(capsys, monkeypatch, earlier, checkpoint):
    def full(obj, file, *args, **kwargs):  # the disk fills while last.ckpt is written
        file.write(b"PK\x03\x04")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    line = error_line(capsys, "finetune", checkpoint, "--epochs", "1", "--limit-train-batches",
                      "1", status=1)
    last = earlier / "finetune_10pct" / "pretrained" / "last.ckpt"
    assert line == (f"cannot write checkpoint '{last}': {FULL} (the checkpoints written before "
                    "are intact)")
    assert (earlier / "finetune_10pct.json").read_text() == '{"earlier": true}'
    assert not last.parent.exists() or not any(last.parent.iterdir())  # nothing half-written


def test_a_full_disk_while_caching_features_warns_and_evaluates(capsys, monkeypatch, earlier,
                                                                checkpoint):
    def full(self, key, *args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(FeatureCache, "save", full)
    with pytest.warns(UserWarning) as warned:
        status, out, err = run(capsys, "knn", checkpoint, "--k", "5")
    assert status == 0, err[-3000:]
    cache = earlier / "cache"
    messages = [str(w.message) for w in warned if "not cached" in str(w.message)]
    assert len(messages) == 2  # the bank and the queries
    assert re.fullmatch(rf"features not cached: '{re.escape(str(cache))}/[0-9a-f]{{32}}\.pt': "
                        rf"{FULL}; the evaluation goes on without the cache", messages[0])
    assert set(json.loads((earlier / "knn.json").read_text())["pretrained"]) == {"5"}
    assert not cache.exists()
