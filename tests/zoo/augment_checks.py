"""Helpers shared by the tests of the batched augmentations' draws and applies."""

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from swav_plugin.zoo import batch_augment as ba


def gen(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)


def ks(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov–Smirnov statistic, ties handled by evaluating at every value."""
    a, b = np.sort(a), np.sort(b)
    points = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, points, side="right") / len(a)
    cdf_b = np.searchsorted(b, points, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


def ks_limit(n: int, m: int) -> float:
    """The largest :func:`ks` statistic two samples of ``n`` and ``m`` from one law pass."""
    # 1.95 is the 0.1% critical value; the margin above it keeps seeded runs far from the edge
    return 1.2 * 1.95 * math.sqrt((n + m) / (n * m))


def assert_rate(chosen: torch.Tensor, p: float) -> None:
    """Assert that the fraction of ``chosen`` set lies within four standard errors of ``p``."""
    n = chosen.numel()
    rate = chosen.float().mean().item()
    assert abs(rate - p) < 4 * math.sqrt(p * (1 - p) / n), (rate, p)


def natural_images(n: int, size: int, seed: int) -> torch.Tensor:
    """Smooth colour fields of varied brightness and saturation, like downsampled photos."""
    g = gen(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=g)
    images = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    gray = ba.rgb_to_grayscale(images)
    saturation = torch.rand(n, 1, 1, 1, generator=g)
    brightness = 0.3 + 0.7 * torch.rand(n, 1, 1, 1, generator=g)
    return ((saturation * images + (1 - saturation) * gray) * brightness).clamp(0, 1)


def jitter_test_images(n: int = 48) -> torch.Tensor:
    """Random images with the colour jitter's edge cases: grey, partly grey, channel ties."""
    x = torch.rand(n, 3, 10, 9, generator=gen(0))
    x[:6] = x[:6, :1]  # grey: hue undefined, saturation 0
    x[6:12, :, :4] = x[6:12, :1, :4]  # partly grey
    x[12:18] = (x[12:18] > 0.5).float()  # pure colours, black and white: channel ties
    return x


def rows(table: torch.Tensor) -> Sequence[torch.Tensor]:
    """(R, N) per-sample values as R tensors (N, 1, 1, 1)."""
    return table.view(len(table), -1, 1, 1, 1).unbind(0)
