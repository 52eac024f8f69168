import copy
import csv
import math
import warnings

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from swav_plugin.evaluation.pretrained import load_pretrained
from swav_plugin.host.build import build
from swav_plugin.host.errors import ConfigError
from swav_plugin.host.registry import BACKBONES
from swav_plugin.host.resolve import resolve
from swav_plugin.host.runner import run
from swav_plugin.swav import MultiCropCollate, MultiCropTransform, SwAVHead, SwAVLoss
from swav_plugin.swav.module import SwAV
from swav_plugin.zoo.backbones import resnet18_cifar
from swav_plugin.zoo.datasets import digits
from swav_plugin.zoo.larc import LARC


def resolved(recipe, **changes):
    recipe = copy.deepcopy(recipe)
    for dotted, value in changes.items():
        node = recipe
        *parents, last = dotted.split("__")
        for p in parents:
            node = node[p]
        node[last] = value
    return resolve(recipe)


class PrototypeRecorder(pl.Callback):
    """Records the prototypes each forward pass used, and the lr of every step."""

    def __init__(self):
        self.prototypes, self.lrs = [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_before_backward(self, trainer, pl_module, loss):
        self.prototypes.append(pl_module.head.prototypes[0].weight.detach().clone())


def fit(recipe, *callbacks):
    method, data, trainer = build(recipe)
    trainer.callbacks.extend(callbacks)
    trainer.fit(method, datamodule=data)
    return method, trainer


def test_trains_through_the_runner_and_writes_the_run(tiny_recipe, tmp_path):
    trainer = run(resolve(tiny_recipe))
    out = tmp_path / "run"
    assert trainer.global_step == 3
    assert (out / "recipe.yaml").is_file()
    assert (out / "checkpoints" / "last.ckpt").is_file()
    metrics = (out / "metrics.csv").read_text().splitlines()
    for key in ("train/loss", "train/loss_over_lnK", "train/usage_entropy",
                "train/prototypes_used", "train/lr"):
        assert key in metrics[0]
    header = metrics[0].split(",")
    lrs = [float(v) for row in metrics[1:]
           if (v := row.split(",")[header.index("train/lr")])]
    # lr 0.6 at 256 scaled to the batch of 32, warmed up over the first half epoch (1.5 steps)
    assert lrs[1] == pytest.approx(0.6 * 32 / 256)
    checkpoint = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["recipe"] == resolve(tiny_recipe)


def test_prototypes_frozen_for_exactly_the_configured_steps(tiny_recipe):
    recorder = PrototypeRecorder()
    recipe = resolved(tiny_recipe, method__head__freeze_prototypes_iters=2,
                      trainer__limit_train_batches=4, method__optimizer="sgd", method__lr=2.0,
                      method__warmup_epochs=0)
    fit(recipe, recorder)
    p = recorder.prototypes  # p[i] = prototypes before step i
    torch.testing.assert_close(p[1], p[0], atol=1e-6, rtol=0)  # step 0 frozen
    torch.testing.assert_close(p[2], p[0], atol=1e-6, rtol=0)  # step 1 frozen
    assert (p[3] - p[2]).abs().max() > 1e-3  # step 2 updates them
    for weights in p:
        torch.testing.assert_close(weights.norm(dim=1), torch.ones(len(weights)))


def test_learning_rate_scaled_with_global_batch_and_warmed_up(tiny_recipe):
    recorder = PrototypeRecorder()
    recipe = resolved(tiny_recipe, method__lr=0.4, method__lr_batch_size=64,
                      method__warmup_epochs=0.5, trainer__limit_train_batches=4)
    fit(recipe, recorder)
    peak = 0.4 * 32 / 64
    # 4 steps, 2 of warm-up: linear to the peak, then cosine towards peak / 1000
    assert recorder.lrs[0] == pytest.approx(peak / 2)
    assert recorder.lrs[1] == pytest.approx(peak)
    assert recorder.lrs[2] == pytest.approx(peak)
    assert recorder.lrs[3] == pytest.approx(peak * (0.001 + 0.999 * (1 + math.cos(math.pi)) / 2))


def test_max_steps_shortens_the_schedule_and_keeps_the_warm_up_in_epochs(tiny_recipe):
    # 4 batches an epoch, 3 epochs, but 6 steps: the cosine ends at step 6, not 12
    recorder = PrototypeRecorder()
    recipe = resolved(tiny_recipe, method__lr=0.4, method__lr_batch_size=32,
                      method__warmup_epochs=0.5, trainer__limit_train_batches=4,
                      trainer__max_epochs=3, trainer__max_steps=6)
    method, _ = fit(recipe, recorder)
    plan = method.training_plan()
    assert (plan.steps_per_epoch, plan.total_steps, plan.warmup_steps) == (4, 6, 2)
    # the cosine runs over steps 2-5 and ends at the last one, step 5
    assert recorder.lrs[1] == pytest.approx(0.4)
    assert recorder.lrs[3] == pytest.approx(0.4 * (0.001 + 0.999 * (1 + math.cos(math.pi / 3)) / 2))
    assert recorder.lrs[5] == pytest.approx(0.4 * 0.001)


def test_the_official_optimiser_decays_and_adapts_every_parameter(tiny_recipe):
    method, _ = fit(resolved(tiny_recipe, trainer__limit_train_batches=1))
    optimizer = method.trainer.optimizers[0]
    assert isinstance(optimizer, LARC)
    (group,) = optimizer.param_groups
    assert group["weight_decay"] > 0 and not group["clip"] and not group["exclude_bias_norm"]
    assert {id(p) for p in group["params"]} == {id(p) for p in method.parameters()}


@pytest.mark.parametrize(("name", "kind"), [("sgd", torch.optim.SGD),
                                          ("adamw", torch.optim.AdamW)])
def test_sgd_and_adamw_can_leave_norm_and_bias_out_of_weight_decay(tiny_recipe, name, kind):
    method, _ = fit(resolved(tiny_recipe, trainer__limit_train_batches=1,
                             method__optimizer=name, method__exclude_bias_norm=True))
    optimizer = method.trainer.optimizers[0]
    decayed, free = optimizer.param_groups
    assert free["weight_decay"] == 0.0 and decayed["weight_decay"] > 0
    free_ids = {id(p) for p in free["params"]}
    assert id(method.head.projection[1].weight) in free_ids  # BatchNorm
    assert id(method.head.projection[0].bias) in free_ids
    assert id(method.head.projection[0].weight) not in free_ids
    assert type(optimizer) is kind


def test_a_left_out_head_width_is_the_backbones_and_is_stated(tiny_recipe):
    del tiny_recipe["method"]["head"]["input_dim"]
    recipe = resolve(tiny_recipe)
    assert recipe["method"]["head"]["input_dim"] == 512
    method, trainer = fit(resolved(recipe, trainer__limit_train_batches=1))
    assert method.head.input_dim == 512 and trainer.global_step == 1
    assert resolved(tiny_recipe, method__head__input_dim=None) == recipe


def test_a_backbone_without_num_features_needs_the_head_width(tiny_recipe):
    BACKBONES.register("flatten_for_test")(nn.Flatten)
    try:
        with pytest.raises(ConfigError, match="method.head.input_dim is not set and the "
                           "backbone 'flatten_for_test' has no integer num_features"):
            resolved(tiny_recipe, method__backbone={"name": "flatten_for_test"},
                     method__head__input_dim=None)
    finally:
        BACKBONES.unregister("flatten_for_test")


def test_queue_fills_then_is_used_across_epochs(tiny_recipe):
    recipe = resolved(tiny_recipe, method__queue__length=64, method__queue__start_epoch=1,
                      trainer__max_epochs=3, trainer__limit_train_batches=3,
                      method__head__num_prototypes=20)
    method, trainer = fit(recipe)
    with open(f"{trainer.logger.log_dir}/metrics.csv") as f:
        used = [(int(r["epoch"]), float(r["train/queue_in_use"]))
                for r in csv.DictReader(f) if r["train/queue_in_use"]]
    by_epoch = {e: [u for ep, u in used if ep == e] for e in range(3)}
    assert by_epoch[0] == [0.0, 0.0, 0.0]  # before start_epoch: not filled, not used
    assert by_epoch[1] == [0.0, 0.0, 1.0]  # 2 batches of 32 fill 64, used from the 3rd
    assert by_epoch[2] == [1.0, 1.0, 1.0]  # stays in use across the epoch boundary
    assert method.queue.is_full()


def test_queue_round_trips_through_a_checkpoint(tiny_recipe, tmp_path):
    recipe = resolved(tiny_recipe, method__queue__length=64, method__queue__start_epoch=0,
                      trainer__limit_train_batches=3)
    method, trainer = fit(recipe)
    restored = load_pretrained(tmp_path / "run" / "checkpoints" / "last.ckpt").method
    torch.testing.assert_close(restored.queue.embeddings, method.queue.embeddings)
    assert restored.queue.is_full() and method.queue.is_full()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"method__head__num_prototypes": 100},
         "global batch 32 \\+ queue 0 < 100 prototypes: the equipartition cannot hold"),
        ({"trainer__accumulate_grad_batches": 2}, "gradient accumulation is on"),
        ({"method__head__input_dim": 2048},
         "the backbone outputs 512 features but head.input_dim is 2048"),
        ({"method__loss__crops_for_assign": [0, 4]},
         "crops_for_assign=\\[0, 4\\] but there are only 4 crops"),
        ({"method__queue__length": 16, "method__queue__start_epoch": 0},
         "holds 16 embeddings per rank, fewer than the per-device batch of 32"),
    ],
)
def test_start_up_checks(tiny_recipe, tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message):
        fit(resolved(tiny_recipe, **changes))
    assert not (tmp_path / "run" / "recipe.yaml").exists()


