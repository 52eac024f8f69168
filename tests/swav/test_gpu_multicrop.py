import numpy as np
import pytest
import torch
from lightning_fabric.utilities.apply_func import move_data_to_device
from PIL import Image

from swav_plugin.swav.gpu_multicrop import CropDraws
from swav_plugin.swav.multicrop import MultiCropCollate, MultiCropTransform
from swav_plugin.zoo import batch_augment as A

CIFAR_CROPS = [
    {"size": 32, "count": 2, "scale": (0.14, 1.0)},
    {"size": 16, "count": 4, "scale": (0.05, 0.14)},
]


def smooth_images(n, size=32, seed=0):
    """Natural-ish images: smooth colour gradients plus blobs, uint8 (n, size, size, 3)."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images = []
    for _ in range(n):
        channels = [
            g.uniform(0, 1) * xx + g.uniform(0, 1) * yy
            + g.uniform(0, 0.5) * np.sin(g.uniform(2, 9) * xx + g.uniform(0, 6))
            for _ in range(3)
        ]
        image = np.stack(channels, axis=-1)
        image = (image - image.min()) / (image.max() - image.min() + 1e-9)
        images.append((image * 255).astype(np.uint8))
    return np.stack(images)


def ks_statistic(a, b):
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    return np.abs(np.searchsorted(a, grid, "right") / len(a)
                  - np.searchsorted(b, grid, "right") / len(b)).max()


def augment(gpu, images, seed=0):
    """Draw for ``images`` as a worker does, then apply the draws."""
    batch, _, height, width = images.shape
    return gpu(images, gpu.draw(batch, height, width, torch.Generator().manual_seed(seed)))


def cpu_batch(transform, images):
    """The CPU path's batch as the model gets it: uint8 crops collated, then normalised."""
    samples = [(transform(Image.fromarray(im)), 0) for im in images]
    return [transform.normalize_on_device(g) for g in MultiCropCollate()(samples)[0]]


def test_same_structure_as_the_cpu_pipeline():
    transform = MultiCropTransform(crops=[*CIFAR_CROPS, {"size": 16, "count": 1,
                                                         "scale": (0.05, 0.3)}])
    images = smooth_images(5)
    cpu = cpu_batch(transform, images)
    gpu = augment(transform.batch_augmentation(), torch.from_numpy(images).permute(0, 3, 1, 2))
    # equal-sized groups in a row are merged, as the collate does
    assert [g.shape for g in gpu] == [g.shape for g in cpu] == [(10, 3, 32, 32), (25, 3, 16, 16)]
    assert all(g.dtype == torch.float32 for g in gpu)


@pytest.mark.parametrize("statistic", ["mean", "std"])
def test_crop_statistics_match_the_cpu_pipeline(statistic):
    # Same images, CIFAR recipe strengths: per-crop mean / std of the normalised crops are
    # distributed alike (two-sample KS on 2×800 global and 4×800 local crops; without the
    # colour jitter the statistic reaches 0.05-0.14, with it it stays near 0.03).
    torch.manual_seed(0)
    transform = MultiCropTransform(crops=CIFAR_CROPS, brightness=0.4, contrast=0.4,
                                   saturation=0.2, hue=0.1, blur_prob=0.0)
    images = smooth_images(800)
    cpu = cpu_batch(transform, images)
    gpu = augment(transform.batch_augmentation(), torch.from_numpy(images).permute(0, 3, 1, 2))
    for c, g in zip(cpu, gpu, strict=True):
        a = getattr(c.flatten(1), statistic)(1).numpy()
        b = getattr(g.flatten(1), statistic)(1).numpy()
        assert ks_statistic(a, b) < 0.045, (c.shape, statistic)


def test_rotated_and_shifted_crops_match_the_cpu_pipeline():
    # The demo's digit augmentation (crops of 60-100 %, rotations <= 15 degrees, shifts <= 10 %,
    # no colour): the fraction of black (uncovered) pixels and the per-crop mean and spread are
    # distributed alike on both paths (two-sample KS on 2 x 1500 crops).
    transform = MultiCropTransform(crops=[{"size": 16, "count": 2, "scale": (0.6, 1.0)}],
                                   rotation=15, translate=0.1, hflip_prob=0.0,
                                   color_jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0,
                                   mean=(0, 0, 0), std=(1, 1, 1))
    torch.manual_seed(0)
    images = np.clip(smooth_images(1500, size=16).astype(int) + 40, 0, 255).astype(np.uint8)
    cpu = cpu_batch(transform, images)[0]
    gpu = augment(transform.batch_augmentation(), torch.from_numpy(images).permute(0, 3, 1, 2))[0]
    for name, stat in (("black", lambda x: (x.amax(1) < 0.5 / 255).flatten(1).float().mean(1)),
                       ("mean", lambda x: x.flatten(1).mean(1)),
                       ("std", lambda x: x.flatten(1).std(1))):
        assert ks_statistic(stat(cpu).numpy(), stat(gpu).numpy()) < 0.05, name
    unrotated = MultiCropTransform(crops=[{"size": 16, "count": 2, "scale": (0.6, 1.0)}],
                                   hflip_prob=0.0, color_jitter_prob=0.0, grayscale_prob=0.0,
                                   blur_prob=0.0, mean=(0, 0, 0), std=(1, 1, 1))
    plain = augment(unrotated.batch_augmentation(), torch.from_numpy(images).permute(0, 3, 1, 2))
    assert (plain[0].amax(1) < 0.5 / 255).float().mean() == 0  # the black comes from the affine


