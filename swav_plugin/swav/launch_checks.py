"""Start-up checks of a SwAV run [0]: each refuses, in one line, a run that cannot train.

:func:`backbone_width` runs when a recipe is resolved without ``head.input_dim``;
:func:`check_launch` runs before the Trainer is built (the runner's launch and dry run) and
again at ``setup``; :func:`check_crops`, :func:`check_batch` and :func:`check_unit_norm` run
at the first step when the data could not be checked before. All raise
:class:`~swav_plugin.host.errors.ConfigError` naming the setting to change.

- [0]: SwAV, 2020, https://arxiv.org/abs/2006.09882
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from swav_plugin.host.errors import ConfigError
from swav_plugin.host.recipe import build_component
from swav_plugin.swav.head import SwAVHead
from swav_plugin.swav.loss import SwAVLoss


def backbone_width(backbone: Mapping[str, Any], path: str) -> int:
    """The ``num_features`` of the backbone a recipe node describes, for ``head.input_dim``.

    The backbone is built on the meta device (no memory, no initialisation work).

    Args:
        backbone: The method's resolved ``backbone`` recipe node.
        path: The method's path in the recipe, for the error message.
    """
    with torch.device("meta"):
        built = build_component(backbone, "backbone", f"{path}.backbone")
    width = getattr(built, "num_features", None)
    if not isinstance(width, int):
        raise ConfigError(
            f"{path}.head.input_dim is not set and the backbone "
            f"'{backbone['name']}' has no integer num_features to take it from; "
            f"set {path}.head.input_dim to the width of its features"
        )
    return width


def check_launch(
    *,
    backbone: nn.Module,
    head: SwAVHead,
    loss: SwAVLoss,
    queue_length: int,
    datamodule: Any,
    trainer: Mapping[str, Any],
    world_size: int | None,
) -> bool:
    """Check the head's width, the ``trainer`` settings, the crops and the batch.

    Args:
        backbone: The backbone; its ``num_features``, when it has one, must be the head's
            ``input_dim``.
        head: The head (``input_dim``, ``num_prototypes``).
        loss: The loss, whose crops for assignment the transform's crops must hold.
        queue_length: The queue's total length; 0 without a queue.
        datamodule: The data; its ``transform.crop_sizes`` and ``batch_size`` are checked
            when it has them.
        trainer: The trainer settings (``accumulate_grad_batches``).
        world_size: Processes of the launch; ``None`` when not known yet.

    Returns:
        Whether the batch was checked (it needs the batch size and the world size).
    """
    width = getattr(backbone, "num_features", head.input_dim)
    if width != head.input_dim:
        raise ConfigError(
            f"the backbone outputs {width} features but head.input_dim is "
            f"{head.input_dim}; set method.head.input_dim={width}"
        )
    accumulate = trainer.get("accumulate_grad_batches", 1)
    if accumulate != 1:
        raise ConfigError(
            f"gradient accumulation is on (trainer.accumulate_grad_batches={accumulate}) "
            "but Sinkhorn-Knopp would then balance only micro-batches; use more devices or "
            "a queue instead and set it to 1"
        )
    crop_sizes = getattr(getattr(datamodule, "transform", None), "crop_sizes", None)
    if crop_sizes is not None:
        try:
            loss.check_num_crops(len(crop_sizes))
        except ValueError as exc:
            raise ConfigError(f"method.loss: {exc}") from None
    batch_size = getattr(datamodule, "batch_size", None)
    if batch_size is None or world_size is None:
        return False
    check_batch(batch_size, world_size, queue_length, head.num_prototypes)
    return True


def check_batch(
    batch_size: int, world_size: int, queue_length: int, num_prototypes: Sequence[int]
) -> None:
    """Check that each rank's queue holds a batch and that the equipartition can hold.

    Sinkhorn-Knopp spreads the global batch and the queue evenly over the K prototypes
    (eq. 4's constraint), so they must hold at least K samples for no prototype to go empty.

    Args:
        batch_size: The per-device batch.
        world_size: Processes the global batch is spread over.
        queue_length: The queue's total length (each rank holds ``// world_size``); 0 for none.
        num_prototypes: K of each prototype set.
    """
    global_batch = batch_size * world_size
    local_length = queue_length // world_size
    if 0 < local_length < batch_size:
        raise ConfigError(
            f"method.queue.length={queue_length} holds {local_length} embeddings per "
            f"rank, fewer than the per-device batch of {batch_size}; raise "
            f"method.queue.length to at least {global_batch}"
        )
    for k in num_prototypes:
        if global_batch + queue_length < k:
            raise ConfigError(
                f"global batch {global_batch} + queue {queue_length} < {k} prototypes: the "
                "equipartition cannot hold (prototypes would go empty); lower "
                "method.head.num_prototypes or raise the batch size or method.queue.length"
            )


def check_crops(groups: Sequence[Tensor]) -> None:
    """Check that the crops of a batch (one tensor per resolution) arrive normalised."""
    if any(not g.is_floating_point() for g in groups):
        raise ConfigError(
            f"the crops arrive as {groups[0].dtype}, not normalised: multicrop hands over "
            "uint8 crops for the DataModule to normalise on the device; outside it, apply "
            "transform.normalize_on_device to each crop tensor of the batch"
        )


def check_unit_norm(embeddings: Tensor, prototypes: Tensor) -> None:
    """Check that embeddings and prototypes lie on the unit sphere, as the scores z · cᵀ
    of eq. 2 assume; one read of the device for both.

    Args:
        embeddings: (N, D) embeddings of the head.
        prototypes: (K, D) prototypes, every set's stacked.
    """
    all_norms = [v.detach().float().norm(dim=1) for v in (embeddings, prototypes)]
    worst = torch.stack([(n - 1).abs().max() for n in all_norms]).tolist()
    for name, error, norms in zip(("embeddings", "prototypes"), worst, all_norms, strict=True):
        if error > 1e-2:
            raise ConfigError(
                f"SwAV needs unit-norm {name} (norms range {norms.min():.3f}–"
                f"{norms.max():.3f}); L2-normalise them in the head"
            )
