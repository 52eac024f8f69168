"""SwAV's multi-crop augmentation [0] batched on the training device.

The same crops and augmentations as :class:`~swav_plugin.swav.multicrop.MultiCropTransform`
(built from its validated crop groups), but for a whole batch of ``uint8`` images at once:
every crop of every image is cut and resized in one ``roi_align`` call per crop group, then
flipped, colour-jittered, greyed, blurred and solarised with per-crop random parameters
(:mod:`swav_plugin.zoo.batch_augment`). CPU workers then only load ``uint8`` pixels, which
removes the data-loading bottleneck of 8 crops per image (REFERENCE: "multi-crop is slow").

The output is that of :class:`~swav_plugin.swav.multicrop.MultiCropCollate`: one tensor per run
of equal-sized crops, crop-major, so the method cannot tell the two pipelines apart.

- [0]: SwAV, 2020, https://arxiv.org/abs/2006.09882
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from swav_plugin.zoo import batch_augment as A

SOLARIZE_THRESHOLD = 128 / 255  # torchvision's RandomSolarize(128) on uint8 pixels


def blur_kernel_size(crop_size: int) -> int:
    """Odd Gaussian kernel of about 10 % of the crop (the official code's choice), at least 3."""
    return max(3, int(0.1 * crop_size) // 2 * 2 + 1)


class GPUMultiCrop:
    """Multi-crop of a ``uint8`` batch (B, 3, H, W) into normalised float crops, on its device.

    Args:
        groups: Validated crop groups (``MultiCropTransform.groups``): size, count, scale and
            the augmentation settings of each.
        mean, std: Normalisation per channel.
        load_size: Side of the square ``uint8`` image :meth:`prepare` makes on the CPU from an
            image of any size (shorter side resized to it, then centre-cropped).
    """

    def __init__(
        self,
        groups: Sequence[Mapping[str, Any]],
        mean: Sequence[float],
        std: Sequence[float],
        load_size: int,
    ) -> None:
        if load_size < 1:
            raise ValueError(f"load_size must be positive, got {load_size}")
        self.groups = [dict(g) for g in groups]
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.load_size = load_size

    def prepare(self, image: Image.Image) -> Tensor:
        """One image of any size as a (3, load_size, load_size) ``uint8`` tensor (CPU side)."""
        size = self.load_size
        image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale when it is larger
        image = image.convert("RGB")
        scale = size / min(image.size)
        width, height = (max(size, round(side * scale)) for side in image.size)
        image = image.resize((width, height), Image.BILINEAR)
        left, top = (width - size) // 2, (height - size) // 2
        image = image.crop((left, top, left + size, top + size))
        return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> list[Tensor]:
        """All crops of ``images`` (B, 3, H, W) ``uint8``, grouped by resolution, crop-major."""
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(
                f"expected a uint8 batch (B, 3, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        batch, _, height, width = images.shape
        pixels = images.float().div_(255)
        runs: list[tuple[int, list[Tensor]]] = []
        for g in self.groups:
            crops = self._group(pixels, g, batch, height, width, generator)
            if runs and runs[-1][0] == g["size"]:
                runs[-1][1].append(crops)
            else:
                runs.append((g["size"], [crops]))
        return [parts[0] if len(parts) == 1 else torch.cat(parts) for _, parts in runs]

    def _group(
        self,
        pixels: Tensor,
        g: Mapping[str, Any],
        batch: int,
        height: int,
        width: int,
        generator: torch.Generator | None,
    ) -> Tensor:
        count, size = g["count"], g["size"]
        boxes = A.random_resized_crop_boxes(
            count * batch, height, width, tuple(g["scale"]), generator=generator,
            device=pixels.device,
        )
        owner = torch.arange(batch, device=pixels.device).repeat(count)  # crop-major
        x = A.crop_resize(pixels, boxes, owner, size)
        x = A.horizontal_flip(x, g["hflip_prob"], generator)
        x = A.color_jitter(x, g["brightness"], g["contrast"], g["saturation"], g["hue"],
                           g["color_jitter_prob"], generator)
        x = A.random_grayscale(x, g["grayscale_prob"], generator)
        x = A.gaussian_blur(x, blur_kernel_size(size), g["blur_sigma"], g["blur_prob"],
                            generator)
        x = A.solarize(x, SOLARIZE_THRESHOLD, g["solarize_prob"], generator)
        return A.normalize(x, self.mean, self.std)