MIXED = [(60, 80), (80, 60), (70, 70), (45, 90)]  # (height, width): landscape, portrait, square


def position_images(n):
    """uint8 images of the MIXED sizes in turn, whose red is the column's and green the row's
    position in the whole image (0-255) and blue noise: a crop's mean red and green say where
    in its image it was cut."""
    g = np.random.default_rng(0)
    images = []
    for k in range(n):
        height, width = MIXED[k % len(MIXED)]
        yy, xx = np.mgrid[0:height, 0:width]
        image = np.stack([255 * (xx + 0.5) / width, 255 * (yy + 0.5) / height,
                          g.uniform(0, 255, (height, width))], axis=-1)
        images.append(Image.fromarray(image.astype(np.uint8)))
    return images


def test_whole_image_crops_of_a_mixed_size_batch_match_the_cpu_pipeline():
    # Portrait, landscape and square images in one batch: per size, where the crops lie in
    # their image (their mean red and green) is distributed as RandomResizedCrop on the whole
    # image places them (KS on 2 × 300 global and 2 × 300 local crops per size; the box sizes
    # are compared exactly in test_batch_augment). Crops of each image's centre square reach
    # 0.16-0.33 on the non-square sizes; whole-image crops stay below 0.1.
    transform = MultiCropTransform(crops=[{"size": 16, "count": 2, "scale": (0.14, 1.0)},
                                          {"size": 8, "count": 2, "scale": (0.05, 0.14)}],
                                   hflip_prob=0.0, color_jitter_prob=0.0, grayscale_prob=0.0,
                                   blur_prob=0.0, mean=(0, 0, 0), std=(1, 1, 1), load_size=64)
    per_size = 300
    images = position_images(per_size * len(MIXED))
    torch.manual_seed(0)
    cpu = cpu_batch(transform, [np.asarray(image) for image in images])
    gpu = transform.batch_augmentation()
    prepared = [gpu.prepare(image) for image in images]
    heights = torch.tensor([image.shape[1] for image in prepared])
    widths = torch.tensor([image.shape[2] for image in prepared])
    out = gpu(gpu.stack(prepared), gpu.draw(len(images), heights, widths,
                                            torch.Generator().manual_seed(0)))
    owner = torch.arange(len(images)).repeat(2) % len(MIXED)  # crop-major
    for c, g in zip(cpu, out, strict=True):
        for k, size in enumerate(MIXED):
            for channel in (0, 1):
                a, b = (x[owner == k, channel].flatten(1).mean(1).numpy() for x in (c, g))
                assert ks_statistic(a, b) < 0.12, (size, channel)


def test_flip_and_grayscale_rates_follow_the_recipe():
    transform = MultiCropTransform(crops=[{"size": 16, "count": 1, "scale": (1.0, 1.0)}],
                                   hflip_prob=0.5, color_jitter_prob=0.0, grayscale_prob=0.2,
                                   blur_prob=0.0, mean=(0, 0, 0), std=(1, 1, 1))
    images = torch.from_numpy(smooth_images(2000, size=16)).permute(0, 3, 1, 2)
    out = augment(transform.batch_augmentation(), images, seed=1)[0]
    original = images.float() / 255
    grey = (out[:, 0] == out[:, 1]).flatten(1).all(1) & (out[:, 1] == out[:, 2]).flatten(1).all(1)
    luma = torch.tensor([0.2989, 0.587, 0.114]).view(1, 3, 1, 1)
    flipped = (((out - original.flip(-1)) * luma).sum(1).abs().flatten(1).amax(1) < 0.02)
    assert abs(grey.float().mean().item() - 0.2) < 4 * (0.2 * 0.8 / 2000) ** 0.5
    assert abs(flipped.float().mean().item() - 0.5) < 4 * (0.25 / 2000) ** 0.5


def test_deterministic_under_seeded_draws():
    transform = MultiCropTransform(crops=CIFAR_CROPS)
    images = torch.from_numpy(smooth_images(4)).permute(0, 3, 1, 2)
    gpu = transform.batch_augmentation()
    runs = [augment(gpu, images, s) for s in (3, 3, 4)]
    assert all(torch.equal(a, b) for a, b in zip(runs[0], runs[1], strict=True))
    assert not torch.equal(runs[0][0], runs[2][0])