def test_non_unit_norm_embeddings_are_refused_at_the_first_step():
    class BadHead(torch.nn.Module):
        input_dim, output_dim, num_prototypes, freeze_prototypes_iters = 4, 4, [4], 0

        def __init__(self):
            super().__init__()
            self.prototypes = torch.nn.ModuleList([torch.nn.Linear(4, 4, bias=False)])

        def forward(self, x):
            return x * 3, [self.prototypes[0](x)]

        def normalize_prototypes(self):
            pass

        def drop_prototype_grads(self, step):
            return False

    data = [([x, x.flip(0)], 0) for x in torch.randn(8, 4)]
    loader = DataLoader(data, batch_size=8, collate_fn=MultiCropCollate())
    method = SwAV(backbone=torch.nn.Identity(), head=BadHead())
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    with pytest.raises(ConfigError, match="SwAV needs unit-norm embeddings"):
        trainer.fit(method, train_dataloaders=loader)
    assert trainer.global_step == 0


def test_usable_from_plain_python_without_the_runner():
    class Crops(TensorDataset):
        def __getitem__(self, i):
            x, y = super().__getitem__(i)
            return [x, x.flip(-1)], int(y)

    data = Crops(torch.randn(16, 3, 8, 8), torch.zeros(16))
    loader = DataLoader(data, batch_size=8, collate_fn=MultiCropCollate(), drop_last=True)
    method = SwAV(backbone=resnet18_cifar(), head=SwAVHead(512, 16, 8, 8, 0), loss=SwAVLoss())
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(method, train_dataloaders=loader)
    assert trainer.global_step == 2


