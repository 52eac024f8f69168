"""Per-sample random draws of batched image augmentations.

Every random parameter of a batch's augmentations is made here with a few vectorised
operations on small tensors (for ``data.augment: gpu``, in the DataLoader workers, on the
CPU), distributed as the matching ``torchvision.transforms`` op draws it for each image.
:mod:`swav_plugin.zoo.batch_augment` applies the draws to a batch on its device.

Colour jitter applies torchvision's four operations in a random order per sample. Brightness,
contrast and saturation are each one blend ``f·x + a·mean(grey(x)) + b·grey(x)``; the hue
rotation comes once, between up to three blends before it and three after it, so
:func:`jitter_passes` turns each sample's order into six blend passes and one hue pass over
the batch instead of all four operations at each of the four positions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)  # torchvision's ColorJitter op indices


def _default_device(
    device: torch.device | str | None, generator: torch.Generator | None
) -> torch.device | str:
    if device is not None:
        return device
    return generator.device if generator is not None else "cpu"


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
    """Colour jitter rewritten as passes over the batch, as
    :func:`~swav_plugin.zoo.batch_augment.color_jitter` applies them.

    ``blends`` (6, 3, N): per pass the blend ``(f, a, b)`` of every sample, identity
    ``(1, 0, 0)`` where that sample has nothing to do in the pass; passes 0–2 come before the
    hue rotation, 3–5 after it. ``hue`` (2, N): the rotation's weight (1: rotate) and six
    times its shift.
    """

    blends: Tensor
    hue: Tensor

    def rows(self) -> Tensor:
        """The :data:`~swav_plugin.zoo.batch_augment.JITTER_ROWS` rows (N each) that
        :func:`~swav_plugin.zoo.batch_augment.color_jitter` takes."""
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
