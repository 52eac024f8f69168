"""Batched image augmentations applied on the batch's device.

Each op transforms a whole ``(N, 3, H, W)`` float batch in ``[0, 1]``, each sample with its
own parameters (drawn by :mod:`swav_plugin.zoo.batch_draws`), in as few operations (kernel
launches) as possible, and without reading a value back to the host: no ``.item()``, boolean
masks or Python branches on tensor values. A per-sample choice between two results is a
``lerp`` by a 0/1 weight, which returns either input exactly.

The geometry of the batch lives here too: the sizes images are brought to
(:func:`downscaled_size`, :func:`resize_images`), the canvas that holds images of different
sizes (:func:`canvas`) and the ``roi_align`` rows its crops are cut by (:func:`crop_rois`,
:func:`crop_resize`), since they fix the layout these ops read and draw nothing at random.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import roi_align

# ITU-R 601-2 luma weights, exactly as torchvision's rgb_to_grayscale
LUMA = (0.2989, 0.587, 0.114)

#: Blend passes of :func:`color_jitter`: three before the hue rotation, three after it.
BLEND_PASSES = 6
#: Rows :func:`color_jitter` takes (:meth:`~swav_plugin.zoo.batch_draws.JitterPasses.rows`):
#: (f, a, b) of each blend pass, then the hue's weight and six times its shift.
JITTER_ROWS = 3 * BLEND_PASSES + 2


@functools.cache
def channel_constant(
    values: tuple[float, ...], device: torch.device, dtype: torch.dtype
) -> Tensor:
    """``values`` as a (1, C, 1, 1) tensor on ``device``, made once: a constant built on the
    host at every call would be a blocking host-to-device copy."""
    return torch.tensor(values, dtype=dtype, device=device).view(1, -1, 1, 1)


def downscaled_size(height: Tensor, width: Tensor, short: int) -> tuple[Tensor, Tensor]:
    """The (height, width) of images whose shorter side is brought down to ``short``, aspect
    kept (each side ``round(side · short / shorter side)``, halves to even, in float64 so that
    a Python ``int`` gives Python's ``round``); images whose shorter side is at most ``short``
    keep their size."""
    height = torch.as_tensor(height, dtype=torch.float64)
    width = torch.as_tensor(width, dtype=torch.float64)
    scale = (short / torch.minimum(height, width)).clamp_(max=1.0)
    shorter = torch.minimum(height, width).clamp(max=short)
    return (torch.round(height * scale).maximum(shorter).long(),
            torch.round(width * scale).maximum(shorter).long())


def resize_images(images: Sequence[Tensor], heights: Tensor, widths: Tensor) -> list[Tensor]:
    """Each ``uint8`` (3, h, w) image resized to its ``heights[i] × widths[i]`` (bilinear,
    antialiased as PIL resizes; rounded back to ``uint8``), on the images' device.

    Images of one size going to one size (most of a photo collection's) are resized by one
    call, so a batch costs a call per distinct pair of sizes rather than one per image.
    """
    targets = list(zip(heights.tolist(), widths.tolist(), strict=True))
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (image, target) in enumerate(zip(images, targets, strict=True)):
        groups.setdefault((*image.shape[1:], *target), []).append(i)
    out: list[Tensor] = list(images)
    for (h, w, target_h, target_w), members in groups.items():
        if (h, w) == (target_h, target_w):
            continue
        batch = torch.stack([images[i] for i in members])
        # the CPU has a vectorised kernel for uint8, much faster than its float one; other
        # devices resample floats
        pixels = batch if batch.device.type == "cpu" else batch.float()
        resized = F.interpolate(pixels, size=(target_h, target_w), mode="bilinear",
                                align_corners=False, antialias=True)
        if resized.dtype != torch.uint8:
            resized = resized.round_().clamp_(0, 255).to(torch.uint8)
        for i, image in zip(members, resized, strict=True):
            out[i] = image
    return out


def canvas(images: Sequence[Tensor]) -> Tensor:
    """Images of different sizes (each (3, h, w)) in one (B, 3, H + 1, W + 1) batch, where H
    and W are the largest height and width: each image at the top left, its last column and
    row repeated once beyond it, zeros elsewhere.

    :func:`crop_resize` cuts every crop of the batch from it. At a box's right or bottom
    edge, ``roi_align``'s bilinear samples read the pixel one beyond; for a box reaching its
    image's edge that pixel is the repeated edge, as ``roi_align`` would clamp to on the
    image alone, and not the next image's padding.
    """
    height = max(image.shape[1] for image in images)
    width = max(image.shape[2] for image in images)
    out = images[0].new_zeros((len(images), images[0].shape[0], height + 1, width + 1))
    for slot, image in zip(out, images, strict=True):
        h, w = image.shape[1:]
        slot[:, :h, :w] = image
        slot[:, :h, w] = image[:, :, -1]
        slot[:, h, :w + 1] = slot[:, h - 1, :w + 1]
    return out


def crop_rois(boxes: Tensor, image_index: Tensor) -> Tensor:
    """The (n, 5) ``roi_align`` rows ``(image, x1, y1, x2, y2)`` of boxes cut from images."""
    return torch.cat((image_index.to(boxes.dtype).unsqueeze(1), boxes), dim=1)


def crop_resize(images: Tensor, rois: Tensor, size: int) -> Tensor:
    """Cut each ``(image, x1, y1, x2, y2)`` row of ``rois`` and resize it to ``(size, size)``.

    One ``roi_align`` call serves every crop: with ``aligned=True`` pixel ``k`` is the unit
    interval ``[k, k + 1)``, matching the boxes' pixel-edge coordinates, and the adaptive
    sampling ratio averages ``ceil(box_size / size)`` bilinear samples per output pixel and
    axis, which antialiases downscaling. Upscaling reduces to bilinear interpolation.
    Unlike torchvision's crop-then-resize, samples within half a pixel of a box edge blend in
    the image just outside the box rather than replicating the edge.
    """
    return roi_align(images, rois.to(images.dtype), output_size=size, spatial_scale=1.0,
                     sampling_ratio=-1, aligned=True)


def select(x: Tensor, other: Tensor, weight: Tensor) -> Tensor:
    """``other`` where ``weight`` is 1 and ``x`` where it is 0, exactly (finite values)."""
    return torch.lerp(x, other, weight)  # other may broadcast (a grey channel)


def horizontal_flip(x: Tensor, flip: Tensor) -> Tensor:
    """Mirror left-right the samples whose ``flip`` (N, 1, 1, 1) is 1."""
    return select(x, x.flip(-1), flip)


def affine(x: Tensor, angle: Tensor, shift_x: Tensor, shift_y: Tensor) -> Tensor:
    """Rotate each sample about its centre by ``angle`` degrees (counter-clockwise) and shift
    it by ``(shift_x, shift_y)`` pixels (right, down), all ``(N,)`` or broadcastable to it, as
    torchvision's ``affine`` does on PIL images (scale 1, no shear; the CPU path's).

    An output pixel at ``p`` (pixel units from the centre) reads the input at
    ``R(-angle) (p - shift)``: one ``grid_sample`` for the batch, whose coordinates scale each
    axis by half its side (``align_corners=False``). PIL's bilinear filter fills (black) the
    pixels that read from outside the image and replicates the edge for the others, which is
    ``padding_mode="border"`` masked outside ``[-1, 1)``; ``padding_mode="zeros"`` (the tensor
    path of torchvision) would instead fade every border pixel towards black.
    """
    n, _, height, width = x.shape
    rad = torch.deg2rad(angle.reshape(-1)).to(x.dtype).expand(n)
    cos, sin = torch.cos(rad), torch.sin(rad)
    tx, ty = (s.reshape(-1).to(x.dtype).expand(n) for s in (shift_x, shift_y))
    theta = torch.stack((
        torch.stack((cos, sin * height / width, -(cos * tx + sin * ty) * 2 / width), dim=1),
        torch.stack((-sin * width / height, cos, (sin * tx - cos * ty) * 2 / height), dim=1),
    ), dim=1)
    grid = F.affine_grid(theta, [n, 1, height, width], align_corners=False)
    inside = ((grid >= -1) & (grid < 1)).all(dim=-1).unsqueeze(1)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out * inside


def rgb_to_grayscale(x: Tensor) -> Tensor:
    """ITU-R 601-2 luma of an RGB batch, shape ``(N, 1, H, W)``."""
    return (x * channel_constant(LUMA, x.device, x.dtype)).sum(dim=1, keepdim=True)


def grayscale(x: Tensor, chosen: Tensor) -> Tensor:
    """Replace by their luma on all three channels the samples whose ``chosen`` is 1."""
    return select(x, rgb_to_grayscale(x), chosen)


def blend(x: Tensor, f: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``clamp(f·x + a·mean(grey(x)) + b·grey(x), 0, 1)`` with per-sample (N, 1, 1, 1) ``f``,
    ``a``, ``b``: torchvision's brightness ``(f, 0, 0)``, contrast ``(f, 1 - f, 0)`` and
    saturation ``(f, 0, 1 - f)`` blends, and the identity ``(1, 0, 0)``, exactly."""
    grey = rgb_to_grayscale(x)
    out = x * f
    out.addcmul_(grey.mean(dim=(2, 3), keepdim=True), a)
    out.addcmul_(grey, b)
    return out.clamp_(0.0, 1.0)


def rotate_hue(x: Tensor, weight: Tensor, shift6: Tensor) -> Tensor:
    """Rotate the HSV hue of the samples whose ``weight`` is 1 by ``shift6 / 6`` turns
    (torchvision's ``adjust_hue``); the others are returned unchanged.

    Hue, saturation and value are never formed: in the hexcone model each channel of the
    rotated pixel is ``max − (max − min) · clamp(min(k, 4 − k), 0, 1)`` with
    ``k = (n + 6h) mod 6`` and ``n`` = 5, 3, 1 for R, G, B, and the pixel's ``6h`` is
    ``2m + (x[m+1] − x[m+2]) / (max − min)`` for its largest channel ``m`` (ties resolved to
    red, then green, as torchvision does).
    """
    low, high = x.aminmax(dim=1, keepdim=True)
    chroma = high - low
    # grey pixels (chroma 0): every difference is 0 as well, so their hue is 0, not NaN
    sextant = (x.roll(-1, dims=1) - x.roll(-2, dims=1)) / chroma.clamp_min(
        torch.finfo(x.dtype).tiny)
    sextant = (sextant + channel_constant((0.0, 2.0, 4.0), x.device, x.dtype)).gather(
        1, x.argmax(dim=1, keepdim=True))
    k = torch.remainder(sextant + shift6 + channel_constant((5.0, 3.0, 1.0), x.device, x.dtype),
                        6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return select(x, torch.addcmul(high, chroma, ramp, value=-1.0), weight)


def color_jitter(x: Tensor, rows: Sequence[Tensor]) -> Tensor:
    """Per-sample colour jitter from the :data:`JITTER_ROWS` rows of
    :meth:`~swav_plugin.zoo.batch_draws.JitterPasses.rows`, each shaped (N, 1, 1, 1): three
    blend passes, the hue rotation, three blend passes."""
    blends = [rows[3 * k: 3 * k + 3] for k in range(BLEND_PASSES)]
    for f, a, b in blends[:3]:
        x = blend(x, f, a, b)
    x = rotate_hue(x, *rows[3 * BLEND_PASSES:])
    for f, a, b in blends[3:]:
        x = blend(x, f, a, b)
    return x


def gaussian_blur(x: Tensor, kernels: Tensor, chosen: Tensor) -> Tensor:
    """Blur the samples whose ``chosen`` is 1 with their own separable kernel (N, k) (from
    :func:`~swav_plugin.zoo.batch_draws.blur_kernels`), edge pixels repeated beyond the
    border as PIL's ``GaussianBlur`` does.

    Folding the batch into channels lets each image use its own kernel in one grouped
    convolution per axis; blurring rows then columns equals the outer-product kernel, since
    the padding of each axis commutes with filtering along the other.
    """
    n, c, height, width = x.shape
    size = kernels.shape[1]
    taps = kernels.to(x.dtype).repeat_interleave(c, dim=0)  # (N·C, k)
    pad = size // 2
    out = x.reshape(1, n * c, height, width)
    out = F.conv2d(F.pad(out, (pad, pad, 0, 0), mode="replicate"),
                   taps.view(n * c, 1, 1, size), groups=n * c)
    out = F.conv2d(F.pad(out, (0, 0, pad, pad), mode="replicate"),
                   taps.view(n * c, 1, size, 1), groups=n * c)
    return select(x, out.view(n, c, height, width), chosen)


def solarize(x: Tensor, threshold: float, chosen: Tensor) -> Tensor:
    """Invert the pixels at or above ``threshold`` of the samples whose ``chosen`` is 1."""
    return select(x, torch.where(x >= threshold, 1.0 - x, x), chosen)


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Standardise each channel: ``(x - mean[c]) / std[c]``, as one multiply-add."""
    scale = channel_constant(tuple(1 / s for s in std), x.device, x.dtype)
    shift = channel_constant(tuple(-m / s for m, s in zip(mean, std, strict=True)), x.device,
                             x.dtype)
    return torch.addcmul(shift, x, scale)