def test_channels_last_backbone_trains_like_the_contiguous_one(tiny_recipe):
    losses = {}
    for channels_last in (False, True):
        recipe = resolved(tiny_recipe, method__channels_last=channels_last,
                          trainer__limit_train_batches=2)
        method, trainer = fit(recipe)
        conv = method.backbone.stem[0].weight if hasattr(method.backbone, "stem") else next(
            p for p in method.backbone.parameters() if p.dim() == 4)
        assert conv.is_contiguous(memory_format=torch.channels_last) == channels_last
        losses[channels_last] = trainer.callback_metrics["train/loss"]
    torch.testing.assert_close(losses[True], losses[False], atol=1e-4, rtol=1e-4)


def test_trains_with_the_batched_device_augmentation(tiny_recipe):
    recipe = resolved(tiny_recipe, data__augment="gpu", trainer__limit_train_batches=2)
    method, trainer = fit(recipe)
    assert trainer.global_step == 2
    assert torch.isfinite(trainer.callback_metrics["train/loss"])


@pytest.mark.slow
def test_compiled_backbone_trains_like_the_eager_one_and_saves_plain_keys(tiny_recipe, tmp_path):
    losses = {}
    for compiled in (False, True):
        # a narrow backbone and one crop size: one small graph to compile on the CPU
        recipe = resolved(tiny_recipe, method__compile_backbone=compiled,
                          method__backbone={"name": "resnet_small", "widths": [8, 16, 32],
                                            "blocks": [1, 1, 1]},
                          method__head__input_dim=32, trainer__limit_train_batches=2,
                          data__transform__crops=[{"size": 8, "count": 2, "scale": [0.5, 1.0]}],
                          run__output_dir=str(tmp_path / f"compiled_{compiled}"))
        method, trainer = fit(recipe)
        losses[compiled] = trainer.callback_metrics["train/loss"]
    torch.testing.assert_close(losses[True], losses[False], atol=1e-3, rtol=1e-3)
    saved = tmp_path / "compiled_True" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(saved, weights_only=True)
    assert not any("_orig_mod" in key for key in checkpoint["state_dict"])


