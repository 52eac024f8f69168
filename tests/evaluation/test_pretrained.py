"""Weights rebuilt for evaluation from a swav-train checkpoint (other origins: test_weights)."""

import torch

from swav_plugin.evaluation.eval_data import labelled_splits
from swav_plugin.evaluation.pretrained import load_pretrained
from tests.evaluation.tools import save


def test_a_swav_train_checkpoint_passes_the_checks(content, tmp_path):
    queue = torch.randn(2, 32, 16)  # sized in training; the fresh model's buffer is empty
    content["state_dict"]["queue.embeddings"] = queue
    pretrained = load_pretrained(save(content, tmp_path))
    assert torch.equal(pretrained.method.queue.embeddings, queue)
    train, test = labelled_splits(pretrained.recipe, ["train", "test"])
    assert len(train) + len(test) == 1797 and train.classes == test.classes
