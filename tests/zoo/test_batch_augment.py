"""Batched augmentations against torchvision's per-image CPU transforms.

Deterministic ops are compared value by value; random ones by the rate at which they fire and
by two-sample Kolmogorov–Smirnov statistics against torchvision sampled as often. Every draw
is seeded, so each test gives the same numbers on every run.
"""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image, ImageFilter

from swav_plugin.swav.gpu_multicrop import blur_kernel_size
from swav_plugin.zoo import batch_augment as ba


@pytest.fixture(autouse=True)
def _single_thread():
    """Per-image torchvision loops run on tiny tensors, where waking a second intra-op thread
    costs far more than the work: one thread keeps this file fast."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov–Smirnov statistic, ties handled by evaluating at every value."""
    a, b = np.sort(a), np.sort(b)
    points = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, points, side="right") / len(a)
    cdf_b = np.searchsorted(b, points, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


def _ks_limit(n: int, m: int) -> float:
    # 1.95 is the 0.1% critical value; the margin above it keeps seeded runs far from the edge
    return 1.2 * 1.95 * math.sqrt((n + m) / (n * m))


def _assert_rate(chosen: torch.Tensor, p: float) -> None:
    n = chosen.numel()
    rate = chosen.float().mean().item()
    assert abs(rate - p) < 4 * math.sqrt(p * (1 - p) / n), (rate, p)


def _natural_images(n: int, size: int, seed: int) -> torch.Tensor:
    """Smooth colour fields of varied brightness and saturation, like downsampled photos."""
    g = _gen(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=g)
    images = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    gray = ba.rgb_to_grayscale(images)
    saturation = torch.rand(n, 1, 1, 1, generator=g)
    brightness = 0.3 + 0.7 * torch.rand(n, 1, 1, 1, generator=g)
    return ((saturation * images + (1 - saturation) * gray) * brightness).clamp(0, 1)


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
    boxes = ba.random_resized_crop_boxes(4000, height, width, scale, generator=_gen(0))
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
    ours = ba.random_resized_crop_boxes(n, height, width, scale, generator=_gen(1)).double()
    ours = ours.numpy()
    theirs = _torchvision_boxes(n, height, width, scale, seed=2)
    limit = _ks_limit(n, n)
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
        assert _ks(ours[name], theirs[name]) < limit, name


def _box_stats(boxes: np.ndarray, height: float, width: float) -> dict[str, np.ndarray]:
    """Area fraction, aspect ratio and relative centre of boxes in an image of that size."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return {"area": w * h / (height * width), "ratio": w / h,
            "x_centre": (boxes[:, 0] + boxes[:, 2]) / (2 * width),
            "y_centre": (boxes[:, 1] + boxes[:, 3]) / (2 * height)}


MIXED_SIZES = [(375, 500), (500, 375), (500, 500), (333, 500), (500, 281)]  # (height, width)


def test_per_image_sizes_draw_as_a_single_size_does():
    heights = torch.full((300,), 24)
    one = ba.random_resized_crop_boxes(300, 24, 40, (0.05, 0.14), generator=_gen(3))
    each = ba.random_resized_crop_boxes(300, heights, torch.full((300,), 40), (0.05, 0.14),
                                        generator=_gen(3))
    assert torch.equal(one, each)


@pytest.mark.parametrize("scale", [(0.14, 1.0), (0.05, 0.14)], ids=["global", "local"])
def test_mixed_sizes_in_one_batch_match_torchvision_per_image(scale):
    # portrait, landscape and square images in one draw: each box lies in its own image and,
    # per size, is distributed as RandomResizedCrop.get_params draws it for that size
    per_size = 1500
    sizes = torch.tensor(MIXED_SIZES).repeat(per_size, 1)  # interleaved
    boxes = ba.random_resized_crop_boxes(len(sizes), sizes[:, 0], sizes[:, 1], scale,
                                         generator=_gen(5)).double().numpy()
    assert (boxes[:, 2] <= sizes[:, 1].numpy()).all() and (boxes[:, 3] <= sizes[:, 0].numpy()).all()
    assert (boxes[:, :2] >= 0).all()
    limit = _ks_limit(per_size, per_size)
    for k, (height, width) in enumerate(MIXED_SIZES):
        ours = _box_stats(boxes[k::len(MIXED_SIZES)], height, width)
        theirs = _box_stats(_torchvision_boxes(per_size, height, width, scale, seed=10 + k),
                            height, width)
        for name in ours:
            assert _ks(ours[name], theirs[name]) < limit, (height, width, name)


def test_mixed_sizes_fall_back_per_image():
    sizes = [(40, 24), (24, 40), (30, 30)]
    heights, widths = (torch.tensor(side) for side in zip(*sizes, strict=True))
    boxes = ba.random_resized_crop_boxes(3, heights, widths, (2.0, 3.0), generator=_gen(0))
    for box, (height, width) in zip(boxes, sizes, strict=True):
        i, j, h, w = T.RandomResizedCrop.get_params(torch.empty(1, height, width), [2.0, 3.0],
                                                    [3 / 4, 4 / 3])
        assert box.tolist() == [j, i, j + w, i + h]


@pytest.mark.parametrize(("height", "width"), [(40, 24), (24, 40), (30, 30)])
def test_impossible_scale_falls_back_to_torchvision_centre_crop(height, width):
    # every attempt wants more area than the image has, so each box is the fallback
    boxes = ba.random_resized_crop_boxes(5, height, width, (2.0, 3.0), generator=_gen(0))
    i, j, h, w = T.RandomResizedCrop.get_params(torch.empty(1, height, width), [2.0, 3.0],
                                                [3 / 4, 4 / 3])
    expected = torch.tensor([[j, i, j + w, i + h]], dtype=torch.float32).expand(5, 4)
    assert torch.equal(boxes, expected)


# --- crop_resize -----------------------------------------------------------------------------


def _crop(images, boxes, image_index, size):
    return ba.crop_resize(images, ba.crop_rois(boxes, image_index), size)


def test_full_image_box_at_native_size_reproduces_the_image():
    for size in (9, 32):
        images = torch.rand(3, 3, size, size, generator=_gen(size))
        boxes = torch.tensor([[0.0, 0.0, size, size]]).expand(3, 4)
        out = _crop(images, boxes, torch.arange(3), size)
        torch.testing.assert_close(out, images, atol=1e-5, rtol=0)


def test_sub_rectangle_at_native_size_equals_slicing():
    images = torch.rand(2, 3, 20, 16, generator=_gen(0))
    boxes = torch.tensor([[3.0, 5.0, 10.0, 12.0], [9.0, 0.0, 16.0, 7.0], [0.0, 13.0, 7.0, 20.0]])
    batch_index = torch.tensor([1, 0, 1])
    out = _crop(images, boxes, batch_index, 7)
    expected = torch.stack([images[1, :, 5:12, 3:10], images[0, :, 0:7, 9:16],
                            images[1, :, 13:20, 0:7]])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_downscaling_averages_areas():
    constant = torch.full((1, 3, 30, 30), 0.37)
    out = _crop(constant, torch.tensor([[2.0, 1.0, 29.0, 27.0]]), torch.tensor([0]), 4)
    torch.testing.assert_close(out, torch.full_like(out, 0.37), atol=1e-6, rtol=0)
    # an integer factor samples exactly the pixel centres of each block: average pooling
    images = torch.rand(2, 3, 16, 16, generator=_gen(0))
    out = _crop(images, torch.tensor([[0.0, 0.0, 16.0, 16.0]] * 2), torch.arange(2), 8)
    torch.testing.assert_close(out, F.avg_pool2d(images, 2), atol=1e-6, rtol=0)


def test_upscaling_is_bilinear_interpolation():
    images = torch.rand(2, 3, 6, 6, generator=_gen(0))
    out = _crop(images, torch.tensor([[0.0, 0.0, 6.0, 6.0]] * 2), torch.arange(2), 15)
    expected = F.interpolate(images, size=(15, 15), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


# --- downscaled_size, resize_images, canvas ---------------------------------------------------


def test_downscaled_size_brings_the_shorter_side_down_and_rounds_as_python_does():
    heights = torch.tensor([375, 500, 333, 7, 256, 3, 1000])
    widths = torch.tensor([500, 375, 500, 7, 256, 5, 97])
    for short in (96, 256):
        h, w = ba.downscaled_size(heights, widths, short)
        for height, width, got_h, got_w in zip(heights.tolist(), widths.tolist(), h, w,
                                               strict=True):
            scale = short / min(height, width)
            expected = (height, width) if scale >= 1 else (round(height * scale),
                                                           round(width * scale))
            assert (got_h, got_w) == expected
            assert min(got_h, got_w) == min(short, height, width)


def test_resize_images_matches_pil_bilinear_resize():
    rng = np.random.default_rng(0)
    images = [_natural_images(1, 40, seed)[0] for seed in range(2)] + [
        torch.from_numpy(rng.integers(0, 256, (3, 30, 50), dtype=np.uint8))]
    images[:2] = [(im * 255).round().to(torch.uint8) for im in images[:2]]
    heights, widths = torch.tensor([18, 40, 18]), torch.tensor([18, 25, 30])  # down, mixed, down
    resized = ba.resize_images(images, heights, widths)
    for image, out, h, w in zip(images, resized, heights.tolist(), widths.tolist(), strict=True):
        pil = Image.fromarray(image.permute(1, 2, 0).numpy()).resize((w, h), Image.BILINEAR)
        expected = torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)
        assert out.dtype == torch.uint8 and out.shape == (3, h, w)
        assert (out.int() - expected.int()).abs().max() <= 1


def test_resize_images_of_one_size_together_as_alone():
    images = [(_natural_images(1, 32, seed)[0] * 255).round().to(torch.uint8) for seed in range(4)]
    heights, widths = torch.tensor([16, 16, 20, 32]), torch.tensor([16, 16, 12, 32])
    together = ba.resize_images(images, heights, widths)
    for i in range(4):
        alone = ba.resize_images(images[i:i + 1], heights[i:i + 1], widths[i:i + 1])[0]
        assert torch.equal(together[i], alone)
    assert together[3] is images[3]  # already at its size: not resampled


def test_canvas_places_each_image_top_left_and_repeats_its_far_edges():
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=_gen(h))
              for h, w in ((4, 6), (7, 3), (5, 5))]
    out = ba.canvas(images)
    assert out.shape == (3, 3, 8, 7) and out.dtype == torch.uint8
    for slot, image in zip(out, images, strict=True):
        h, w = image.shape[1:]
        assert torch.equal(slot[:, :h, :w], image)
        assert torch.equal(slot[:, :h, w], image[:, :, -1])
        assert torch.equal(slot[:, h, :w], image[:, -1, :])
        assert torch.equal(slot[:, h, w], image[:, -1, -1])
        assert (slot[:, h + 1:] == 0).all() and (slot[:, :, w + 1:] == 0).all()


def test_crops_cut_from_a_canvas_equal_crops_of_each_image_alone():
    # boxes reaching the far edges of images smaller than the canvas, at several scales: the
    # repeated edge stands in for roi_align's clamp at an image's own border
    images = [torch.rand(3, h, w, generator=_gen(h * w)) for h, w in ((20, 30), (30, 14), (9, 9))]
    batch = ba.canvas(images)
    boxes = torch.tensor([[10.0, 5.0, 30.0, 20.0], [0.0, 17.0, 14.0, 30.0], [0.0, 0.0, 9.0, 9.0],
                          [2.5, 3.0, 9.0, 9.0]])
    owner = torch.tensor([0, 1, 2, 2])
    for size in (5, 8, 13):
        cut = _crop(batch, boxes, owner, size)
        for k, i in enumerate(owner.tolist()):
            alone = _crop(images[i][None], boxes[k:k + 1], torch.tensor([0]), size)
            torch.testing.assert_close(cut[k:k + 1], alone, atol=1e-6, rtol=0)


# --- flip, grayscale, solarize, normalize ----------------------------------------------------


def _per_sample(values):
    """(N,) values as (N, 1, 1, 1), to broadcast over images."""
    return values.view(-1, 1, 1, 1)


def _chosen(n, p, seed):
    return _per_sample(ba.coin(n, p, generator=_gen(seed)))


@pytest.mark.parametrize(("height", "width"), [(8, 8), (9, 13)])
def test_affine_matches_torchvision_affine_on_pil_images(height, width):
    # the CPU path's RandomAffine runs on PIL images: equal up to PIL's rounding to uint8
    x = torch.randint(0, 256, (6, 3, height, width), generator=_gen(0), dtype=torch.uint8)
    angle = torch.tensor([0.0, 15.0, -30.0, 90.0, 7.3, -179.0])
    shift_x = torch.tensor([0.0, 1.0, -2.0, 0.0, 3.0, -1.0])
    shift_y = torch.tensor([0.0, -1.0, 0.0, 2.0, 1.0, 4.0])
    out = ba.affine(x.float() / 255, angle, shift_x, shift_y)
    for i in range(len(x)):
        image = Image.fromarray(x[i].permute(1, 2, 0).numpy())
        ref = TF.affine(image, angle=float(angle[i]), translate=[int(shift_x[i]), int(shift_y[i])],
                        scale=1.0, shear=[0.0, 0.0], interpolation=T.InterpolationMode.BILINEAR)
        torch.testing.assert_close(out[i], TF.pil_to_tensor(ref).float() / 255,
                                   atol=1.01 / 255, rtol=0)
    assert (out == 0).any() and (out > 0).any()  # uncovered corners black, the rest kept


def test_affine_without_rotation_or_shift_returns_the_input():
    x = torch.rand(3, 3, 8, 8, generator=_gen(0))
    zero = torch.zeros(3)
    torch.testing.assert_close(ba.affine(x, zero, zero, zero), x, atol=1e-6, rtol=0)


@pytest.mark.parametrize(("degrees", "translate", "height", "width"),
                         [(15.0, 0.1, 8, 8), (30.0, 0.2, 24, 40)])
def test_affine_draws_match_torchvision_random_affine(degrees, translate, height, width):
    n = 4000
    angle, shift_x, shift_y = ba.random_affine_params(n, degrees, translate, height, width,
                                                      generator=_gen(1)).numpy()
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
        assert _ks(ours, ref) < _ks_limit(n, n)


def test_coin_is_zero_or_one_at_the_rate():
    weights = ba.coin(4000, 0.3, generator=_gen(0))
    assert set(weights.unique().tolist()) == {0.0, 1.0}
    _assert_rate(weights.bool(), 0.3)


def test_horizontal_flip_rate_and_values():
    x = torch.rand(2000, 3, 4, 5, generator=_gen(0))
    out = ba.horizontal_flip(x, _chosen(2000, 0.3, 1))
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert torch.equal(flipped, ~kept)  # every sample is exactly one of the two
    _assert_rate(flipped, 0.3)


def test_random_grayscale_rate_and_values():
    x = torch.rand(2000, 3, 4, 4, generator=_gen(0))
    out = ba.grayscale(x, _chosen(2000, 0.2, 1))
    gray = (out[:, 0] == out[:, 1]).flatten(1).all(1) & (out[:, 1] == out[:, 2]).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert torch.equal(gray, ~kept)
    _assert_rate(gray, 0.2)
    expected = TF.rgb_to_grayscale(x, num_output_channels=3)
    torch.testing.assert_close(out[gray], expected[gray], atol=1e-6, rtol=0)


def test_solarize_matches_torchvision_at_the_chosen_rate():
    x = torch.rand(2000, 3, 4, 4, generator=_gen(0))
    x[:, :, 0, 0] = 0.25  # exactly at the threshold: torchvision inverts it (>=)
    expected = torch.stack([TF.solarize(image, 0.25) for image in x[:50]])
    assert torch.equal(ba.solarize(x[:50], 0.25, torch.ones(50, 1, 1, 1)), expected)
    out = ba.solarize(x, 0.25, _chosen(2000, 0.2, 1))
    solarized = (out == TF.solarize(x, 0.25)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert torch.equal(solarized, ~kept)
    _assert_rate(solarized, 0.2)


def test_normalize_matches_torchvision():
    x = torch.rand(4, 3, 5, 5, generator=_gen(0))
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    torch.testing.assert_close(ba.normalize(x, mean, std), TF.normalize(x, mean, std),
                               atol=1e-6, rtol=0)


# --- colour jitter ---------------------------------------------------------------------------


def _jitter_test_images(n: int = 48) -> torch.Tensor:
    x = torch.rand(n, 3, 10, 9, generator=_gen(0))
    x[:6] = x[:6, :1]  # grey: hue undefined, saturation 0
    x[6:12, :, :4] = x[6:12, :1, :4]  # partly grey
    x[12:18] = (x[12:18] > 0.5).float()  # pure colours, black and white: channel ties
    return x


def _as_blend(name, factor):
    """The blend (f, a, b) of a torchvision colour op, per sample."""
    f = _per_sample(factor)
    zero = torch.zeros_like(f)
    return {"brightness": (f, zero, zero), "contrast": (f, 1 - f, zero),
            "saturation": (f, zero, 1 - f)}[name]


@pytest.mark.parametrize(
    ("name", "low", "high", "atol"),
    [("brightness", 0.0, 2.0, 1e-6), ("contrast", 0.0, 2.0, 1e-6),
     ("saturation", 0.0, 2.0, 1e-6), ("hue", -0.5, 0.5, 1e-5)],
)
def test_per_sample_colour_ops_match_torchvision(name, low, high, atol):
    x = _jitter_test_images()
    factor = low + (high - low) * torch.rand(len(x), generator=_gen(1))
    if name == "hue":
        out = ba.rotate_hue(x, torch.ones(len(x), 1, 1, 1), _per_sample(6 * factor))
    else:
        out = ba.blend(x, *_as_blend(name, factor))
    reference = getattr(TF, f"adjust_{name}")
    expected = torch.stack([reference(image, float(f)) for image, f in zip(x, factor, strict=True)])
    torch.testing.assert_close(out, expected, atol=atol, rtol=0)


def test_identity_blend_and_unweighted_hue_return_the_input_exactly():
    x = _jitter_test_images()
    ones, zeros = torch.ones(len(x), 1, 1, 1), torch.zeros(len(x), 1, 1, 1)
    assert torch.equal(ba.blend(x, ones, zeros, zeros), x)
    assert torch.equal(ba.rotate_hue(x, zeros, ones), x)


def _rows(table):
    """(R, N) per-sample values as R tensors (N, 1, 1, 1)."""
    return table.view(len(table), -1, 1, 1, 1).unbind(0)


def _jitter(x, params):
    return ba.color_jitter(x, _rows(ba.jitter_passes(params).rows()))


def _torchvision_jitter(x: torch.Tensor, params: ba.ColorJitterParams) -> torch.Tensor:
    ops = {ba.BRIGHTNESS: (TF.adjust_brightness, params.brightness),
           ba.CONTRAST: (TF.adjust_contrast, params.contrast),
           ba.SATURATION: (TF.adjust_saturation, params.saturation),
           ba.HUE: (TF.adjust_hue, params.hue)}
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
    x = _natural_images(480, 8, seed=0)
    params = ba.sample_color_jitter_params(len(x), 0.8, 0.8, 0.8, 0.2, 0.9, generator=_gen(1))
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
        shared = ba.ColorJitterParams(
            params.apply, torch.tensor(fixed).expand_as(params.order), params.brightness,
            params.contrast, params.saturation, params.hue)
        differs = (_jitter(x, shared) - out).abs().flatten(1).amax(1) > 1e-3
        assert differs.float().mean() > 0.3, fixed
    _assert_rate(params.apply, 0.9)
    untouched = ~params.apply
    assert torch.equal(out[untouched], x[untouched])


def test_disabled_jitter_ops_are_skipped():
    x = _jitter_test_images()
    params = ba.sample_color_jitter_params(len(x), 0.5, 0, 0, 0, 1.0, generator=_gen(3))
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
    images, repeats = _natural_images(8, 12, seed=0), 250
    x = images.repeat(repeats, 1, 1, 1)
    params = ba.sample_color_jitter_params(len(x), 0.8, 0.8, 0.8, 0.2, 0.8, generator=_gen(1))
    ours = _colour_stats(_jitter(x, params), x)
    torch.manual_seed(2)
    jitter = T.RandomApply([T.ColorJitter(0.8, 0.8, 0.8, 0.2)], p=0.8)
    theirs = _colour_stats(torch.stack([jitter(image) for image in x]), x)
    limit = _ks_limit(len(x), len(x))
    for name in ours:
        assert _ks(ours[name], theirs[name]) < limit, name
        se = math.sqrt(ours[name].var() / len(x) + theirs[name].var() / len(x))
        assert abs(ours[name].mean() - theirs[name].mean()) < 4 * se, name
        quantiles = [0.05, 0.25, 0.5, 0.75, 0.95]
        atol = 0.1 if name == "hue_shift" else 0.03  # radians there, intensities elsewhere
        np.testing.assert_allclose(np.quantile(ours[name], quantiles),
                                   np.quantile(theirs[name], quantiles), atol=atol, err_msg=name)


# --- gaussian blur ---------------------------------------------------------------------------


def test_blur_approximates_pil_gaussian_blur_as_the_cpu_path_applies_it():
    # PIL's GaussianBlur (the official code's and the CPU path's) is itself three box blurs;
    # the device's ±3σ Gaussian, edges repeated, stays within about one grey level of it.
    rng = np.random.default_rng(0)
    image = (rng.random((40, 48, 3)) * 255).astype(np.uint8)
    image[10:30, 8:40] = 255  # edges, where a wrong padding or width would show
    x = torch.from_numpy(image).permute(2, 0, 1).float()[None] / 255
    for sigma in (0.5, 1.0, 1.5, 2.0):
        expected = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(sigma)))
        kernels = ba.blur_kernels(blur_kernel_size(2.0), torch.tensor([sigma]))
        out = ba.gaussian_blur(x, kernels, torch.ones(1, 1, 1, 1))[0].permute(1, 2, 0) * 255
        error = (out - torch.tensor(expected, dtype=torch.float32)).abs()
        assert error.mean() < 1.5 and error.max() < 30, (sigma, error.mean(), error.max())
        assert (out - x[0].permute(1, 2, 0) * 255).abs().mean() > 4 * error.mean()  # blurred


def test_blur_kernel_spans_three_sigmas():
    assert [blur_kernel_size(s) for s in (0.1, 1.0, 2.0)] == [3, 7, 13]


def test_random_blur_rate_and_sigma_range():
    x = torch.rand(2000, 3, 8, 8, generator=_gen(0))
    sigma = ba.uniform((2000,), 0.5, 1.5, generator=_gen(2))
    out = ba.gaussian_blur(x, ba.blur_kernels(5, sigma), _chosen(2000, 0.4, 1))
    kept = (out == x).flatten(1).all(1)
    _assert_rate(~kept, 0.4)
    # more blur, less contrast: each blurred std lies between those of the extreme sigmas
    std = out.std((1, 2, 3))
    everywhere = torch.ones(2000, 1, 1, 1)
    sharpest = ba.gaussian_blur(x, ba.blur_kernels(5, torch.full((2000,), 0.5)), everywhere)
    softest = ba.gaussian_blur(x, ba.blur_kernels(5, torch.full((2000,), 1.5)), everywhere)
    blurred = ~kept
    assert (std[blurred] <= sharpest.std((1, 2, 3))[blurred] + 1e-6).all()
    assert (std[blurred] >= softest.std((1, 2, 3))[blurred] - 1e-6).all()


def test_blur_kernels_need_an_odd_size():
    with pytest.raises(ValueError, match="odd"):
        ba.blur_kernels(4, torch.ones(2))


# --- cross-cutting ---------------------------------------------------------------------------


def _draws(n, height, width, generator, device=None):
    boxes = ba.random_resized_crop_boxes(2 * n, height, width, (0.14, 1.0), generator=generator,
                                         device=device)
    rois = ba.crop_rois(boxes, torch.arange(n, device=boxes.device).repeat(2))
    jitter = ba.jitter_passes(ba.sample_color_jitter_params(2 * n, 0.8, 0.8, 0.8, 0.2, 0.8,
                                                            generator, device))
    weights = torch.stack([ba.coin(2 * n, p, generator, device) for p in (0.5, 0.2, 0.5, 0.2)])
    kernels = ba.blur_kernels(3, ba.uniform((2 * n,), 0.1, 2.0, generator, device))
    return rois, jitter.rows(), weights, kernels


def _pipeline(images, draws):
    rois, jitter, weights, kernels = draws
    flip, grey, blur, solar = _rows(weights)
    x = ba.crop_resize(images, rois, 8)
    x = ba.horizontal_flip(x, flip)
    x = ba.color_jitter(x, _rows(jitter))
    x = ba.grayscale(x, grey)
    x = ba.gaussian_blur(x, kernels, blur)
    x = ba.solarize(x, 0.5, solar)
    return ba.normalize(x, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_seeded_draws_make_the_pipeline_deterministic():
    images = torch.rand(16, 3, 16, 16, generator=_gen(0))
    first = _pipeline(images, _draws(16, 16, 16, _gen(5)))
    again = _pipeline(images, _draws(16, 16, 16, _gen(5)))
    assert torch.equal(first, again)
    other = _pipeline(images, _draws(16, 16, 16, _gen(6)))
    assert not torch.allclose(first, other)


def test_pipeline_never_reads_tensor_values_on_the_host():
    # Meta tensors carry no data: .item(), .tolist(), python branching on a tensor, boolean
    # indexing and nonzero all raise, so running on them proves the ops never sync.
    images = torch.empty(4, 3, 16, 16, device="meta")
    assert _pipeline(images, _draws(4, 16, 16, None, "meta")).shape == (8, 3, 8, 8)
