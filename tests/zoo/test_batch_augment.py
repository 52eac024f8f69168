"""Batched augmentations applied to a batch against torchvision's per-image CPU transforms.

Deterministic ops are compared value by value; per-sample choices by the rate at which they
fire. Every draw is seeded, so each test gives the same numbers on every run.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image, ImageFilter

from swav_plugin.swav.gpu_multicrop import blur_kernel_size
from swav_plugin.zoo import batch_augment as ba
from swav_plugin.zoo import batch_draws as bd
from tests.zoo.augment_checks import (
    assert_rate,
    gen,
    jitter_test_images,
    natural_images,
    rows,
)

pytestmark = pytest.mark.usefixtures("single_thread")


# --- crop_resize -----------------------------------------------------------------------------


def _crop(images, boxes, image_index, size):
    return ba.crop_resize(images, ba.crop_rois(boxes, image_index), size)


def test_full_image_box_at_native_size_reproduces_the_image():
    for size in (9, 32):
        images = torch.rand(3, 3, size, size, generator=gen(size))
        boxes = torch.tensor([[0.0, 0.0, size, size]]).expand(3, 4)
        out = _crop(images, boxes, torch.arange(3), size)
        torch.testing.assert_close(out, images, atol=1e-5, rtol=0)


def test_sub_rectangle_at_native_size_equals_slicing():
    images = torch.rand(2, 3, 20, 16, generator=gen(0))
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
    images = torch.rand(2, 3, 16, 16, generator=gen(0))
    out = _crop(images, torch.tensor([[0.0, 0.0, 16.0, 16.0]] * 2), torch.arange(2), 8)
    torch.testing.assert_close(out, F.avg_pool2d(images, 2), atol=1e-6, rtol=0)


def test_upscaling_is_bilinear_interpolation():
    images = torch.rand(2, 3, 6, 6, generator=gen(0))
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
    images = [natural_images(1, 40, seed)[0] for seed in range(2)] + [
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
    images = [(natural_images(1, 32, seed)[0] * 255).round().to(torch.uint8) for seed in range(4)]
    heights, widths = torch.tensor([16, 16, 20, 32]), torch.tensor([16, 16, 12, 32])
    together = ba.resize_images(images, heights, widths)
    for i in range(4):
        alone = ba.resize_images(images[i:i + 1], heights[i:i + 1], widths[i:i + 1])[0]
        assert torch.equal(together[i], alone)
    assert together[3] is images[3]  # already at its size: not resampled


def test_canvas_places_each_image_top_left_and_repeats_its_far_edges():
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen(h))
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
    images = [torch.rand(3, h, w, generator=gen(h * w)) for h, w in ((20, 30), (30, 14), (9, 9))]
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
    return _per_sample(bd.coin(n, p, generator=gen(seed)))


@pytest.mark.parametrize(("height", "width"), [(8, 8), (9, 13)])
def test_affine_matches_torchvision_affine_on_pil_images(height, width):
    # the CPU path's RandomAffine runs on PIL images: equal up to PIL's rounding to uint8
    x = torch.randint(0, 256, (6, 3, height, width), generator=gen(0), dtype=torch.uint8)
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
    x = torch.rand(3, 3, 8, 8, generator=gen(0))
    zero = torch.zeros(3)
    torch.testing.assert_close(ba.affine(x, zero, zero, zero), x, atol=1e-6, rtol=0)


def test_horizontal_flip_rate_and_values():
    x = torch.rand(2000, 3, 4, 5, generator=gen(0))
    out = ba.horizontal_flip(x, _chosen(2000, 0.3, 1))
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert torch.equal(flipped, ~kept)  # every sample is exactly one of the two
    assert_rate(flipped, 0.3)


def test_random_grayscale_rate_and_values():
    x = torch.rand(2000, 3, 4, 4, generator=gen(0))
    out = ba.grayscale(x, _chosen(2000, 0.2, 1))
    gray = (out[:, 0] == out[:, 1]).flatten(1).all(1) & (out[:, 1] == out[:, 2]).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert torch.equal(gray, ~kept)
    assert_rate(gray, 0.2)
    expected = TF.rgb_to_grayscale(x, num_output_channels=3)
    torch.testing.assert_close(out[gray], expected[gray], atol=1e-6, rtol=0)


def test_solarize_matches_torchvision_at_the_chosen_rate():
    x = torch.rand(2000, 3, 4, 4, generator=gen(0))
    x[:, :, 0, 0] = 0.25  # exactly at the threshold: torchvision inverts it (>=)
    expected = torch.stack([TF.solarize(image, 0.25) for image in x[:50]])
    assert torch.equal(ba.solarize(x[:50], 0.25, torch.ones(50, 1, 1, 1)), expected)
    out = ba.solarize(x, 0.25, _chosen(2000, 0.2, 1))
    solarized = (out == TF.solarize(x, 0.25)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert torch.equal(solarized, ~kept)
    assert_rate(solarized, 0.2)


def test_normalize_matches_torchvision():
    x = torch.rand(4, 3, 5, 5, generator=gen(0))
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    torch.testing.assert_close(ba.normalize(x, mean, std), TF.normalize(x, mean, std),
                               atol=1e-6, rtol=0)


# --- colour ops ------------------------------------------------------------------------------


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
    x = jitter_test_images()
    factor = low + (high - low) * torch.rand(len(x), generator=gen(1))
    if name == "hue":
        out = ba.rotate_hue(x, torch.ones(len(x), 1, 1, 1), _per_sample(6 * factor))
    else:
        out = ba.blend(x, *_as_blend(name, factor))
    reference = getattr(TF, f"adjust_{name}")
    expected = torch.stack([reference(image, float(f)) for image, f in zip(x, factor, strict=True)])
    torch.testing.assert_close(out, expected, atol=atol, rtol=0)


def test_identity_blend_and_unweighted_hue_return_the_input_exactly():
    x = jitter_test_images()
    ones, zeros = torch.ones(len(x), 1, 1, 1), torch.zeros(len(x), 1, 1, 1)
    assert torch.equal(ba.blend(x, ones, zeros, zeros), x)
    assert torch.equal(ba.rotate_hue(x, zeros, ones), x)


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
        kernels = bd.blur_kernels(blur_kernel_size(2.0), torch.tensor([sigma]))
        out = ba.gaussian_blur(x, kernels, torch.ones(1, 1, 1, 1))[0].permute(1, 2, 0) * 255
        error = (out - torch.tensor(expected, dtype=torch.float32)).abs()
        assert error.mean() < 1.5 and error.max() < 30, (sigma, error.mean(), error.max())
        assert (out - x[0].permute(1, 2, 0) * 255).abs().mean() > 4 * error.mean()  # blurred


def test_random_blur_rate_and_sigma_range():
    x = torch.rand(2000, 3, 8, 8, generator=gen(0))
    sigma = bd.uniform((2000,), 0.5, 1.5, generator=gen(2))
    out = ba.gaussian_blur(x, bd.blur_kernels(5, sigma), _chosen(2000, 0.4, 1))
    kept = (out == x).flatten(1).all(1)
    assert_rate(~kept, 0.4)
    # more blur, less contrast: each blurred std lies between those of the extreme sigmas
    std = out.std((1, 2, 3))
    everywhere = torch.ones(2000, 1, 1, 1)
    sharpest = ba.gaussian_blur(x, bd.blur_kernels(5, torch.full((2000,), 0.5)), everywhere)
    softest = ba.gaussian_blur(x, bd.blur_kernels(5, torch.full((2000,), 1.5)), everywhere)
    blurred = ~kept
    assert (std[blurred] <= sharpest.std((1, 2, 3))[blurred] + 1e-6).all()
    assert (std[blurred] >= softest.std((1, 2, 3))[blurred] - 1e-6).all()


# --- cross-cutting ---------------------------------------------------------------------------


def _draws(n, height, width, generator, device=None):
    boxes = bd.random_resized_crop_boxes(2 * n, height, width, (0.14, 1.0), generator=generator,
                                         device=device)
    rois = ba.crop_rois(boxes, torch.arange(n, device=boxes.device).repeat(2))
    jitter = bd.jitter_passes(bd.sample_color_jitter_params(2 * n, 0.8, 0.8, 0.8, 0.2, 0.8,
                                                            generator, device))
    weights = torch.stack([bd.coin(2 * n, p, generator, device) for p in (0.5, 0.2, 0.5, 0.2)])
    kernels = bd.blur_kernels(3, bd.uniform((2 * n,), 0.1, 2.0, generator, device))
    return rois, jitter.rows(), weights, kernels


def _pipeline(images, draws):
    rois, jitter, weights, kernels = draws
    flip, grey, blur, solar = rows(weights)
    x = ba.crop_resize(images, rois, 8)
    x = ba.horizontal_flip(x, flip)
    x = ba.color_jitter(x, rows(jitter))
    x = ba.grayscale(x, grey)
    x = ba.gaussian_blur(x, kernels, blur)
    x = ba.solarize(x, 0.5, solar)
    return ba.normalize(x, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_seeded_draws_make_the_pipeline_deterministic():
    images = torch.rand(16, 3, 16, 16, generator=gen(0))
    first = _pipeline(images, _draws(16, 16, 16, gen(5)))
    again = _pipeline(images, _draws(16, 16, 16, gen(5)))
    assert torch.equal(first, again)
    other = _pipeline(images, _draws(16, 16, 16, gen(6)))
    assert not torch.allclose(first, other)


def test_pipeline_never_reads_tensor_values_on_the_host():
    # Meta tensors carry no data: .item(), .tolist(), python branching on a tensor, boolean
    # indexing and nonzero all raise, so running on them proves the ops never sync.
    images = torch.empty(4, 3, 16, 16, device="meta")
    assert _pipeline(images, _draws(4, 16, 16, None, "meta")).shape == (8, 3, 8, 8)
