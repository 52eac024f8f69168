import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from torchvision import transforms as T

from swav_plugin.swav.multicrop import MultiCropCollate, MultiCropTransform


def image(size=64, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def test_default_is_the_papers_imagenet_setting():
    t = MultiCropTransform()
    assert t.crop_sizes == [224, 224] + [96] * 6
    assert [tuple(g["scale"]) for g in t.groups] == [(0.14, 1.0), (0.05, 0.14)]
    crops = t(image(256))
    assert [c.shape for c in crops] == [(3, 224, 224)] * 2 + [(3, 96, 96)] * 6
    assert all(c.dtype == torch.uint8 for c in crops)  # normalised on the device


def test_normalize_on_device_is_to_tensor_then_normalize():
    t = MultiCropTransform(crops=[{"size": 32, "count": 1, "scale": (1.0, 1.0)}],
                           mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    pictures = [image(32, seed=s) for s in range(3)]
    crops = torch.stack([t(p)[0] for p in pictures])
    reference = T.Compose([T.ToTensor(), T.Normalize((0.4, 0.5, 0.6), (0.2, 0.25, 0.3))])
    expected = torch.stack([reference(T.ToPILImage()(c)) for c in crops])
    torch.testing.assert_close(t.normalize_on_device(crops), expected)


def test_per_group_overrides():
    t = MultiCropTransform(
        crops=[{"size": 32, "count": 2, "scale": [0.5, 1.0], "blur_prob": 1.0},
               {"size": 16, "count": 3, "scale": [0.1, 0.5], "solarize_prob": 0.5}],
        blur_prob=0.0,
    )
    assert [g["blur_prob"] for g in t.groups] == [1.0, 0.0]
    assert [g["solarize_prob"] for g in t.groups] == [0.0, 0.5]
    names = [[type(s).__name__ for s in p.transforms] for p in t.pipelines]
    assert "RandomApply" in names[0][-1:] and "RandomSolarize" in names[1]
    assert t.crop_sizes == [32, 32, 16, 16, 16]


def test_crop_area_and_aspect_within_range():
    # Pixel (x, y) of a 256 x 256 image holds R = x, G = y, so the corners of each crop
    # reveal the box it was cut from: its area fraction must lie in the configured scale.
    t = MultiCropTransform(crops=[{"size": 40, "count": 1, "scale": [0.3, 0.6]}], hflip_prob=0,
                           color_jitter_prob=0, grayscale_prob=0, blur_prob=0)
    xs, ys = np.meshgrid(np.arange(256), np.arange(256))
    coords = Image.fromarray(np.stack([xs, ys, np.zeros_like(xs)], -1).astype(np.uint8))
    torch.manual_seed(0)
    areas, aspects = [], []
    for _ in range(300):
        crop = t(coords)[0].float()
        width = crop[0, 0, -1] - crop[0, 0, 0] + 256 / 40
        height = crop[1, -1, 0] - crop[1, 0, 0] + 256 / 40
        areas.append(float(width * height) / 256**2)
        aspects.append(float(width / height))
    assert min(areas) > 0.27 and max(areas) < 0.65, (min(areas), max(areas))
    assert np.mean(areas) == pytest.approx(0.45, abs=0.03)  # uniform in scale
    assert min(aspects) > 0.7 and max(aspects) < 1.4  # torchvision's (3/4, 4/3)


@pytest.mark.parametrize(
    ("crops", "message"),
    [
        ([], "at least one crop group"),
        ([{"size": 32, "count": 2}], r"crops\[0\] lacks scale"),
        ([{"size": 32, "count": 2, "scale": [0.5, 1.5]}], "scale must satisfy"),
        ([{"size": 32, "count": 2, "scale": [0.5, 1.0], "sclae": 1}], "did you mean 'scale'"),
        ([{"size": 32, "count": 0, "scale": [0.5, 1.0]}], "size and count must be positive"),
        ([{"size": 32, "count": 1, "scale": [0.5, 1.0], "blur_prob": 2}], "blur_prob must be in"),
        ([{"size": 8, "count": 1, "scale": [0.5, 1.0], "rotation": -5}], "rotation must be in"),
        ([{"size": 8, "count": 1, "scale": [0.5, 1.0], "translate": 1}], "translate must be in"),
        ([{"size": 8, "count": 1, "scale": [0.5, 1.0], "interpolation": "cubic"}],
         "interpolation must be one of bilinear, bicubic"),
    ],
)
def test_invalid_crop_groups(crops, message):
    with pytest.raises(ValueError, match=message):
        MultiCropTransform(crops=crops)


def plain(**overrides):
    """One 32 px crop of the whole image, every augmentation off unless overridden."""
    options = {"hflip_prob": 0, "color_jitter_prob": 0, "grayscale_prob": 0, "blur_prob": 0}
    crops = [{"size": 32, "count": 1, "scale": (1.0, 1.0)}]
    return MultiCropTransform(crops=crops, **{**options, **overrides})


def test_blur_is_pils_gaussian_blur_with_a_radius_from_the_range():
    picture = image(32)
    torch.manual_seed(0)
    blurred = plain(blur_prob=1.0, blur_sigma=(1.3, 1.3))(picture)[0]
    expected = T.PILToTensor()(picture.filter(ImageFilter.GaussianBlur(radius=1.3)))
    torch.testing.assert_close(blurred, expected)


def test_bicubic_interpolation_is_used_for_the_resized_crop():
    picture = image(64)
    torch.manual_seed(0)
    bicubic = plain(interpolation="bicubic")(picture)[0] / 255
    expected = T.ToTensor()(picture.resize((32, 32), Image.BICUBIC))
    bilinear = T.ToTensor()(picture.resize((32, 32), Image.BILINEAR))
    assert (bicubic - expected).abs().max() < 2 / 255  # PIL vs torchvision's antialiasing
    assert (bicubic - bilinear).abs().max() > 0.05  # far from bilinear


def test_rotation_and_translation_keep_a_centred_digit_inside_the_crop():
    # A small square in the middle: shifts of at most 1/8 of the side and 15 degrees move
    # its centre of mass by at most 4 px, and do move it.
    square = np.zeros((32, 32, 3), dtype=np.uint8)
    square[12:20, 12:20] = 255
    transform = plain(rotation=15, translate=0.125)
    torch.manual_seed(0)
    shifts = []
    for _ in range(50):
        crop = transform(Image.fromarray(square))[0][0].float()
        ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
        mass = crop.sum()
        shifts.append(((xs * crop).sum() / mass - 15.5, (ys * crop).sum() / mass - 15.5))
    largest = max(max(abs(float(dx)), abs(float(dy))) for dx, dy in shifts)
    assert 1.0 < largest <= 4.5


def test_collate_groups_resolutions_crop_major():
    samples = []
    for i in range(3):  # image i's crop c is filled with 10*i + c
        crops = [torch.full((1, s, s), 10.0 * i + c) for c, s in enumerate([8, 8, 4, 4, 4])]
        samples.append((crops, i))
    groups, labels = MultiCropCollate()(samples)
    assert [g.shape for g in groups] == [(6, 1, 8, 8), (9, 1, 4, 4)]
    assert labels.tolist() == [0, 1, 2]
    # crop-major: crop 0 of images 0,1,2 then crop 1 of images 0,1,2 ...
    assert groups[0][:, 0, 0, 0].tolist() == [0, 10, 20, 1, 11, 21]
    assert groups[1][:, 0, 0, 0].tolist() == [2, 12, 22, 3, 13, 23, 4, 14, 24]


def test_collate_output_order_matches_transform_order():
    t = MultiCropTransform(crops=[{"size": 16, "count": 2, "scale": [0.5, 1.0]},
                                 {"size": 8, "count": 2, "scale": [0.2, 0.5]}])
    groups, _ = MultiCropCollate()([(t(image(32, seed=s)), s) for s in range(4)])
    assert [g.shape for g in groups] == [(8, 3, 16, 16), (8, 3, 8, 8)]
