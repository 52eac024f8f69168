"""Deterministic evaluation transform: resize, centre crop, normalise."""

from __future__ import annotations

from PIL import Image
from torch import Tensor
from torchvision import transforms as T

from swav_plugin.host.registry import TRANSFORMS


@TRANSFORMS.register("center_crop")
class CenterCropTransform:
    """Resize the short side to ``size / crop_fraction``, centre-crop ``size``, normalise.

    ImageNet's evaluation uses 224 / 0.875 = 256; small images use ``crop_fraction: 1``.
    """

    def __init__(
        self,
        size: int = 224,
        crop_fraction: float = 0.875,
        mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
        std: tuple[float, float, float] = (0.229, 0.224, 0.225),
    ) -> None:
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        if not 0 < crop_fraction <= 1:
            raise ValueError(f"crop_fraction must be in (0, 1], got {crop_fraction}")
        self.transform = T.Compose(
            [
                T.Resize(round(size / crop_fraction)),
                T.CenterCrop(size),
                T.ToTensor(),
                T.Normalize(mean, std),
            ]
        )

    def __call__(self, image: Image.Image) -> Tensor:
        return self.transform(image.convert("RGB"))
