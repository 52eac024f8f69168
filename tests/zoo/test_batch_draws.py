"""Batched augmentation draws against torchvision's per-image parameter draws.

Random parameters are compared by the rate at which they fire and by two-sample
Kolmogorov–Smirnov statistics against torchvision sampled as often. Every draw is seeded, so
each test gives the same numbers on every run.
"""

import itertools
import math

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF

from swav_plugin.swav.gpu_multicrop import blur_kernel_size
from swav_plugin.zoo import batch_augment as ba
from swav_plugin.zoo import batch_draws as bd
from tests.zoo.augment_checks import (
    assert_rate,
    gen,
    jitter_test_images,
    ks,
    ks_limit,
    natural_images,
    rows,
)

pytestmark = pytest.mark.usefixtures("single_thread")


# --- random_resized_crop_boxes ---------------------------------------------------------------

CROP_CASES = [
    pytest.param(32, 32, (0.14, 1.0), id="square-global"),
    pytest.param(24, 40, (0.05, 0.14), id="wide-local"),
]


def _torchvision_boxes(n: int, height: int, width: int, scale, seed: int) -> np.ndarray:
    torch.manual_seed(seed)
    image = torch.empty(1, height, width)
    boxes = []
    for _ in range(n):
        i, j, h, w = T.RandomResizedCrop.get_params(image, list(scale), [3 / 4, 4 / 3])
        boxes.append((j, i, j + w, i + h))
    return np.asarray(boxes, dtype=np.float64)


@pytest.mark.parametrize(("height", "width", "scale"), CROP_CASES)
def test_crop_boxes_lie_in_the_image_within_scale_and_ratio(height, width, scale):
    boxes = bd.random_resized_crop_boxes(4000, height, width, scale, generator=gen(0))
    assert boxes.shape == (4000, 4) and boxes.dtype == torch.float32
    x1, y1, x2, y2 = boxes.unbind(1)
    assert torch.equal(boxes, boxes.round())
    assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= width).all() and (y2 <= height).all()
    w, h = x2 - x1, y2 - y1
    assert (w > 0).all() and (h > 0).all()
    # w and h are rounded from sqrt(area * r) and sqrt(area / r): each within half a pixel
    area = height * width
    assert ((w - 0.5) * (h - 0.5) <= scale[1] * area + 1e-3).all()
    assert ((w + 0.5) * (h + 0.5) >= scale[0] * area - 1e-3).all()
    assert ((w - 0.5) / (h + 0.5) <= 4 / 3 + 1e-6).all()
    assert ((w + 0.5) / (h - 0.5) >= 3 / 4 - 1e-6).all()


@pytest.mark.parametrize(("height", "width", "scale"), CROP_CASES)
def test_crop_box_distribution_matches_torchvision(height, width, scale):
    n = 4000
    ours = bd.random_resized_crop_boxes(n, height, width, scale, generator=gen(1)).double()
    ours = ours.numpy()
    theirs = _torchvision_boxes(n, height, width, scale, seed=2)
    limit = ks_limit(n, n)
    for boxes in (ours, theirs):
        assert boxes[:, 2].max() <= width and boxes[:, 3].max() <= height

    def stats(boxes):
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        return {
            "area": w * h / (height * width),
            "ratio": w / h,
            "x_centre": (boxes[:, 0] + boxes[:, 2]) / 2,
            "y_centre": (boxes[:, 1] + boxes[:, 3]) / 2,
        }

    ours, theirs = stats(ours), stats(theirs)
    for name in ours:
        assert ks(ours[name], theirs[name]) < limit, name


