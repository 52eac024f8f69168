"""Batched image augmentations: per-sample random draws, and their application to a batch.

Two halves, so that each runs where it is cheap:

- the **draws** make every random parameter of a batch's augmentations with a few vectorised
  operations on small tensors (for ``data.augment: gpu``, in the DataLoader workers, on the
  CPU), distributed as the matching ``torchvision.transforms`` op draws them for each image;
- the **applies** transform a whole ``(N, 3, H, W)`` float batch in ``[0, 1]`` on its device,
  each sample with its own drawn parameters, in as few operations (kernel launches) as
  possible, and without reading a value back to the host: no ``.item()``, boolean masks or
  Python branches on tensor values. A per-sample choice between two results is a ``lerp``
  by a 0/1 weight, which returns either input exactly.

Colour jitter applies torchvision's four operations in a random order per sample. Brightness,
contrast and saturation are each one blend ``f·x + a·mean(grey(x)) + b·grey(x)``, clamped;
the hue rotation comes once, between up to three blends before it and three after it, so
the whole jitter is six blend passes and one hue pass over the batch (:func:`jitter_passes`,
:func:`color_jitter`) instead of all four operations at each of the four positions.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import roi_align

# ITU-R 601-2 luma weights, exactly as torchvision's rgb_to_grayscale
LUMA = (0.2989, 0.587, 0.114)

BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)  # torchvision's ColorJitter op indices
#: Blend passes of :func:`color_jitter`: three before the hue rotation, three after it.
BLEND_PASSES = 6
#: Rows of :meth:`JitterPasses.rows`: (f, a, b) of each blend pass, then the hue's weight and
#: six times its shift.
JITTER_ROWS = 3 * BLEND_PASSES + 2


def _default_device(
    device: torch.device | str | None, generator: torch.Generator | None
) -> torch.device | str:
    if device is not None:
        return device
    return generator.device if generator is not None else "cpu"


@functools.cache
def channel_constant(
    values: tuple[float, ...], device: torch.device, dtype: torch.dtype
) -> Tensor:
    """``values`` as a (1, C, 1, 1) tensor on ``device``, made once: a constant built on the
    host at every call would be a blocking host-to-device copy."""
    return torch.tensor(values, dtype=dtype, device=device).view(1, -1, 1, 1)


# --- draws --------------------------------------------------------------------------------


def uniform(
    shape: tuple[int, ...],
    low: float,
    high: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Uniform samples on ``[low, high)``."""
    device = _default_device(device, generator)
    return low + (high - low) * torch.rand(shape, generator=generator, device=device)


