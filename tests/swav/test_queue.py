from types import SimpleNamespace

import pytest
import torch

from swav_plugin.swav.head import SwAVHead
from swav_plugin.swav.module import SwAV
from swav_plugin.swav.queue import (
    SwAVQueue,
    exclude_from_ddp_broadcast,
    gather_rank_queues,
    rank_queue_state,
)


def filled_queue(length=6, batch=2, pushes=3, dim=4):
    queue = SwAVQueue(length=length, start_epoch=0)
    queue.allocate(num_crops=2, local_length=length, dim=dim)
    batches = [torch.randn(2, batch, dim) for _ in range(pushes)]
    for b in batches:
        queue.push(b)
    return queue, batches


def test_fills_fifo_newest_first():
    queue, batches = filled_queue(length=6, batch=2, pushes=2)
    assert not queue.is_full()
    queue.push(extra := torch.randn(2, 2, 4))
    assert queue.is_full()
    torch.testing.assert_close(queue.embeddings[:, :2], extra)
    torch.testing.assert_close(queue.embeddings[:, 2:4], batches[1])
    torch.testing.assert_close(queue.embeddings[:, 4:6], batches[0])
    queue.push(newest := torch.randn(2, 2, 4))  # the oldest batch falls out
    torch.testing.assert_close(queue.embeddings[:, 4:6], batches[1])
    torch.testing.assert_close(queue.embeddings[:, :2], newest)


def test_filling_starts_at_start_epoch():
    queue = SwAVQueue(length=8, start_epoch=3)
    queue.allocate(2, 8, 4)
    assert [queue.is_filling(e) for e in range(5)] == [False, False, False, True, True]
    assert not SwAVQueue(length=0).is_filling(10)


def test_batch_larger_than_queue_is_an_error():
    queue = SwAVQueue(length=4, start_epoch=0)
    queue.allocate(1, 4, 3)
    with pytest.raises(ValueError, match="make queue.length at least the global batch"):
        queue.push(torch.randn(1, 5, 3))


def test_state_dict_round_trip_restores_contents_and_fill_level():
    queue, _ = filled_queue(length=6, batch=2, pushes=2)
    restored = SwAVQueue(length=6, start_epoch=0)  # not yet allocated: shape comes from the file
    restored.load_state_dict(queue.state_dict())
    torch.testing.assert_close(restored.embeddings, queue.embeddings)
    assert not restored.is_full()
    restored.push(torch.randn(2, 2, 4))
    assert restored.is_full()


def test_allocate_keeps_restored_contents_of_the_right_shape():
    queue, _ = filled_queue()
    before = queue.embeddings.clone()
    queue.allocate(2, 6, 4)
    torch.testing.assert_close(queue.embeddings, before)
    assert queue.is_full()


@pytest.mark.parametrize(("kwargs", "message"), [({"length": -1}, "length must be 0"),
                                                 ({"start_epoch": -2}, "start_epoch must be 0")])
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SwAVQueue(**kwargs)


def test_each_rank_restores_its_own_row_of_the_saved_queues():
    method = SwAV(backbone=torch.nn.Flatten(), head=SwAVHead(input_dim=4, hidden_dim=0,
                                                             output_dim=4, num_prototypes=3),
                  queue=SwAVQueue(length=4, start_epoch=0))
    method.queue.allocate(1, 2, 4)
    saved = {"embeddings": torch.arange(16.0).view(2, 1, 2, 4),  # two ranks' queues
             "filled": torch.tensor([2, 1])}
    for rank, expected_filled in ((1, 1), (2, 0)):  # rank 2: the run grew beyond the saved
        method._trainer = SimpleNamespace(global_rank=rank)
        checkpoint = {"state_dict": method.state_dict(), "swav_queues": saved}
        method.on_load_checkpoint(checkpoint)
        method.load_state_dict(checkpoint["state_dict"])
        expected = saved["embeddings"][rank] if rank < 2 else torch.zeros(1, 2, 4)
        assert torch.equal(method.queue.embeddings, expected)
        assert int(method.queue.filled) == expected_filled
        assert method.queue.is_full() == (expected_filled == 2)


def test_one_process_saves_its_queue_as_the_only_row_on_the_host():
    queue, _ = filled_queue(length=6, batch=2, pushes=2)
    saved = gather_rank_queues(queue, None)
    assert saved["embeddings"].shape == (1, 2, 6, 4) and saved["filled"].tolist() == [4]
    torch.testing.assert_close(saved["embeddings"][0], queue.embeddings)
    assert not saved["embeddings"].requires_grad and saved["embeddings"].device.type == "cpu"


def test_gathered_rows_are_each_ranks_queue_and_each_rank_gets_its_own_back():
    ranks = [filled_queue(length=6, batch=2, pushes=pushes)[0] for pushes in (3, 1)]
    # stands in for LightningModule.all_gather on rank 0, stacking every rank's tensor
    stacks = {id(ranks[0].embeddings): torch.stack([q.embeddings for q in ranks]),
              id(ranks[0].filled): torch.stack([q.filled for q in ranks])}
    saved = gather_rank_queues(ranks[0], lambda t: stacks[id(t)])
    assert saved["filled"].tolist() == [6, 2]
    for rank, queue in enumerate(ranks):
        state = rank_queue_state(saved, rank)
        assert list(state) == ["embeddings", "filled"]
        torch.testing.assert_close(state["embeddings"], queue.embeddings)
        assert int(state["filled"]) == int(queue.filled)
    beyond = rank_queue_state(saved, 2)  # the run grew beyond the saved ranks
    assert beyond["embeddings"].shape == (2, 6, 4) and not beyond["embeddings"].any()
    assert int(beyond["filled"]) == 0


def test_the_queue_buffers_are_left_out_of_ddps_broadcast():
    owner = torch.nn.Module()
    owner.queue = SwAVQueue(length=4)
    owner.linear = torch.nn.Linear(2, 2)
    exclude_from_ddp_broadcast(owner, "queue")
    assert set(owner._ddp_params_and_buffers_to_ignore) == {"queue.embeddings", "queue.filled"}
