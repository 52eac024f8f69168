"""Image files as they turn up in real folders: odd modes, 16 bits, tiny, broken, not images."""

import copy
import errno
import logging
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import RandomResizedCrop

from swav_plugin.host.errors import ConfigError
from swav_plugin.host.registry import DATASETS
from swav_plugin.host.resolve import resolve
from swav_plugin.host.runner import run
from swav_plugin.swav.gpu_multicrop import GPUMultiCrop
from swav_plugin.zoo.images import SkippingImageFolder
from swav_plugin.zoo.rgb import load_rgb, to_rgb


def _pixels(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image)


def _png16_rgb(path: Path, value: int, width: int = 3, height: int = 2) -> None:
    """A 16-bit-per-channel RGB PNG written by hand (PIL cannot save one)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    row = b"\x00" + struct.pack(f">{3 * width}H", *[value] * (3 * width))  # filter byte, samples
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(row * height)) + chunk(b"IEND", b""))


def test_grey_palette_and_bilevel_become_rgb(tmp_path):
    Image.fromarray(np.array([[0, 100, 255]], np.uint8)).save(tmp_path / "l.png")
    assert _pixels(load_rgb(tmp_path / "l.png"))[0].tolist() == [[0] * 3, [100] * 3, [255] * 3]

    palette = Image.fromarray(np.array([[0, 1]], np.uint8), mode="P")
    palette.putpalette([200, 10, 20, 30, 40, 250])
    palette.save(tmp_path / "p.png")
    assert _pixels(load_rgb(tmp_path / "p.png"))[0].tolist() == [[200, 10, 20], [30, 40, 250]]

    Image.fromarray(np.array([[0, 255]], np.uint8)).convert("1").save(tmp_path / "b.png")
    assert _pixels(load_rgb(tmp_path / "b.png"))[0].tolist() == [[0] * 3, [255] * 3]


def test_cmyk_becomes_rgb(tmp_path):
    cmyk = np.array([[[0, 255, 255, 0], [0, 0, 0, 0], [0, 0, 0, 255]]], np.uint8)
    Image.frombytes("CMYK", (3, 1), cmyk.tobytes()).save(tmp_path / "c.tif")
    assert Image.open(tmp_path / "c.tif").mode == "CMYK"
    assert _pixels(load_rgb(tmp_path / "c.tif"))[0].tolist() == [[255, 0, 0], [255] * 3, [0] * 3]


def test_transparency_is_composited_over_white(tmp_path):
    # the transparent pixel stores black: dropping the alpha channel would show black
    rgba = np.array([[[200, 0, 0, 255], [0, 0, 0, 0], [0, 0, 100, 128]]], np.uint8)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    assert _pixels(load_rgb(tmp_path / "rgba.png"))[0].tolist() == [
        [200, 0, 0], [255, 255, 255], [127, 127, 177]
    ]
    Image.fromarray(np.array([[[60, 255], [0, 0]]], np.uint8), mode="LA").save(tmp_path / "la.png")
    assert _pixels(load_rgb(tmp_path / "la.png"))[0].tolist() == [[60] * 3, [255] * 3]

    palette = Image.fromarray(np.array([[0, 1]], np.uint8), mode="P")
    palette.putpalette([0, 0, 0, 30, 40, 250])
    palette.save(tmp_path / "pt.png", transparency=0)
    assert _pixels(load_rgb(tmp_path / "pt.png"))[0].tolist() == [[255] * 3, [30, 40, 250]]


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 128 * 257, 50 * 257 + 200, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    image = load_rgb(tmp_path / "g16.png")
    # mid-grey stays mid-grey (PIL's convert("RGB") makes everything above 255 white)
    assert _pixels(image)[0].tolist() == [[0] * 3, [128] * 3, [50] * 3, [255] * 3]
    big_endian = Image.fromarray(values.astype(">u2"))
    assert big_endian.mode == "I;16B"
    assert _pixels(to_rgb(big_endian))[0, :, 0].tolist() == [0, 128, 50, 255]
    as_int32 = Image.fromarray(values.astype(np.int32))
    assert as_int32.mode == "I"
    assert _pixels(to_rgb(as_int32))[0, :, 0].tolist() == [0, 128, 50, 255]


def test_sixteen_bit_rgb_png_is_scaled(tmp_path):
    _png16_rgb(tmp_path / "rgb16.png", 128 * 257)
    image = load_rgb(tmp_path / "rgb16.png")
    assert image.size == (3, 2)
    assert (_pixels(image) == 128).all()


def test_pixels_without_an_8_bit_scale_are_refused():
    with pytest.raises(ValueError, match="no 8-bit scale"):
        to_rgb(Image.fromarray(np.array([[-5, 70000]], np.int32)))
    with pytest.raises(ValueError, match="mode F"):
        to_rgb(Image.fromarray(np.array([[0.5]], np.float32)))


@pytest.mark.parametrize("size", [(1, 1), (5, 3)])
def test_tiny_images_go_through_both_crop_pipelines(tmp_path, size):
    width, height = size
    (tmp_path / "train" / "a").mkdir(parents=True)
    Image.new("RGB", size, (10, 200, 30)).save(tmp_path / "train" / "a" / "tiny.png")
    image, _ = DATASETS.create("image_folder", root=str(tmp_path))[0]
    assert image.size == (width, height)

    crop = RandomResizedCrop(32)(image)
    assert crop.size == (32, 32)
    assert (_pixels(crop) == [10, 200, 30]).all()
    gpu = GPUMultiCrop([], (0.5,) * 3, (0.5,) * 3, load_size=24)
    prepared = gpu.prepare(image)
    assert prepared.shape == (3, height, width) and prepared.dtype == torch.uint8  # not enlarged
    assert (prepared.permute(1, 2, 0) == torch.tensor([10, 200, 30], dtype=torch.uint8)).all()
    folder = DATASETS.create("image_folder", root=str(tmp_path)).encoded()
    encoded, _ = folder[0]
    sizes = [torch.tensor([side]) for side in gpu.prepared_size(encoded.height, encoded.width)]
    decoded = folder.decode(folder.collate([encoded], *sizes), torch.device("cpu"))[0]
    assert torch.equal(decoded, prepared)


def _write_jpeg_then_truncate(path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _write_png_then_truncate(path: Path) -> None:
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture
def mixed_folder(tmp_path):
    """Sample order (class, then file name): good images carry their index as grey value."""
    root = tmp_path / "train"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    for name in ("a/0.png", "a/4.png", "b/6.png"):
        Image.new("L", (6, 4), int(name[2]) * 10).save(root / name)
    _write_jpeg_then_truncate(root / "a/1_truncated.jpg")
    (root / "a/2_empty.jpg").write_bytes(b"")
    (root / "a/3_text.jpg").write_text("not an image\n")
    _write_png_then_truncate(root / "b/5_truncated.png")
    (root / "b/7_empty.png").write_bytes(b"")
    bad = [str(root / n) for n in
           ("a/1_truncated.jpg", "a/2_empty.jpg", "a/3_text.jpg", "b/5_truncated.png",
            "b/7_empty.png")]
    return tmp_path, bad


def test_unreadable_files_are_replaced_by_the_next_readable_sample(mixed_folder, caplog):
    root, bad = mixed_folder
    dataset = DATASETS.create("image_folder", root=str(root))
    assert isinstance(dataset, SkippingImageFolder) and len(dataset) == 8
    with caplog.at_level(logging.WARNING, logger="swav_plugin.zoo.images"):
        samples = [dataset[i] for i in range(len(dataset))]
        # a second epoch: the flagged files are neither decoded nor logged again
        assert [dataset[i][1] for i in range(len(dataset))] == [s[1] for s in samples]
    # 1–3 → 4, 5 → 6, and the last one wraps round to 0
    greys = [int(_pixels(image)[0, 0, 0]) // 10 for image, _ in samples]
    assert greys == [0, 4, 4, 4, 4, 6, 6, 0]
    assert [label for _, label in samples] == [0, 0, 0, 0, 0, 1, 1, 0]
    assert dataset.skipped_count == 5
    assert dataset.skipped_paths() == bad

    lines = [r.getMessage() for r in caplog.records if r.name == "swav_plugin.zoo.images"]
    assert len(lines) == 5 and all("\n" not in line for line in lines)
    assert [line.split(": ")[0] for line in lines] == [f"skipped unreadable image {p}" for p in bad]
    assert "truncated" in lines[0] and "truncated" in lines[3]
    assert "cannot identify image file" in lines[1] and "cannot identify" in lines[2]
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_the_count_is_shared_by_dataloader_workers(mixed_folder):
    root, bad = mixed_folder
    dataset = DATASETS.create("image_folder", root=str(root))
    loader = DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=list,
                        persistent_workers=True)
    batches = list(loader)
    assert [len(b) for b in batches] == [2, 2, 2, 2]
    # nothing was read in this process: the count is the workers'
    assert dataset.skipped_count == 5
    assert dataset.skipped_paths() == bad
    assert len(list(loader)) == 4 and dataset.skipped_count == 5


def test_a_folder_with_no_readable_image_is_a_config_error(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "train" / "a" / "x.jpg").write_bytes(b"")
    (tmp_path / "train" / "a" / "y.png").write_text("text")
    dataset = DATASETS.create("image_folder", root=str(tmp_path))
    with pytest.raises(ConfigError, match=r"image folder '.*train': none of its 2 image") as err:
        dataset[1]
    assert "\n" not in str(err.value)
    assert dataset.skipped_count == 2


@pytest.mark.parametrize("augment", ["cpu", "gpu"])
def test_a_run_over_broken_images_trains_and_reports_them(mixed_folder, tiny_recipe, capsys,
                                                          augment):
    # gpu: the worker skips the files without a header, the training process the truncated
    root, bad = mixed_folder
    recipe = copy.deepcopy(tiny_recipe)
    recipe["data"].update(dataset={"name": "image_folder", "root": str(root)}, batch_size=4,
                          num_workers=1, augment=augment)
    recipe["method"]["head"]["num_prototypes"] = 4
    trainer = run(resolve(recipe))
    assert trainer.global_step == 2  # the 8 samples, 2 batches of 4
    err = capsys.readouterr().err
    assert "swav-train: warning: 5 unreadable image(s) were skipped" in err


def test_a_storage_error_skips_the_file_this_time_only(mixed_folder, monkeypatch, caplog):
    root, _ = mixed_folder
    dataset = DATASETS.create("image_folder", root=str(root))
    load = dataset.loader
    failures = iter([OSError(errno.EIO, "Input/output error")])

    def flaky(path):
        error = next(failures, None)
        if error is not None:
            raise error
        return load(path)

    monkeypatch.setattr(dataset, "loader", flaky)
    with caplog.at_level(logging.WARNING, logger="swav_plugin.zoo.images"):
        first = dataset[0]
    assert "could not read image" in caplog.text and "this time" in caplog.text
    assert int(_pixels(first[0])[0, 0, 0]) == 10 * 4  # the next readable sample, this time
    assert int(_pixels(dataset[0][0])[0, 0, 0]) == 0  # read again, and this time it loads
    assert str(root / "train" / "a" / "0.png") not in dataset.skipped_paths()


def test_the_encoded_folder_skips_bad_headers_in_the_worker_and_bad_pixels_at_the_decode(
    mixed_folder, caplog
):
    root, bad = mixed_folder
    folder = DATASETS.create("image_folder", root=str(root))
    encoded = folder.encoded()
    assert len(encoded) == len(folder) == 8
    with caplog.at_level(logging.WARNING, logger="swav_plugin.zoo.images"):
        samples = [encoded[i] for i in range(len(encoded))]
        # the empty and text files have no header: 2, 3 → 4 and 7 → 0, as the folder skips;
        # the truncated files' headers read, so they come through as themselves
        assert [image.index for image, _ in samples] == [0, 1, 4, 4, 4, 5, 6, 0]
        assert [label for _, label in samples] == [0, 0, 0, 0, 0, 1, 1, 0]
        assert folder.skipped_count == 3
        images = [image for image, _ in samples]
        heights, widths = (torch.tensor(side) for side in
                           zip(*map(encoded.image_size, images), strict=True))
        decoded = encoded.decode(encoded.collate(images, heights, widths), torch.device("cpu"))
    # 1 and 5 do not decode: replaced by the next image of the batch, at their own size
    assert [int(image[0, 0, 0]) // 10 for image in decoded] == [0, 4, 4, 4, 4, 6, 6, 0]
    assert [tuple(image.shape) for image in decoded][1] == (3, 64, 64)
    assert folder.skipped_count == 5 and folder.skipped_paths() == bad
    lines = [r.getMessage() for r in caplog.records if r.name == "swav_plugin.zoo.images"]
    assert sorted(line.split(": ")[0] for line in lines) == \
        sorted(f"skipped unreadable image {p}" for p in bad)
    # flagged from the decode, the truncated files are skipped by the workers from now on
    assert encoded[1][0].index == 4 and folder[5][1] == 1 and encoded[5][0].index == 6
