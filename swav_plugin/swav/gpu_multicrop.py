"""SwAV's multi-crop augmentation [0] batched on the training device.

The same crops and augmentations as :class:`~swav_plugin.swav.multicrop.MultiCropTransform`
(built from its validated crop groups), for a whole batch of ``uint8`` images, in two parts
(:mod:`swav_plugin.zoo.batch_draws`, :mod:`swav_plugin.zoo.batch_augment`):

- :meth:`GPUMultiCrop.draw` makes every random parameter of the batch (crop boxes, flips,
  rotations and shifts, the colour jitter's passes, grey, blur kernels, solarisation) on the
  CPU, in the DataLoader worker that loads the batch: a few dozen operations on small tensors,
  off the training process;
- :meth:`GPUMultiCrop.__call__` applies them on the device: every crop of a group is cut and
  resized by one ``roi_align`` call, then flipped, rotated and shifted, jittered, greyed,
  blurred, solarised and normalised, each a handful of whole-batch operations and none
  reading a value back.

CPU workers thus only load ``uint8`` pixels and draw numbers, which removes the data-loading
bottleneck of 8 crops per image (REFERENCE: "multi-crop is slow"), and the device runs few
kernels per batch, so that launching them does not take longer than the step they feed.

The output is that of :class:`~swav_plugin.swav.multicrop.MultiCropCollate`: one tensor per run
of equal-sized crops, crop-major, so the method cannot tell the two pipelines apart.

- [0]: SwAV, 2020, https://arxiv.org/abs/2006.09882
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from swav_plugin.zoo import batch_augment as A
from swav_plugin.zoo import batch_draws as D

SOLARIZE_THRESHOLD = 128 / 255  # torchvision's RandomSolarize(128) on uint8 pixels
# Rows of CropDraws.params, in the order they apply: the flip, the rotation's angle and the
# two shifts, the colour jitter's passes, grey, blur, solarise.
FLIP, ANGLE, SHIFT_X, SHIFT_Y, JITTER = range(5)
GREY = JITTER + A.JITTER_ROWS
BLUR, SOLARIZE = GREY + 1, GREY + 2
ROWS = SOLARIZE + 1


def blur_kernel_size(max_sigma: float) -> int:
    """Odd Gaussian kernel spanning ±3 standard deviations of the largest ``max_sigma``.

    The CPU path blurs with PIL's ``GaussianBlur(radius=sigma)``, as the official code,
    solo-learn and lightly do, which has no kernel size; a kernel of ±3σ holds 99.7 % of
    the Gaussian's weight.
    """
    return 2 * math.ceil(3 * max_sigma) + 1


class CropDraws(NamedTuple):
    """The random draws of one batch's multi-crop; moved to the device with the batch.

    ``rois`` (C, 5): the source image and box of every crop, group after group, crop-major;
    ``params`` (ROWS, C, 1, 1, 1): per crop, the weights (0 or 1) and values of each
    augmentation; ``kernels``: per group, the crops' blur kernels (C_g, k), or ``None``.

    A plain named tuple, without a ``to`` method of its own: the DataLoader pins its tensors
    and Lightning moves each with ``non_blocking=True`` (an object with a ``to`` method it
    would move by calling that, without, which blocks until the device is idle).
    """

    rois: Tensor
    params: Tensor
    kernels: list[Tensor | None]


class GPUMultiCrop:
    """Multi-crop of a ``uint8`` batch (B, 3, H, W) into normalised float crops, on its device.

    Args:
        groups: Validated crop groups (``MultiCropTransform.groups``): size, count, scale and
            the augmentation settings of each.
        mean, std: Normalisation per channel.
        load_size: The largest shorter side of images not held in memory: larger images are
            brought down to it, aspect kept, before their crops are drawn and cut
            (:meth:`prepare` on the CPU, or :func:`~swav_plugin.zoo.encoded.decode_resized`
            on the device); smaller ones are cropped at their own size, as torchvision crops
            them.
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
        for index, g in enumerate(groups):
            if g.get("interpolation", "bilinear") != "bilinear":
                raise ValueError(
                    f"crops[{index}]: the device crops resample bilinearly, not "
                    f"{g['interpolation']}; set data.augment: cpu or interpolation: bilinear"
                )
        self.groups = [dict(g) for g in groups]
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.load_size = load_size

    def prepared_size(self, height: Tensor, width: Tensor) -> tuple[Tensor, Tensor]:
        """The (height, width) :meth:`prepare` gives images of ``height × width`` (tensors):
        a shorter side above ``load_size`` brought down to it, the aspect kept."""
        return A.downscaled_size(height, width, self.load_size)

    def prepare(self, image: Image.Image) -> Tensor:
        """One image of any size as a ``uint8`` (3, h, w) tensor of :meth:`prepared_size`, the
        whole image kept (CPU side)."""
        size = self.load_size
        image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale when it is larger
        image = image.convert("RGB")
        height, width = (int(side) for side in self.prepared_size(image.height, image.width))
        if (width, height) != image.size:
            image = image.resize((width, height), Image.BILINEAR)
        return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)

    def stack(self, images: Sequence[Tensor]) -> Tensor:
        """Prepared images of a size each as one batch for :meth:`__call__`
        (:func:`~swav_plugin.zoo.batch_augment.canvas`)."""
        return A.canvas(images)

    def draw(
        self,
        batch: int,
        height: int | Tensor,
        width: int | Tensor,
        generator: torch.Generator | None = None,
    ) -> CropDraws:
        """Every random parameter of the crops of ``batch`` images of ``height × width`` (or,
        for images of different sizes, ``(batch,)`` tensors of each one's), drawn as
        torchvision's transforms draw them for each crop (on the generator's device)."""
        rois, params, kernels = [], [], []
        for g in self.groups:
            n = g["count"] * batch
            # crop-major: every image's first crop, then every image's second, ...
            crop_height, crop_width = (torch.as_tensor(side).expand(batch).repeat(g["count"])
                                       for side in (height, width))
            boxes = D.random_resized_crop_boxes(n, crop_height, crop_width, tuple(g["scale"]),
                                                generator=generator)
            image = torch.arange(batch, device=boxes.device).repeat(g["count"])  # crop-major
            rois.append(A.crop_rois(boxes, image))
            flip = D.coin(n, g["hflip_prob"], generator)
            affine = D.random_affine_params(n, g["rotation"], g["translate"], g["size"],
                                            g["size"], generator)
            jitter = D.sample_color_jitter_params(n, g["brightness"], g["contrast"],
                                                  g["saturation"], g["hue"],
                                                  g["color_jitter_prob"], generator)
            grey = D.coin(n, g["grayscale_prob"], generator)
            blur = D.coin(n, g["blur_prob"], generator)
            kernels.append(D.blur_kernels(blur_kernel_size(max(g["blur_sigma"])),
                                          D.uniform((n,), *g["blur_sigma"], generator))
                           if g["blur_prob"] > 0 else None)
            solarize = D.coin(n, g["solarize_prob"], generator)
            params.append(torch.cat((flip[None], affine, D.jitter_passes(jitter).rows(), grey[None],
                                     blur[None], solarize[None])))
        return CropDraws(torch.cat(rois), torch.cat(params, dim=1).view(ROWS, -1, 1, 1, 1),
                         kernels)

    def __call__(self, images: Tensor, draws: CropDraws) -> list[Tensor]:
        """All crops of ``images`` (B, 3, H, W) ``uint8`` with the ``draws`` of
        :meth:`draw` (on the same device), grouped by resolution, crop-major.

        Images of different sizes come as :meth:`stack` makes them, with draws made for
        each image's own size."""
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(
                f"expected a uint8 batch (B, 3, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        batch = images.shape[0]
        if draws.rois.shape[0] != batch * sum(g["count"] for g in self.groups):
            raise ValueError(
                f"the draws are for {draws.rois.shape[0]} crops, but a batch of {batch} images "
                f"makes {batch * sum(g['count'] for g in self.groups)}; draw for this batch"
            )
        pixels = images.float().div_(255)
        runs: list[tuple[int, list[Tensor]]] = []
        start = 0
        for g, kernels in zip(self.groups, draws.kernels, strict=True):
            end = start + g["count"] * batch
            crops = self._group(pixels, g, draws.rois[start:end],
                                draws.params[:, start:end].unbind(0), kernels)
            if runs and runs[-1][0] == g["size"]:
                runs[-1][1].append(crops)
            else:
                runs.append((g["size"], [crops]))
            start = end
        return [parts[0] if len(parts) == 1 else torch.cat(parts) for _, parts in runs]

    def _group(
        self,
        pixels: Tensor,
        g: Mapping[str, Any],
        rois: Tensor,
        rows: Sequence[Tensor],
        kernels: Tensor | None,
    ) -> Tensor:
        """One crop group: the operations its settings leave off are skipped (known on the
        host from the recipe, not from the draws)."""
        x = A.crop_resize(pixels, rois, g["size"])
        if g["hflip_prob"] > 0:
            x = A.horizontal_flip(x, rows[FLIP])
        if g["rotation"] > 0 or g["translate"] > 0:
            x = A.affine(x, rows[ANGLE], rows[SHIFT_X], rows[SHIFT_Y])
        jitter = (g["brightness"], g["contrast"], g["saturation"], g["hue"])
        if g["color_jitter_prob"] > 0 and any(jitter):
            x = A.color_jitter(x, rows[JITTER:GREY])
        if g["grayscale_prob"] > 0:
            x = A.grayscale(x, rows[GREY])
        if kernels is not None:
            x = A.gaussian_blur(x, kernels, rows[BLUR])
        if g["solarize_prob"] > 0:
            x = A.solarize(x, SOLARIZE_THRESHOLD, rows[SOLARIZE])
        return A.normalize(x, self.mean, self.std)