def coin(
    n: int,
    p: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """(n,) float weights, each 1 with probability ``p`` and 0 otherwise."""
    device = _default_device(device, generator)
    return (torch.rand(n, generator=generator, device=device) < p).float()


def random_resized_crop_boxes(
    n: int,
    height: int | Tensor,
    width: int | Tensor,
    scale: Sequence[float],
    ratio: Sequence[float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Sample ``n`` crops as torchvision's ``RandomResizedCrop.get_params`` does.

    ``height`` and ``width`` are the image's, or per crop ``(n,)`` tensors, for crops of
    images of different sizes (each box is drawn as ``get_params`` draws it for its own
    image). Returns float boxes ``(n, 4)`` as ``(x1, y1, x2, y2)`` in pixel-edge coordinates:
    a crop covers columns ``[x1, x2)`` and rows ``[y1, y2)``. ``device`` defaults to the
    generator's.
    """
    device = _default_device(device, generator)
    height = torch.as_tensor(height, dtype=torch.float32, device=device).expand(n)
    width = torch.as_tensor(width, dtype=torch.float32, device=device).expand(n)
    area = (height * width).unsqueeze(1)
    attempts = 10  # torchvision's rejection-sampling budget
    # All attempts are drawn up front; taking the first valid one keeps the distribution of
    # torchvision's sequential loop, which merely stops drawing once it succeeds.
    target_area = area * uniform((n, attempts), scale[0], scale[1], generator, device)
    log_ratio = uniform((n, attempts), math.log(ratio[0]), math.log(ratio[1]), generator, device)
    aspect = torch.exp(log_ratio)
    # torch.round, like python's round, rounds halves to even
    w = torch.round(torch.sqrt(target_area * aspect))
    h = torch.round(torch.sqrt(target_area / aspect))
    valid = (w > 0) & (w <= width[:, None]) & (h > 0) & (h <= height[:, None])
    first = valid.to(torch.uint8).argmax(dim=1, keepdim=True)  # argmax returns the first max
    w = w.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)

    # torchvision's fallback: the largest centred box within the ratio range
    in_ratio = width / height
    narrow, wide = in_ratio < min(ratio), in_ratio > max(ratio)
    fallback_w = torch.where(wide, torch.round(height * max(ratio)), width)
    fallback_h = torch.where(narrow, torch.round(width / min(ratio)), height)
    any_valid = valid.any(dim=1)
    w = torch.where(any_valid, w, fallback_w)
    h = torch.where(any_valid, h, fallback_h)

    # floor(U * k) is uniform on {0, ..., k-1}, i.e. torch.randint(0, k) with a per-sample k;
    # the clamp guards against U * k rounding up to k in float32
    u = torch.rand((2, n), generator=generator, device=device)
    top = torch.minimum(torch.floor(u[0] * (height - h + 1)), height - h)
    left = torch.minimum(torch.floor(u[1] * (width - w + 1)), width - w)
    top = torch.where(any_valid, top, torch.div(height - h, 2, rounding_mode="floor"))
    left = torch.where(any_valid, left, torch.div(width - w, 2, rounding_mode="floor"))
    return torch.stack((left, top, left + w, top + h), dim=1)


def crop_rois(boxes: Tensor, image_index: Tensor) -> Tensor:
    """The (n, 5) ``roi_align`` rows ``(image, x1, y1, x2, y2)`` of boxes cut from images."""
    return torch.cat((image_index.to(boxes.dtype).unsqueeze(1), boxes), dim=1)


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


def random_affine_params(
    n: int,
    degrees: float,
    translate: float,
    height: int,
    width: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Sample ``n`` rotations and shifts as torchvision's ``RandomAffine(degrees,
    translate=(translate, translate)).get_params`` draws them for ``height × width`` images.

    Returns (3, n): the angle in degrees, uniform on ``[-degrees, degrees]``, then the
    horizontal and vertical shifts in whole pixels, each ``round(U(-translate·side,
    translate·side))`` (halves to even, as Python's ``round``).
    """
    device = _default_device(device, generator)
    angle = uniform((n,), -degrees, degrees, generator, device)
    u = torch.rand((2, n), generator=generator, device=device)
    sides = torch.tensor((width, height), dtype=u.dtype, device=device).unsqueeze(1)
    shifts = torch.round((2 * u - 1) * translate * sides)
    return torch.cat((angle.unsqueeze(0), shifts))


@dataclass(frozen=True)
class ColorJitterParams:
    """Per-sample draws of one ``RandomApply([ColorJitter(...)], p)``.

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
    apply = coin(n, p, generator, device).bool()
    # argsort of i.i.d. uniforms is a uniformly random permutation, independently per row
    order = torch.rand((n, 4), generator=generator, device=device).argsort(dim=1)

    def blend_factor(strength: float) -> Tensor | None:
        if strength == 0:
            return None
        return uniform((n,), max(0.0, 1.0 - strength), 1.0 + strength, generator, device)

    return ColorJitterParams(
        apply=apply,
        order=order,
        brightness=blend_factor(brightness),
        contrast=blend_factor(contrast),
        saturation=blend_factor(saturation),
        hue=uniform((n,), -hue, hue, generator, device) if hue > 0 else None,
    )


@dataclass(frozen=True)
class JitterPasses:
    """Colour jitter rewritten as passes over the batch (see :func:`color_jitter`).

    ``blends`` (6, 3, N): per pass the blend ``(f, a, b)`` of every sample, identity
    ``(1, 0, 0)`` where that sample has nothing to do in the pass; passes 0–2 come before the
    hue rotation, 3–5 after it. ``hue`` (2, N): the rotation's weight (1: rotate) and six
    times its shift.
    """

    blends: Tensor
    hue: Tensor

    def rows(self) -> Tensor:
        """The :data:`JITTER_ROWS` rows (N each) that :func:`color_jitter` takes."""
        return torch.cat((self.blends.flatten(0, 1), self.hue))


def jitter_passes(params: ColorJitterParams) -> JitterPasses:
    """Each sample's blends in its own order, split around its hue rotation.

    A sample whose hue comes at position ``j`` of its order runs its first ``j`` operations in
    the passes before the rotation and the others in the passes after it; the blend passes it
    does not need, and every pass of a sample that is not jittered, are the identity.
    """
    n, device = params.apply.shape[0], params.apply.device
    identity = torch.tensor([1.0, 0.0, 0.0], device=device)
    table = identity.repeat(n, 4, 1)  # (N, op, (f, a, b))
    if params.brightness is not None:
        table[:, BRIGHTNESS, 0] = params.brightness
    if params.contrast is not None:
        table[:, CONTRAST, 0] = params.contrast
        table[:, CONTRAST, 1] = 1 - params.contrast
    if params.saturation is not None:
        table[:, SATURATION, 0] = params.saturation
        table[:, SATURATION, 2] = 1 - params.saturation
    table = torch.where(params.apply.view(-1, 1, 1), table, identity)
    in_order = table.gather(1, params.order.unsqueeze(2).expand(n, 4, 3))  # (N, position, 3)
    hue_at = (params.order == HUE).to(torch.uint8).argmax(dim=1, keepdim=True)  # (N, 1)
    slots = torch.arange(3, device=device).unsqueeze(0)  # (1, 3)
    before = torch.where((slots < hue_at).unsqueeze(2), in_order[:, :3], identity)
    after_at = hue_at + 1 + slots
    after = in_order.gather(1, after_at.clamp(max=3).unsqueeze(2).expand(n, 3, 3))
    after = torch.where((after_at <= 3).unsqueeze(2), after, identity)
    blends = torch.cat((before, after), dim=1).permute(1, 2, 0)  # (6, 3, N)
    if params.hue is None:
        hue = torch.zeros(2, n, device=device)
    else:
        hue = torch.stack((params.apply.float(), 6 * params.hue))
    return JitterPasses(blends.contiguous(), hue)


def blur_kernels(kernel_size: int, sigma: Tensor) -> Tensor:
    """Normalised 1-D Gaussian kernels (N, ``kernel_size``) of std ``sigma`` (N,), as
    torchvision's ``gaussian_blur`` builds them (odd ``kernel_size``)."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
    half = (kernel_size - 1) / 2
    offsets = torch.linspace(-half, half, kernel_size, dtype=sigma.dtype, device=sigma.device)
    pdf = torch.exp(-0.5 * (offsets / sigma.unsqueeze(1)) ** 2)
    return pdf / pdf.sum(dim=1, keepdim=True)


# --- applies ------------------------------------------------------------------------------


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
    """Per-sample colour jitter from the :data:`JITTER_ROWS` rows of :meth:`JitterPasses.rows`,
    each shaped (N, 1, 1, 1): three blend passes, the hue rotation, three blend passes."""
    blends = [rows[3 * k: 3 * k + 3] for k in range(BLEND_PASSES)]
    for f, a, b in blends[:3]:
        x = blend(x, f, a, b)
    x = rotate_hue(x, *rows[3 * BLEND_PASSES:])
    for f, a, b in blends[3:]:
        x = blend(x, f, a, b)
    return x


def gaussian_blur(x: Tensor, kernels: Tensor, chosen: Tensor) -> Tensor:
    """Blur the samples whose ``chosen`` is 1 with their own separable kernel (N, k) (from
    :func:`blur_kernels`), edge pixels repeated beyond the border as PIL's ``GaussianBlur``
    does.

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
