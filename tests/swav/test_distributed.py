"""Sinkhorn under 2-process CPU DDP (gloo) equals one process holding the global batch."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from swav_plugin.swav.loss import SwAVLoss
from swav_plugin.swav.sinkhorn import sinkhorn

WORLD = 2


def global_scores():
    g = torch.Generator().manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(64, 16, generator=g), dim=1)
    c = torch.nn.functional.normalize(torch.randn(40, 16, generator=g), dim=1)
    return z @ c.t()


def worker(rank, init_file, out_dir, distributed):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD)
    try:
        scores = global_scores().chunk(WORLD)[rank]
        codes = sinkhorn(scores.half(), distributed=distributed)  # fp16 in, as under AMP
        # the loss on a 2-crop batch: codes of crop 0 come from the same all-reduced Sinkhorn
        loss = SwAVLoss(crops_for_assign=(0,), distributed_sinkhorn=distributed)
        out = loss([torch.cat([scores, scores.flip(0)])], len(scores))
        torch.save({"codes": codes, "loss_codes": out.codes[0][0]},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def run_ranks(tmp_path, distributed):
    mp.spawn(worker, args=(str(tmp_path / "init"), str(tmp_path), distributed), nprocs=WORLD)
    parts = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


@pytest.mark.slow
def test_ddp_codes_equal_single_process_codes_on_the_global_batch(tmp_path):
    got = run_ranks(tmp_path, distributed=True)
    expected = sinkhorn(global_scores().half(), distributed=False)
    torch.testing.assert_close(got["codes"], expected, atol=1e-6, rtol=1e-5)
    expected_loss_codes = sinkhorn(global_scores(), distributed=False)  # fp32 scores there
    torch.testing.assert_close(got["loss_codes"], expected_loss_codes, atol=1e-6, rtol=1e-5)


@pytest.mark.slow
def test_local_balancing_differs_when_distributed_is_off(tmp_path):
    got = run_ranks(tmp_path, distributed=False)
    expected = torch.cat([sinkhorn(s, distributed=False)
                          for s in global_scores().half().chunk(WORLD)])
    torch.testing.assert_close(got["codes"], expected, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(got["codes"], sinkhorn(global_scores(), distributed=False),
                              atol=1e-4)
