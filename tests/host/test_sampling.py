"""Sampling that resumes exactly: epoch-seeded order, per-sample seeds, a DataModule state."""

import random

import numpy as np
import torch
from torch.utils.data import DataLoader

from swav_plugin.host.data import DataModule
from swav_plugin.host.dataset_views import TransformedDataset
from swav_plugin.host.sampling import Draw, ResumableSampler, sample_seed, seeded_call
from swav_plugin.swav.multicrop import MultiCropCollate, MultiCropTransform
from swav_plugin.zoo.datasets import digits

CROPS = [{"size": 8, "count": 2, "scale": (0.3, 1.0)}, {"size": 4, "count": 1,
                                                         "scale": (0.1, 0.4)}]


def order(sampler, epoch):
    sampler.set_epoch(epoch)
    return [draw.index for draw in sampler]


def test_sample_seeds_differ_by_seed_epoch_and_index_and_are_stable():
    seeds = {sample_seed(s, e, i) for s in range(3) for e in range(3) for i in range(50)}
    assert len(seeds) == 3 * 3 * 50
    assert all(0 <= s < 2**63 for s in seeds)
    # a checkpoint's run resumes with the same crops only while this value stays the same
    assert sample_seed(7, 2, 11) == 3258630961005114748


def test_sampler_splits_an_epoch_over_ranks_and_reshuffles_every_epoch():
    data = range(40)
    ranks = [ResumableSampler(data, 2, r, seed=5, batch_size=4) for r in range(2)]
    epoch0 = [order(s, 0) for s in ranks]
    assert sorted(epoch0[0] + epoch0[1]) == list(range(40))
    assert order(ranks[0], 1) != epoch0[0]
    assert order(ranks[0], 0) == epoch0[0]  # a pure function of (seed, epoch)
    assert order(ResumableSampler(data, 2, 0, seed=6, batch_size=4), 0) != epoch0[0]


def test_sampler_resumes_mid_epoch_once_then_serves_whole_epochs():
    data = range(40)
    whole = ResumableSampler(data, 1, 0, seed=5, batch_size=4)
    resumed = ResumableSampler(data, 1, 0, seed=5, batch_size=4, epoch=3, batches_done=2)
    whole.set_epoch(3)
    assert list(resumed) == list(whole)[8:]
    assert len(resumed) == 40  # Lightning's step count (the LR schedule) must not change
    assert order(resumed, 4) == order(whole, 4)
    assert all(isinstance(d, Draw) and d.seed == sample_seed(5, 4, d.index) for d in resumed)


def test_seeded_call_is_reproducible_and_leaves_the_global_generators_alone():
    torch.manual_seed(0)
    random.seed(0)
    before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())

    def draw(_):
        return torch.rand(3), np.random.rand(), random.random()

    first, second = seeded_call(42, draw, None), seeded_call(42, draw, None)
    assert torch.equal(first[0], second[0]) and first[1:] == second[1:]
    assert not torch.equal(seeded_call(43, draw, None)[0], first[0])
    assert torch.equal(torch.get_rng_state(), before[0])
    assert np.array_equal(np.random.get_state()[1], before[1]) and random.getstate() == before[2]


def crops_of(num_workers):
    dataset = TransformedDataset(digits(image_size=8), MultiCropTransform(crops=CROPS))
    loader = DataLoader(dataset, batch_size=8, num_workers=num_workers, collate_fn=
                        MultiCropCollate(), sampler=ResumableSampler(dataset, 1, 0, 9, 8))
    return [next(iter(loader))[0] for _ in range(2)]


def test_augmentation_does_not_depend_on_the_number_of_workers():
    in_process, two_workers = crops_of(0), crops_of(2)
    for a, b in zip(in_process, two_workers, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def datamodule(augment):
    data = DataModule(digits(image_size=8), MultiCropTransform(crops=CROPS),
                      MultiCropCollate(), batch_size=8, num_workers=0, pin_memory=False,
                      augment=augment, seed=4)
    return data


def batches(data, count):
    loader = iter(data.train_dataloader())
    out = []
    for _ in range(count):
        batch = data.on_before_batch_transfer(next(loader), 0)
        groups, labels = data.on_after_batch_transfer(batch, 0)
        out.append((groups, labels))
    return out


def test_datamodule_state_resumes_the_same_batches_with_the_same_crops():
    for augment in ("cpu", "gpu"):
        straight = batches(datamodule(augment), 5)
        resumed = datamodule(augment)
        resumed.load_state_dict({"seed": 4, "epoch": 0, "batches_done": 3})
        for (groups, labels), (again, again_labels) in zip(straight[3:], batches(resumed, 2),
                                                           strict=True):
            assert torch.equal(labels, again_labels)
            assert all(torch.equal(a, b) for a, b in zip(groups, again, strict=True)), augment
