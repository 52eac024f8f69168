"""Batched image augmentations with per-sample random parameters.

Each op transforms a whole ``(N, 3, H, W)`` float batch in ``[0, 1]`` at once, on whatever
device the batch lives on, while drawing an independent random parameter for every sample,
so that the result is distributed like applying the matching ``torchvision.transforms`` op to
each image separately. Moving augmentation from per-image CPU workers to the GPU removes the
data-loading bottleneck of multi-crop training, but only pays off if nothing waits on the
device: no op here calls ``.item()``, indexes with boolean masks or branches in python on
tensor values. Per-sample choices are made with ``torch.where`` and arithmetic instead, and
every draw takes an optional ``generator`` so that a seeded run is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import roi_align

# ITU-R 601-2 luma weights, exactly as torchvision's rgb_to_grayscale
_LUMA = (0.2989, 0.587, 0.114)

BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)  # torchvision's ColorJitter op indices


def _uniform(
    shape: tuple[int, ...],
    low: float,
    high: float,
    generator: torch.Generator | None,
    device: torch.device | str | None,
) -> Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator, device=device)


def _coin(
    n: int, p: float, generator: torch.Generator | None, device: torch.device | str | None
) -> Tensor:
    """Boolean (n,) mask, each entry True with probability ``p``."""
    return torch.rand(n, generator=generator, device=device) < p


def _per_sample(values: Tensor, x: Tensor) -> Tensor:
    """(N,) values as (N, 1, 1, 1) in ``x``'s dtype, to broadcast over images."""
    return values.to(dtype=x.dtype).view(-1, 1, 1, 1)


def _default_device(
    device: torch.device | str | None, generator: torch.Generator | None
) -> torch.device | str:
    if device is not None:
        return device
    return generator.device if generator is not None else "cpu"


