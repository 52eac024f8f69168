"""The SwAV plugin: head, Sinkhorn-Knopp, loss, queue, multi-crop and the method.

Importing this package registers its components with the host's registries; the host does so
through the ``swav`` entry point of the ``swav_plugin.plugins`` group.
"""

from swav_plugin.swav.head import SwAVHead
from swav_plugin.swav.loss import SwAVLoss, SwAVLossOutput
from swav_plugin.swav.module import SwAV
from swav_plugin.swav.multicrop import MultiCropCollate, MultiCropTransform
from swav_plugin.swav.queue import SwAVQueue
from swav_plugin.swav.sinkhorn import sinkhorn

__all__ = [
    "MultiCropCollate",
    "MultiCropTransform",
    "SwAV",
    "SwAVHead",
    "SwAVLoss",
    "SwAVLossOutput",
    "SwAVQueue",
    "sinkhorn",
]