def test_never_reads_tensor_values_on_the_host():
    # meta tensors hold no values: any device-to-host read raises
    gpu = MultiCropTransform(crops=CIFAR_CROPS, solarize_prob=0.2, rotation=10,
                             translate=0.1).batch_augmentation()
    draws = move_data_to_device(gpu.draw(4, 32, 32, torch.Generator().manual_seed(0)), "meta")
    out = gpu(torch.empty(4, 3, 32, 32, dtype=torch.uint8, device="meta"), draws)
    assert [tuple(g.shape) for g in out] == [(8, 3, 32, 32), (16, 3, 16, 16)]


def test_lightning_moves_every_draw_without_blocking(monkeypatch):
    # A copy to the GPU with non_blocking=False waits for the device to be idle: each of the
    # draws' tensors must reach the device as Lightning moves plain tensors, non-blocking.
    gpu = MultiCropTransform(crops=CIFAR_CROPS, blur_prob=0.5).batch_augmentation()
    draws = gpu.draw(4, 32, 32, torch.Generator().manual_seed(0))
    calls = []
    to = torch.Tensor.to

    def recording_to(tensor, *args, **kwargs):
        calls.append(kwargs.get("non_blocking", False))
        return to(tensor, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", recording_to)
    moved = move_data_to_device(draws, torch.device("meta"))  # like cuda: not a blocking type
    assert isinstance(moved, CropDraws) and moved.params.device.type == "meta"
    assert calls == [True] * (2 + len(draws.kernels))


def test_augmentations_left_off_by_the_recipe_leave_plain_crops():
    transform = MultiCropTransform(crops=[{"size": 16, "count": 2, "scale": (0.3, 1.0)}],
                                   hflip_prob=0.0, color_jitter_prob=0.0, grayscale_prob=0.0,
                                   blur_prob=0.0, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    gpu = transform.batch_augmentation()
    images = torch.from_numpy(smooth_images(6)).permute(0, 3, 1, 2)
    draws = gpu.draw(6, 32, 32, torch.Generator().manual_seed(0))
    assert draws.kernels == [None]
    crops = A.crop_resize(images.float() / 255, draws.rois, 16)
    torch.testing.assert_close(gpu(images, draws)[0], (crops - 0.5) / 0.25, atol=1e-5, rtol=0)


def test_draws_for_images_of_different_sizes_keep_each_crop_in_its_own_image():
    gpu = MultiCropTransform(crops=CIFAR_CROPS).batch_augmentation()
    heights, widths = torch.tensor([375, 500, 256]), torch.tensor([500, 281, 256])
    draws = gpu.draw(3, heights, widths, torch.Generator().manual_seed(0))
    image = draws.rois[:, 0].long()
    assert image.tolist() == [0, 1, 2] * 6  # crop-major, 2 global then 4 local crops
    x1, y1, x2, y2 = draws.rois[:, 1:].unbind(1)
    assert (x1 >= 0).all() and (y1 >= 0).all()
    assert (x2 <= widths[image]).all() and (y2 <= heights[image]).all()
    same = gpu.draw(3, 256, 256, torch.Generator().manual_seed(0))
    sized = gpu.draw(3, torch.full((3,), 256), torch.full((3,), 256),
                     torch.Generator().manual_seed(0))
    assert torch.equal(same.rois, sized.rois) and torch.equal(same.params, sized.params)


def test_draws_for_another_batch_are_refused():
    gpu = MultiCropTransform(crops=CIFAR_CROPS).batch_augmentation()
    draws = gpu.draw(4, 32, 32, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="the draws are for 24 crops, but a batch of 2"):
        gpu(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), draws)


@pytest.mark.parametrize("mode", ["L", "RGBA", "RGB"])
@pytest.mark.parametrize(("size", "prepared"), [((400, 300), (256, 341)), ((300, 400), (341, 256)),
                                                ((256, 256), (256, 256)), ((200, 150), (150, 200))])
def test_prepare_keeps_the_whole_image_with_its_shorter_side_at_most_load_size(mode, size,
                                                                               prepared):
    gpu = MultiCropTransform(crops=[{"size": 224, "count": 2, "scale": (0.14, 1.0)}])
    gpu = gpu.batch_augmentation()
    assert gpu.load_size == 256
    pixels = gpu.prepare(Image.new(mode, size))
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, *prepared)
    width, height = size
    assert tuple(int(s) for s in gpu.prepared_size(torch.tensor(height), torch.tensor(width))) \
        == prepared


def test_rejects_float_input():
    gpu = MultiCropTransform(crops=CIFAR_CROPS).batch_augmentation()
    draws = gpu.draw(2, 32, 32, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="uint8"):
        gpu(torch.rand(2, 3, 32, 32), draws)


def test_bicubic_crops_are_refused_on_the_device():
    transform = MultiCropTransform(crops=[{"size": 8, "count": 2, "scale": (0.5, 1.0),
                                           "interpolation": "bicubic"}])
    with pytest.raises(ValueError, match="resample bilinearly, not bicubic; set data.augment: cpu"):
        transform.batch_augmentation()