def random_resized_crop_boxes(
    n: int,
    height: int,
    width: int,
    scale: Sequence[float],
    ratio: Sequence[float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Sample ``n`` crops as torchvision's ``RandomResizedCrop.get_params`` does.

    Returns float boxes ``(n, 4)`` as ``(x1, y1, x2, y2)`` in pixel-edge coordinates: a crop
    covers columns ``[x1, x2)`` and rows ``[y1, y2)``. ``device`` defaults to the generator's.
    """
    device = _default_device(device, generator)
    area = height * width
    attempts = 10  # torchvision's rejection-sampling budget
    # All attempts are drawn up front; taking the first valid one keeps the distribution of
    # torchvision's sequential loop, which merely stops drawing once it succeeds.
    target_area = area * _uniform((n, attempts), scale[0], scale[1], generator, device)
    log_ratio = _uniform((n, attempts), math.log(ratio[0]), math.log(ratio[1]), generator, device)
    aspect = torch.exp(log_ratio)
    # torch.round, like python's round, rounds halves to even
    w = torch.round(torch.sqrt(target_area * aspect))
    h = torch.round(torch.sqrt(target_area / aspect))
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = valid.to(torch.uint8).argmax(dim=1, keepdim=True)  # argmax returns the first max
    w = w.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)

    # torchvision's fallback depends only on python numbers, so it is decided here on the host
    in_ratio = width / height
    if in_ratio < min(ratio):
        fallback_w, fallback_h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fallback_w, fallback_h = int(round(height * max(ratio))), height
    else:
        fallback_w, fallback_h = width, height
    any_valid = valid.any(dim=1)
    w = torch.where(any_valid, w, float(fallback_w))
    h = torch.where(any_valid, h, float(fallback_h))

    # floor(U * k) is uniform on {0, ..., k-1}, i.e. torch.randint(0, k) with a per-sample k;
    # the clamp guards against U * k rounding up to k in float32
    u = torch.rand((2, n), generator=generator, device=device)
    top = torch.minimum(torch.floor(u[0] * (height - h + 1)), height - h)
    left = torch.minimum(torch.floor(u[1] * (width - w + 1)), width - w)
    top = torch.where(any_valid, top, torch.div(height - h, 2, rounding_mode="floor"))
    left = torch.where(any_valid, left, torch.div(width - w, 2, rounding_mode="floor"))
    return torch.stack((left, top, left + w, top + h), dim=1)


def crop_resize(images: Tensor, boxes: Tensor, batch_index: Tensor, size: int) -> Tensor:
    """Crop ``boxes[i]`` from ``images[batch_index[i]]`` and resize each to ``(size, size)``.

    One ``roi_align`` call serves every crop: with ``aligned=True`` pixel ``k`` is the unit
    interval ``[k, k + 1)``, matching the boxes' pixel-edge coordinates, and the adaptive
    sampling ratio averages ``ceil(box_size / size)`` bilinear samples per output pixel and
    axis, which antialiases downscaling. Upscaling reduces to bilinear interpolation.
    Unlike torchvision's crop-then-resize, samples within half a pixel of a box edge blend in
    the image just outside the box rather than replicating the edge.
    """
    rois = torch.cat((batch_index.to(boxes.dtype).unsqueeze(1), boxes), dim=1)
    return roi_align(
        images, rois.to(images.dtype), output_size=size, spatial_scale=1.0, sampling_ratio=-1,
        aligned=True,
    )


def horizontal_flip(x: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """Mirror each sample left-right with probability ``p``."""
    if p <= 0:
        return x
    flip = _coin(x.shape[0], p, generator, x.device).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(-1), x)


def rgb_to_grayscale(x: Tensor) -> Tensor:
    """ITU-R 601-2 luma of an RGB batch, shape ``(N, 1, H, W)``."""
    r, g, b = x.unbind(dim=-3)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(-3)


def random_grayscale(x: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """Replace each sample by its luma on all three channels with probability ``p``."""
    if p <= 0:
        return x
    gray = _coin(x.shape[0], p, generator, x.device).view(-1, 1, 1, 1)
    return torch.where(gray, rgb_to_grayscale(x).expand_as(x), x)


def _blend(x: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    return (factor * x + (1.0 - factor) * other).clamp(0.0, 1.0)


def adjust_brightness(x: Tensor, factor: Tensor) -> Tensor:
    """Scale each sample by its ``factor`` (shape ``(N,)``), clamped to ``[0, 1]``."""
    return _blend(x, torch.zeros_like(x), _per_sample(factor, x))


def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    """Blend each sample with the mean of its grayscale image by ``factor`` (``(N,)``)."""
    mean = rgb_to_grayscale(x).mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(x, mean, _per_sample(factor, x))


def adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    """Blend each sample with its grayscale image by ``factor`` (``(N,)``)."""
    return _blend(x, rgb_to_grayscale(x), _per_sample(factor, x))


def _rgb_to_hsv(x: Tensor) -> Tensor:
    r, g, b = x.unbind(dim=-3)
    maxc = x.amax(dim=-3)
    minc = x.amin(dim=-3)
    delta = maxc - minc
    grey = delta == 0
    # Substituting 1 for the zero denominators of grey pixels avoids NaNs; their hue and
    # saturation come out 0 anyway, and hue is irrelevant where saturation is 0.
    s = delta / torch.where(grey, torch.ones_like(maxc), maxc)
    safe_delta = torch.where(grey, torch.ones_like(delta), delta)
    # Ties between channels resolve to red, then green, as in torchvision (and PIL).
    h = torch.where(
        maxc == r,
        (g - b) / safe_delta,
        torch.where(maxc == g, 2.0 + (b - r) / safe_delta, 4.0 + (r - g) / safe_delta),
    )
    h = torch.remainder(h / 6.0, 1.0)
    return torch.stack((h, s, maxc), dim=-3)


def _hsv_to_rgb(hsv: Tensor) -> Tensor:
    h, s, v = hsv.split(1, dim=-3)
    # Channel n in (R, G, B) = (5, 3, 1) equals v - v * s * clamp(min(k, 4 - k), 0, 1) with
    # k = (n + 6h) mod 6: the piecewise-linear sector formula without per-sector branches.
    # arange builds n on the device itself, sparing a blocking host-to-device copy.
    n = torch.arange(5.0, 0.0, -2.0, dtype=hsv.dtype, device=hsv.device)
    k = torch.remainder(n.view(3, 1, 1) + 6.0 * h, 6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)
    return (v - v * s * ramp).clamp(0.0, 1.0)


def adjust_hue(x: Tensor, factor: Tensor) -> Tensor:
    """Rotate each sample's HSV hue by its ``factor`` (``(N,)``, in turns, within ±0.5)."""
    hsv = _rgb_to_hsv(x)
    h, s, v = hsv.unbind(dim=-3)
    h = torch.remainder(h + factor.to(dtype=x.dtype).view(-1, 1, 1), 1.0)
    return _hsv_to_rgb(torch.stack((h, s, v), dim=-3))


@dataclass(frozen=True)
class ColorJitterParams:
    """Per-sample draws of one ``color_jitter`` call.

    ``apply`` (N,) bool marks the jittered samples; each factor is an ``(N,)`` tensor, or
    ``None`` when that op is disabled; ``order[i, k]`` is the op (``BRIGHTNESS``,
    ``CONTRAST``, ``SATURATION``, ``HUE``) that sample ``i`` applies ``k``-th.
    """

    apply: Tensor
    order: Tensor
    brightness: Tensor | None
    contrast: Tensor | None
    saturation: Tensor | None
    hue: Tensor | None


def sample_color_jitter_params(
    n: int,
    brightness: float,
    contrast: float,
    saturation: float,
    hue: float,
    p: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> ColorJitterParams:
    """Draw ``RandomApply([ColorJitter(brightness, contrast, saturation, hue)], p)`` params.

    Factor ranges are torchvision's: ``U[max(0, 1 - s), 1 + s]`` for the three blends and
    ``U[-hue, hue]`` for the hue shift; a strength of 0 disables its op.
    """
    if not 0 <= hue <= 0.5:
        raise ValueError(f"hue must be in [0, 0.5], got {hue}")
    for name, value in (("brightness", brightness), ("contrast", contrast),
                        ("saturation", saturation)):
        if value < 0:
            raise ValueError(f"{name} must be non-negative, got {value}")
    device = _default_device(device, generator)
    apply = _coin(n, p, generator, device)
    # argsort of i.i.d. uniforms is a uniformly random permutation, independently per row
    order = torch.rand((n, 4), generator=generator, device=device).argsort(dim=1)

    def blend_factor(strength: float) -> Tensor | None:
        if strength == 0:
            return None
        return _uniform((n,), max(0.0, 1.0 - strength), 1.0 + strength, generator, device)

    return ColorJitterParams(
        apply=apply,
        order=order,
        brightness=blend_factor(brightness),
        contrast=blend_factor(contrast),
        saturation=blend_factor(saturation),
        hue=_uniform((n,), -hue, hue, generator, device) if hue > 0 else None,
    )


def apply_color_jitter(x: Tensor, params: ColorJitterParams) -> Tensor:
    """Apply sampled colour jitter, each sample in its own op order."""
    ops = (
        (BRIGHTNESS, adjust_brightness, params.brightness),
        (CONTRAST, adjust_contrast, params.contrast),
        (SATURATION, adjust_saturation, params.saturation),
        (HUE, adjust_hue, params.hue),
    )
    ops = tuple((index, op, factor) for index, op, factor in ops if factor is not None)
    # At every position each enabled op runs on the whole batch, and is kept only for the
    # samples whose permutation puts it there: 4x the arithmetic, but no data-dependent
    # indexing. torch.where (rather than identity factors) keeps the other samples bit-exact,
    # which a hue round trip through HSV would not.
    for position in range(4):
        for index, op, factor in ops:
            here = params.apply & (params.order[:, position] == index)
            x = torch.where(here.view(-1, 1, 1, 1), op(x, factor), x)
    return x


def color_jitter(
    x: Tensor,
    brightness: float,
    contrast: float,
    saturation: float,
    hue: float,
    p: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Per-sample ``RandomApply([ColorJitter(brightness, contrast, saturation, hue)], p)``."""
    if p <= 0 or brightness == contrast == saturation == hue == 0:
        return x
    params = sample_color_jitter_params(
        x.shape[0], brightness, contrast, saturation, hue, p, generator, x.device
    )
    return apply_color_jitter(x, params)


def gaussian_blur_with_sigma(x: Tensor, kernel_size: int, sigma: Tensor) -> Tensor:
    """Blur sample ``i`` with an isotropic Gaussian of std ``sigma[i]`` (shape ``(N,)``).

    Matches torchvision's ``gaussian_blur`` (odd ``kernel_size``, reflect padding), run as a
    separable pair of grouped convolutions over the whole batch.
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
    n, c, height, width = x.shape
    half = (kernel_size - 1) / 2
    offsets = torch.linspace(-half, half, kernel_size, dtype=x.dtype, device=x.device)
    pdf = torch.exp(-0.5 * (offsets / sigma.to(x.dtype).unsqueeze(1)) ** 2)
    kernel = (pdf / pdf.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (N*C, k)
    # Folding the batch into channels lets each image use its own kernel in one grouped conv.
    # Blurring rows then columns equals torchvision's 2D outer-product kernel, reflect padding
    # included, since the reflection of each axis commutes with filtering along the other.
    pad = kernel_size // 2
    out = x.reshape(1, n * c, height, width)
    out = F.conv2d(F.pad(out, (pad, pad, 0, 0), mode="reflect"),
                   kernel.view(n * c, 1, 1, kernel_size), groups=n * c)
    out = F.conv2d(F.pad(out, (0, 0, pad, pad), mode="reflect"),
                   kernel.view(n * c, 1, kernel_size, 1), groups=n * c)
    return out.view(n, c, height, width)


def gaussian_blur(
    x: Tensor,
    kernel_size: int,
    sigma_range: Sequence[float],
    p: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """With probability ``p`` per sample, blur with ``sigma ~ U[sigma_range]``."""
    if p <= 0:
        return x
    blur = _coin(x.shape[0], p, generator, x.device).view(-1, 1, 1, 1)
    sigma = _uniform((x.shape[0],), sigma_range[0], sigma_range[1], generator, x.device)
    return torch.where(blur, gaussian_blur_with_sigma(x, kernel_size, sigma), x)


def solarize(
    x: Tensor, threshold: float, p: float, generator: torch.Generator | None = None
) -> Tensor:
    """With probability ``p`` per sample, invert the pixels at or above ``threshold``."""
    if p <= 0:
        return x
    chosen = _coin(x.shape[0], p, generator, x.device).view(-1, 1, 1, 1)
    return torch.where(chosen & (x >= threshold), 1.0 - x, x)


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Standardise each channel: ``(x - mean[c]) / std[c]``."""
    # Python scalars travel as kernel arguments; a mean tensor built on the host would need a
    # blocking host-to-device copy.
    channels = [(x[:, c] - m) / s for c, (m, s) in enumerate(zip(mean, std, strict=True))]
    return torch.stack(channels, dim=1)
