"""A training step reads nothing back from the device unless it logs or checkpoints.

:class:`DeviceReadCounter` counts host reads of tensor values from any module, here through
the runner with every callback it adds (checkpoints, non-finite guard, data wait, progress
bar) and the recipe's optimiser. On a CPU every tensor is a host tensor, so the data loading
runs in a worker process, where nothing is counted.
"""

import collections
import copy

import pytest
import torch
from lightly.utils.lars import LARS

from swav_plugin.host.device_reads import DeviceReadCounter
from swav_plugin.host.resolve import resolve
from swav_plugin.host.runner import run
from swav_plugin.swav import training_plan as swav_module

LOG_EVERY, CHECKPOINT_EVERY, BATCHES, EPOCHS = 4, 5, 7, 2


def counted_run(tiny_recipe, augment):
    recipe = copy.deepcopy(tiny_recipe)
    recipe["method"]["queue"] = {"name": "swav_queue", "length": 64, "start_epoch": 0}
    recipe["data"].update(augment=augment, num_workers=1)
    recipe["trainer"].update(max_epochs=EPOCHS, limit_train_batches=BATCHES,
                             log_every_n_steps=LOG_EVERY, enable_progress_bar=True)
    recipe["run"]["checkpoint_every_n_steps"] = CHECKPOINT_EVERY
    counter = DeviceReadCounter()
    trainer = run(resolve(recipe), extra_callbacks=[counter])
    return counter, trainer


def test_counts_reads_from_any_module_by_step_and_restores_torch():
    counter = DeviceReadCounter()
    original = torch.Tensor.item
    counter.on_fit_start(None, None)
    counter._step = 3
    torch.ones(()).item()
    bool(torch.ones(()))
    counter.teardown(None, None, "fit")
    torch.ones(()).item()  # after fit: not counted
    assert [name for name, _ in counter.by_step[3]] == ["item", "__bool__"]
    assert all(where.startswith(__file__) for _, where in counter.by_step[3])
    assert torch.Tensor.item is original


@pytest.mark.slow
@pytest.mark.parametrize("augment", ["cpu", "gpu"])
def test_steps_that_neither_log_nor_checkpoint_read_nothing(tiny_recipe, augment):
    counter, trainer = counted_run(tiny_recipe, augment)
    kinds = counter.step_kinds(trainer.global_step)
    assert kinds["logging"] == [s for s in range(BATCHES * EPOCHS) if (s + 1) % LOG_EVERY == 0]
    # periodic checkpoints, not at an epoch's last batch (that one is the epoch end's)
    assert kinds["checkpoint"] == [4, 9]
    reads = counter.by_step
    assert {s: reads[s] for s in kinds["other"] if reads[s]} == {}
    # the first step checks, once, that embeddings and prototypes have unit norm
    assert [what for what, _ in reads[0]] == ["tolist"]
    # What the logging steps read: Lightning converts the logged metrics to numbers (SwAV's
    # 8, the guard's skipped count, the data wait), the bar shows the 2 losses, the guard reads
    # its streak of bad steps.
    for step in kinds["logging"]:
        sources = collections.Counter(where for _, where in reads[step])
        assert 0 < len(reads[step]) <= 14, sources
    # A checkpoint reads the guard's count and moves the queue to the host.
    for step in kinds["checkpoint"]:
        assert 0 < len(reads[step]) <= 4, reads[step]


@pytest.mark.slow
def test_the_counter_sees_lightlys_lars_read_at_every_step(tiny_recipe, monkeypatch):
    # lightly's LARS compares each norm with zero in Python: with it put back in place of
    # LARC, every step reads, two reads per parameter
    def lightly_lars(params, lr, momentum, weight_decay, trust_coefficient, **_):
        return LARS(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                    trust_coefficient=trust_coefficient)

    monkeypatch.setattr(swav_module, "LARC", lightly_lars)
    counter, trainer = counted_run(tiny_recipe, "cpu")
    assert isinstance(trainer.optimizers[0], LARS)
    parameters = len(list(trainer.lightning_module.parameters()))
    for step in counter.step_kinds(trainer.global_step)["other"]:
        from_lars = [w for _, w in counter.by_step[step] if "lightly/utils/lars.py" in w]
        assert len(from_lars) == 2 * parameters, len(from_lars)