def _box_stats(boxes: np.ndarray, height: float, width: float) -> dict[str, np.ndarray]:
    """Area fraction, aspect ratio and relative centre of boxes in an image of that size."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return {"area": w * h / (height * width), "ratio": w / h,
            "x_centre": (boxes[:, 0] + boxes[:, 2]) / (2 * width),
            "y_centre": (boxes[:, 1] + boxes[:, 3]) / (2 * height)}


MIXED_SIZES = [(375, 500), (500, 375), (500, 500), (333, 500), (500, 281)]  # (height, width)


def test_per_image_sizes_draw_as_a_single_size_does():
    heights = torch.full((300,), 24)
    one = bd.random_resized_crop_boxes(300, 24, 40, (0.05, 0.14), generator=gen(3))
    each = bd.random_resized_crop_boxes(300, heights, torch.full((300,), 40), (0.05, 0.14),
                                        generator=gen(3))
    assert torch.equal(one, each)


@pytest.mark.parametrize("scale", [(0.14, 1.0), (0.05, 0.14)], ids=["global", "local"])
def test_mixed_sizes_in_one_batch_match_torchvision_per_image(scale):
    # portrait, landscape and square images in one draw: each box lies in its own image and,
    # per size, is distributed as RandomResizedCrop.get_params draws it for that size
    per_size = 1500
    sizes = torch.tensor(MIXED_SIZES).repeat(per_size, 1)  # interleaved
    boxes = bd.random_resized_crop_boxes(len(sizes), sizes[:, 0], sizes[:, 1], scale,
                                         generator=gen(5)).double().numpy()
    assert (boxes[:, 2] <= sizes[:, 1].numpy()).all() and (boxes[:, 3] <= sizes[:, 0].numpy()).all()
    assert (boxes[:, :2] >= 0).all()
    limit = ks_limit(per_size, per_size)
    for k, (height, width) in enumerate(MIXED_SIZES):
        ours = _box_stats(boxes[k::len(MIXED_SIZES)], height, width)
        theirs = _box_stats(_torchvision_boxes(per_size, height, width, scale, seed=10 + k),
                            height, width)
        for name in ours:
            assert ks(ours[name], theirs[name]) < limit, (height, width, name)


def test_mixed_sizes_fall_back_per_image():
    sizes = [(40, 24), (24, 40), (30, 30)]
    heights, widths = (torch.tensor(side) for side in zip(*sizes, strict=True))
    boxes = bd.random_resized_crop_boxes(3, heights, widths, (2.0, 3.0), generator=gen(0))
    for box, (height, width) in zip(boxes, sizes, strict=True):
        i, j, h, w = T.RandomResizedCrop.get_params(torch.empty(1, height, width), [2.0, 3.0],
                                                    [3 / 4, 4 / 3])
        assert box.tolist() == [j, i, j + w, i + h]


@pytest.mark.parametrize(("height", "width"), [(40, 24), (24, 40), (30, 30)])
def test_impossible_scale_falls_back_to_torchvision_centre_crop(height, width):
    # every attempt wants more area than the image has, so each box is the fallback
    boxes = bd.random_resized_crop_boxes(5, height, width, (2.0, 3.0), generator=gen(0))
    i, j, h, w = T.RandomResizedCrop.get_params(torch.empty(1, height, width), [2.0, 3.0],
                                                [3 / 4, 4 / 3])
    expected = torch.tensor([[j, i, j + w, i + h]], dtype=torch.float32).expand(5, 4)
    assert torch.equal(boxes, expected)


# --- random_affine_params, coin -----------------------------------------------------------


@pytest.mark.parametrize(("degrees", "translate", "height", "width"),
                         [(15.0, 0.1, 8, 8), (30.0, 0.2, 24, 40)])
def test_affine_draws_match_torchvision_random_affine(degrees, translate, height, width):
    n = 4000
    angle, shift_x, shift_y = bd.random_affine_params(n, degrees, translate, height, width,
                                                      generator=gen(1)).numpy()
    torch.manual_seed(2)
    theirs = np.array([
        (a, tx, ty) for a, (tx, ty), _, _ in (
            T.RandomAffine.get_params((-degrees, degrees), (translate, translate), None, None,
                                      [width, height])
            for _ in range(n))
    ]).T
    assert np.abs(angle).max() <= degrees
    for ours, ref, side in ((shift_x, theirs[1], width), (shift_y, theirs[2], height)):
        assert np.array_equal(ours, np.round(ours))
        assert np.abs(ours).max() <= round(translate * side)
        assert set(np.unique(ours)) == set(np.unique(ref))  # the same whole-pixel shifts
    for ours, ref in zip((angle, shift_x, shift_y), theirs, strict=True):
        assert ks(ours, ref) < ks_limit(n, n)


def test_coin_is_zero_or_one_at_the_rate():
    weights = bd.coin(4000, 0.3, generator=gen(0))
    assert set(weights.unique().tolist()) == {0.0, 1.0}
    assert_rate(weights.bool(), 0.3)


# --- colour jitter ---------------------------------------------------------------------------


def _jitter(x, params):
    return ba.color_jitter(x, rows(bd.jitter_passes(params).rows()))


def _torchvision_jitter(x: torch.Tensor, params: bd.ColorJitterParams) -> torch.Tensor:
    ops = {bd.BRIGHTNESS: (TF.adjust_brightness, params.brightness),
           bd.CONTRAST: (TF.adjust_contrast, params.contrast),
           bd.SATURATION: (TF.adjust_saturation, params.saturation),
           bd.HUE: (TF.adjust_hue, params.hue)}
    out = []
    for i, image in enumerate(x):
        if params.apply[i]:
            for index in params.order[i].tolist():
                op, factor = ops[index]
                if factor is not None:
                    image = op(image, float(factor[i]))
        out.append(image)
    return torch.stack(out)


def test_color_jitter_applies_each_sample_in_its_own_order():
    x = natural_images(480, 8, seed=0)
    params = bd.sample_color_jitter_params(len(x), 0.8, 0.8, 0.8, 0.2, 0.9, generator=gen(1))
    # the orders are uniform over all 24 permutations
    _, counts = params.order.unique(dim=0, return_counts=True)
    assert len(counts) == 24
    expected_count, se = len(x) / 24, math.sqrt(len(x) / 24 * 23 / 24)
    assert (counts - expected_count).abs().max() < 4 * se
    # ... and each sample follows its own: torchvision's ops applied one by one in that order
    out = _jitter(x, params)
    torch.testing.assert_close(out, _torchvision_jitter(x, params), atol=1e-5, rtol=0)
    # the check has teeth: forcing one shared order changes many samples
    for fixed in itertools.permutations(range(4)):
        shared = bd.ColorJitterParams(
            params.apply, torch.tensor(fixed).expand_as(params.order), params.brightness,
            params.contrast, params.saturation, params.hue)
        differs = (_jitter(x, shared) - out).abs().flatten(1).amax(1) > 1e-3
        assert differs.float().mean() > 0.3, fixed
    assert_rate(params.apply, 0.9)
    untouched = ~params.apply
    assert torch.equal(out[untouched], x[untouched])


def test_disabled_jitter_ops_are_skipped():
    x = jitter_test_images()
    params = bd.sample_color_jitter_params(len(x), 0.5, 0, 0, 0, 1.0, generator=gen(3))
    assert params.contrast is None and params.saturation is None and params.hue is None
    out = _jitter(x, params)
    expected = torch.stack([TF.adjust_brightness(image, float(f))
                            for image, f in zip(x, params.brightness, strict=True)])
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    assert ((params.brightness >= 0.5) & (params.brightness <= 1.5)).all()


def _chroma(x: torch.Tensor) -> torch.Tensor:
    """Each pixel's colour as a complex number in the plane orthogonal to grey."""
    r, g, b = x.unbind(1)
    return torch.complex(r - (g + b) / 2, math.sqrt(3) / 2 * (g - b))