def assignments_forced(method, owner):
    """Make the argmax prototype of sample ``i`` be ``owner(i)``, keeping the gradient path."""
    forward = method.head.forward

    def forced(features):
        z, scores = forward(features)
        index = owner(torch.arange(len(z)))
        return z, [s * 0 + 10 * torch.nn.functional.one_hot(index, s.shape[1]) for s in scores]

    method.head.forward = forced


@pytest.mark.parametrize(("owner", "warns"), [
    (lambda i: torch.zeros_like(i), True),  # every crop to one prototype: collapse
    (lambda i: i % 20, False),  # spread over all 20
])
def test_collapse_warning_when_few_prototypes_take_the_crops_for_long(tiny_recipe, owner, warns):
    recipe = resolved(tiny_recipe, trainer__limit_train_batches=2, trainer__max_epochs=2,
                      method__collapse_patience_steps=4)
    method, data, trainer = build(recipe)
    assignments_forced(method, owner)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(method, datamodule=data)
    messages = [str(w.message) for w in caught if "collapsing" in str(w.message)]
    assert len(messages) == int(warns)
    if warns:
        assert "for the last 4 steps, 3 prototypes took at least 90% of the assigned crops" \
            in messages[0]
    logged = trainer.callback_metrics["train/top_prototypes_share"]
    assert logged == pytest.approx(1.0 if warns else 3 / 20, abs=0.05)


def test_warm_up_starts_from_its_stated_fraction_of_the_peak(tiny_recipe):
    recorder = PrototypeRecorder()
    recipe = resolved(tiny_recipe, method__lr=0.4, method__lr_batch_size=32,
                      method__warmup_epochs=0.5, method__warmup_start_ratio=0.25,
                      trainer__limit_train_batches=4)
    fit(recipe, recorder)
    # 2 warm-up steps from 0.25 x peak: the first is halfway, the second at the peak
    assert recorder.lrs[0] == pytest.approx(0.4 * (0.25 + 0.75 / 2))
    assert recorder.lrs[1] == pytest.approx(0.4)


def test_uint8_crops_outside_the_datamodule_are_refused_in_one_line():
    transform = MultiCropTransform(crops=[{"size": 8, "count": 2, "scale": (0.5, 1.0)}])
    data = [(transform(image), label) for image, label in (digits(image_size=8)[i]
                                                           for i in range(8))]
    loader = DataLoader(data, batch_size=8, collate_fn=MultiCropCollate())
    method = SwAV(backbone=resnet18_cifar(), head=SwAVHead(512, 16, 8, 8, 0), loss=SwAVLoss())
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    with pytest.raises(ConfigError, match="normalize_on_device"):
        trainer.fit(method, train_dataloaders=loader)


def test_the_run_plans_with_the_trainers_world_size_unless_a_dry_run_plans_a_launch(tiny_recipe):
    method, data, trainer = build(resolve(tiny_recipe))
    method.trainer = trainer
    method.check_launch(data, {}, 8)  # checks a launch; plans nothing
    assert method.world_size == trainer.world_size == 1
    method.plan_launch(8)
    assert method.world_size == 8
