"""Multi-crop augmentation and the collate that groups crops by resolution (SwAV [0], §3.2).

:class:`MultiCropTransform` turns one image into ``Σ count`` crops, group by group — the
official ImageNet setting is 2 crops of 224 px at scale (0.14, 1) then 6 of 96 px at scale
(0.05, 0.14) — each with a random resized crop, horizontal flip, colour distortion
(jitter p = 0.8, grayscale p = 0.2), PIL's Gaussian blur and optional solarisation, plus,
for images such as digits, optional small rotations and shifts. Every augmentation parameter
can be overridden per crop group.

:class:`MultiCropCollate` stacks the crops of a batch crop-major and *by resolution*: one
tensor per run of equal-sized crops, so the model runs one backbone pass per resolution, as
the official code does, instead of one per crop.

- [0]: SwAV, 2020, https://arxiv.org/abs/2006.09882
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from PIL import Image, ImageFilter
from torch import Tensor
from torchvision import transforms as T

from swav_plugin.host.quoting import close_match_hint
from swav_plugin.host.registry import COLLATES, TRANSFORMS
from swav_plugin.swav.gpu_multicrop import GPUMultiCrop
from swav_plugin.zoo import batch_augment as A

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_CROPS = (
    {"size": 224, "count": 2, "scale": (0.14, 1.0)},
    {"size": 96, "count": 6, "scale": (0.05, 0.14)},
)
_GROUP_KEYS = ("size", "count", "scale")
_INTERPOLATIONS = {"bilinear": T.InterpolationMode.BILINEAR,
                   "bicubic": T.InterpolationMode.BICUBIC}


class PILGaussianBlur:
    """PIL's ``GaussianBlur`` with a radius (standard deviation) drawn uniformly from
    ``sigma``: the official code's ``PILRandomGaussianBlur`` without its own coin (wrap it
    in ``RandomApply``), drawing from torch's generator so that workers' seeds govern it."""

    def __init__(self, sigma: Sequence[float]) -> None:
        self.low, self.high = float(sigma[0]), float(sigma[1])

    def __call__(self, image: Image.Image) -> Image.Image:
        radius = self.low + (self.high - self.low) * torch.rand(()).item()
        return image.filter(ImageFilter.GaussianBlur(radius=radius))


@TRANSFORMS.register("multicrop")
class MultiCropTransform:
    """``2 × global + V × local`` crops of one PIL image, as a list of ``uint8`` tensors.

    The crops leave the DataLoader workers as ``uint8``, a quarter of the bytes of float
    pixels through shared memory, the pin thread and the copy to the device; the DataModule
    normalises the batch on the training device with :meth:`normalize_on_device`.

    Args:
        crops: Crop groups in order, each ``{size, count, scale}`` plus, optionally, any of
            the augmentation arguments below to override them for that group.
        hflip_prob: Probability of a horizontal flip.
        color_jitter_prob: Probability of applying colour jitter.
        brightness, contrast, saturation, hue: Colour jitter strengths (applied in random
            order, as torchvision does).
        grayscale_prob: Probability of converting to grayscale.
        blur_prob: Probability of a Gaussian blur: PIL's ``GaussianBlur``, as the official
            code, solo-learn and lightly blur.
        blur_sigma: Range of the blur's standard deviation (PIL's radius) in pixels.
        solarize_prob: Probability of solarisation (threshold 128).
        rotation: Largest random rotation in degrees, after the crop (0: none). With
            ``translate``, for images without a meaningful mirror image, such as digits.
        translate: Largest random shift after the crop, as a fraction of the crop's side
            (0: none). Uncovered pixels are black. Both as torchvision's ``RandomAffine``.
        mean, std: Normalisation per channel, applied by :meth:`normalize_on_device`.
        interpolation: Resampling of the random resized crop: ``bilinear`` (torchvision's
            default and the official code's) or ``bicubic`` (solo-learn's); ``bicubic`` is
            ``data.augment: cpu`` only.
        load_size: With ``data.augment: gpu`` on data sets not held in memory (image folders):
            the largest shorter side of an image its crops are cut from; larger images are
            brought down to it (aspect kept) once decoded, smaller ones are used as they are.
            It bounds the memory and time per batch on the device. Default: the largest crop
            × 8/7 (256 for 224-pixel crops).
    """

    def __init__(
        self,
        crops: Sequence[Mapping[str, Any]] = IMAGENET_CROPS,
        hflip_prob: float = 0.5,
        color_jitter_prob: float = 0.8,
        brightness: float = 0.8,
        contrast: float = 0.8,
        saturation: float = 0.8,
        hue: float = 0.2,
        grayscale_prob: float = 0.2,
        blur_prob: float = 0.5,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        solarize_prob: float = 0.0,
        rotation: float = 0.0,
        translate: float = 0.0,
        interpolation: str = "bilinear",
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        load_size: int | None = None,
    ) -> None:
        defaults = {
            "hflip_prob": hflip_prob,
            "color_jitter_prob": color_jitter_prob,
            "brightness": brightness,
            "contrast": contrast,
            "saturation": saturation,
            "hue": hue,
            "grayscale_prob": grayscale_prob,
            "blur_prob": blur_prob,
            "blur_sigma": blur_sigma,
            "solarize_prob": solarize_prob,
            "rotation": rotation,
            "translate": translate,
            "interpolation": interpolation,
        }
        if not crops:
            raise ValueError("crops must list at least one crop group")
        self.groups = [self._group(i, dict(g), defaults) for i, g in enumerate(crops)]
        self.to_tensor = T.PILToTensor()
        self.pipelines = [self._pipeline(g) for g in self.groups]
        self.mean, self.std = tuple(mean), tuple(std)
        largest = max(g["size"] for g in self.groups)
        self.load_size = load_size if load_size is not None else round(largest * 8 / 7)

    @staticmethod
    def _group(index: int, group: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
        valid = (*_GROUP_KEYS, *defaults)
        for key in group:
            if key not in valid:
                hint = close_match_hint(key, valid)
                raise ValueError(
                    f"crops[{index}]: unknown key '{key}'{hint} valid keys: {', '.join(valid)}"
                )
        missing = [k for k in _GROUP_KEYS if k not in group]
        if missing:
            raise ValueError(f"crops[{index}] lacks {', '.join(missing)}")
        for key in ("size", "count"):
            value = group[key]
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"crops[{index}]: {key} must be a whole number, got {value!r}")
        scale = group["scale"]
        if not isinstance(scale, (list, tuple)) or len(scale) != 2:
            raise ValueError(f"crops[{index}]: scale must be a list [min, max], got {scale!r}")
        size, count, (low, high) = group["size"], group["count"], scale
        if size < 1 or count < 1:
            raise ValueError(f"crops[{index}]: size and count must be positive, got {group}")
        if not 0 < low <= high <= 1:
            raise ValueError(f"crops[{index}]: scale must satisfy 0 < min <= max <= 1, got {group}")
        for key in ("hflip_prob", "color_jitter_prob", "grayscale_prob", "blur_prob"):
            value = group.get(key, defaults[key])
            if not 0 <= value <= 1:
                raise ValueError(f"crops[{index}]: {key} must be in [0, 1], got {value}")
        if not 0 <= group.get("rotation", defaults["rotation"]) <= 180:
            raise ValueError(f"crops[{index}]: rotation must be in [0, 180] degrees")
        if not 0 <= group.get("translate", defaults["translate"]) < 1:
            raise ValueError(f"crops[{index}]: translate must be in [0, 1), a fraction of the side")
        if group.get("interpolation", defaults["interpolation"]) not in _INTERPOLATIONS:
            raise ValueError(f"crops[{index}]: interpolation must be one of "
                             f"{', '.join(_INTERPOLATIONS)}")
        return {**defaults, **group}

    @staticmethod
    def _pipeline(g: dict[str, Any]) -> T.Compose:
        jitter = T.ColorJitter(g["brightness"], g["contrast"], g["saturation"], g["hue"])
        steps = [
            T.RandomResizedCrop(g["size"], scale=tuple(g["scale"]),
                                interpolation=_INTERPOLATIONS[g["interpolation"]]),
            T.RandomHorizontalFlip(g["hflip_prob"]),
        ]
        if g["rotation"] > 0 or g["translate"] > 0:
            shift = g["translate"]
            steps.append(T.RandomAffine(g["rotation"], translate=(shift, shift) if shift else None,
                                        interpolation=T.InterpolationMode.BILINEAR))
        steps += [
            T.RandomApply([jitter], p=g["color_jitter_prob"]),
            T.RandomGrayscale(g["grayscale_prob"]),
        ]
        if g["blur_prob"] > 0:
            steps.append(T.RandomApply([PILGaussianBlur(g["blur_sigma"])], p=g["blur_prob"]))
        if g["solarize_prob"] > 0:
            steps.append(T.RandomSolarize(128, p=g["solarize_prob"]))
        return T.Compose(steps)

    @property
    def crop_sizes(self) -> list[int]:
        """The size of every crop, in output order."""
        return [g["size"] for g in self.groups for _ in range(g["count"])]

    def batch_augmentation(self) -> GPUMultiCrop:
        """The same augmentation for whole ``uint8`` batches on the training device."""
        return GPUMultiCrop(self.groups, self.mean, self.std, self.load_size)

    def normalize_on_device(self, crops: Tensor) -> Tensor:
        """A batch of this transform's ``uint8`` crops (N, 3, H, W), normalised where it is
        (the training device): ``(x / 255 - mean) / std``, as ``ToTensor`` then ``Normalize``
        compute it per image."""
        return A.normalize(crops.float().div_(255), self.mean, self.std)

    def __call__(self, image: Image.Image) -> list[Tensor]:
        image = image.convert("RGB")
        return [
            self.to_tensor(pipeline(image))
            for pipeline, g in zip(self.pipelines, self.groups, strict=True)
            for _ in range(g["count"])
        ]


@COLLATES.register("multicrop_collate")
class MultiCropCollate:
    """Batch ``[(crops, label), ...]`` into ``(groups, labels)``.

    ``groups`` holds one tensor per run of consecutive equal-sized crops, shaped
    ``(crops_in_run × B, C, H, W)`` and ordered crop-major (all images' crop 0, then crop 1,
    ...), so that concatenating the backbone outputs of the groups gives every crop's
    features in crop order.
    """

    def __call__(
        self, samples: Sequence[tuple[Sequence[Tensor], int]]
    ) -> tuple[list[Tensor], Tensor]:
        num_crops = len(samples[0][0])
        groups: list[Tensor] = []
        start = 0
        while start < num_crops:
            shape = samples[0][0][start].shape
            end = start + 1
            while end < num_crops and samples[0][0][end].shape == shape:
                end += 1
            groups.append(torch.stack([s[0][c] for c in range(start, end) for s in samples]))
            start = end
        labels = torch.tensor([int(s[1]) for s in samples], dtype=torch.long)
        return groups, labels