def _colour_stats(x: torch.Tensor, source: torch.Tensor) -> dict[str, np.ndarray]:
    maxc, minc = x.amax(1), x.amin(1)
    saturation = (maxc - minc) / maxc.clamp_min(1e-6)
    # chroma-weighted mean rotation of the colours, the hue shift that grey-level stats miss
    rotation = (_chroma(x) * _chroma(source).conj()).sum((1, 2)).angle()
    return {"mean": x.mean((1, 2, 3)).numpy(), "std": x.std((1, 2, 3)).numpy(),
            "saturation": saturation.mean((1, 2)).numpy(), "hue_shift": rotation.numpy()}


def test_color_jitter_distribution_matches_torchvision():
    images, repeats = natural_images(8, 12, seed=0), 250
    x = images.repeat(repeats, 1, 1, 1)
    params = bd.sample_color_jitter_params(len(x), 0.8, 0.8, 0.8, 0.2, 0.8, generator=gen(1))
    ours = _colour_stats(_jitter(x, params), x)
    torch.manual_seed(2)
    jitter = T.RandomApply([T.ColorJitter(0.8, 0.8, 0.8, 0.2)], p=0.8)
    theirs = _colour_stats(torch.stack([jitter(image) for image in x]), x)
    limit = ks_limit(len(x), len(x))
    for name in ours:
        assert ks(ours[name], theirs[name]) < limit, name
        se = math.sqrt(ours[name].var() / len(x) + theirs[name].var() / len(x))
        assert abs(ours[name].mean() - theirs[name].mean()) < 4 * se, name
        quantiles = [0.05, 0.25, 0.5, 0.75, 0.95]
        atol = 0.1 if name == "hue_shift" else 0.03  # radians there, intensities elsewhere
        np.testing.assert_allclose(np.quantile(ours[name], quantiles),
                                   np.quantile(theirs[name], quantiles), atol=atol, err_msg=name)


# --- blur kernels ----------------------------------------------------------------------------


def test_blur_kernel_spans_three_sigmas():
    assert [blur_kernel_size(s) for s in (0.1, 1.0, 2.0)] == [3, 7, 13]


def test_blur_kernels_need_an_odd_size():
    with pytest.raises(ValueError, match="odd"):
        bd.blur_kernels(4, torch.ones(2))
