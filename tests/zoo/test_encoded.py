"""Image files kept encoded until the training device decodes them (the CPU here)."""

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image

from swav_plugin.host.errors import ConfigError
from swav_plugin.zoo import encoded as E
from swav_plugin.zoo.encoded import read_encoded
from swav_plugin.zoo.rgb import load_rgb

CPU = torch.device("cpu")


@pytest.mark.parametrize(("suffix", "mode"), [("jpg", "RGB"), ("jpg", "L"), ("png", "RGB"),
                                               ("png", "P")])
def test_read_encoded_keeps_the_bytes_and_reads_only_the_header(tmp_path, suffix, mode):
    pixels = np.random.default_rng(0).integers(0, 256, (23, 37, 3), dtype=np.uint8)
    path = tmp_path / f"image.{suffix}"
    Image.fromarray(pixels).convert(mode).save(path)
    encoded = read_encoded(path)
    assert encoded.data.dtype == torch.uint8 and encoded.data.numpy().tobytes() == path.read_bytes()
    assert (encoded.height, encoded.width) == (23, 37)
    assert encoded.format == ("JPEG" if suffix == "jpg" else "PNG")
    # decoded later, the bytes give the loader's pixels (the same libjpeg-turbo for JPEGs)
    decoded = decode_image(encoded.data, mode=ImageReadMode.RGB).permute(1, 2, 0).numpy()
    assert np.abs(decoded.astype(int) - np.asarray(load_rgb(path)).astype(int)).max() <= 1


def test_read_encoded_refuses_a_file_without_an_image_header(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_bytes(b"not an image")
    with pytest.raises(OSError, match="cannot identify the image format"):
        read_encoded(path)


def _files(tmp_path, kinds):
    """One file per kind, 23 × 37 noise-and-gradient pixels (a truncated file 64 × 64):
    ``(paths, EncodedImages)``, the images with sample indices 10, 11, ..."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 200, 37, dtype=np.uint8)[None, :, None]
    pixels = np.clip(ramp + rng.integers(0, 50, (23, 37, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    paths = []
    for k, kind in enumerate(kinds):
        path = tmp_path / f"{k}_{kind}"
        {"jpeg": lambda p: image.save(p, "JPEG", quality=90),
         "grey_jpeg": lambda p: image.convert("L").save(p, "JPEG"),
         "cmyk_jpeg": lambda p: image.convert("CMYK").save(p, "JPEG"),
         "progressive_jpeg": lambda p: image.save(p, "JPEG", progressive=True),
         "png": lambda p: image.save(p, "PNG"),
         "rgba_png": lambda p: image.convert("RGBA").save(p, "PNG"),
         "truncated_jpeg": lambda p: p.write_bytes(_half_a_jpeg(rng))}[kind](path)
        paths.append(path)
    return paths, [read_encoded(p)._replace(index=10 + k) for k, p in enumerate(paths)]


def _half_a_jpeg(rng):
    """The first half of a 64 × 64 noise JPEG: its header reads, its pixels do not decode."""
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()[:len(buffer.getvalue()) // 2]


ALL_KINDS = ["jpeg", "grey_jpeg", "cmyk_jpeg", "progressive_jpeg", "png", "rgba_png"]


def test_collate_packs_the_files_in_one_tensor_and_gives_them_back(tmp_path):
    _, images = _files(tmp_path, ["jpeg", "png", "grey_jpeg"])
    batch = E.collate_encoded(images, torch.tensor([5, 6, 7]), torch.tensor([8, 9, 10]))
    assert batch.data.dim() == 1 and len(batch.data) == sum(len(i.data) for i in images)
    for file, image in zip(batch.files(), images, strict=True):
        assert torch.equal(file, image.data)
    assert batch.heights.tolist() == [5, 6, 7] and batch.indices.tolist() == [10, 11, 12]


def test_every_kind_of_file_decodes_to_the_loaders_pixels(tmp_path):
    paths, images = _files(tmp_path, ALL_KINDS)
    assert [E.is_jpeg(image.data) for image in images] == [True] * 4 + [False] * 2
    decoded, reasons = E.decode_files([image.data for image in images], CPU)
    assert reasons == [""] * len(ALL_KINDS)
    for path, image in zip(paths, decoded, strict=True):
        expected = torch.from_numpy(np.asarray(load_rgb(path)).copy()).permute(2, 0, 1)
        assert image.dtype == torch.uint8 and image.shape == expected.shape
        assert (image.int() - expected.int()).abs().max() <= 1, path.name


def test_a_refused_batched_decode_falls_back_to_each_file_then_to_pil(tmp_path, monkeypatch):
    paths, images = _files(tmp_path, ["jpeg", "cmyk_jpeg", "jpeg"])
    expected, _ = E.decode_files([image.data for image in images], CPU)
    calls = []
    real = E.decode_jpeg

    def refusing(data, **kwargs):  # as nvJPEG refusing a batch with a CMYK file, and that file
        calls.append(len(data) if isinstance(data, list) else 1)
        if isinstance(data, list) or data is images[1].data:
            raise RuntimeError("nvjpeg: unsupported")
        return real(data, **kwargs)

    monkeypatch.setattr(E, "decode_jpeg", refusing)
    decoded, reasons = E.decode_files([image.data for image in images], CPU)
    assert calls == [3, 1, 1, 1] and reasons == [""] * 3  # the batch, then each; PIL for one
    for got, want in zip(decoded, expected, strict=True):
        assert torch.equal(got, want)


def test_undecodable_files_are_reported_and_replaced_by_the_next_image(tmp_path):
    _, images = _files(tmp_path, ["truncated_jpeg", "png", "truncated_jpeg", "jpeg"])
    batch = E.collate_encoded(images, torch.tensor([23, 23, 30, 23]),
                              torch.tensor([37, 37, 40, 37]))
    reported = []
    decoded = E.decode_resized(batch, CPU, lambda index, reason: reported.append((index, reason)))
    assert [index for index, _ in reported] == [10, 12]
    assert all("truncated" in reason and "\n" not in reason for _, reason in reported)
    png, jpeg = E.decode_files([images[1].data, images[3].data], CPU)[0]
    assert torch.equal(decoded[0], png) and torch.equal(decoded[1], png)
    assert decoded[2].shape == (3, 30, 40)  # the next image (3), at the size drawn for 2
    assert torch.equal(decoded[3], jpeg)


def test_a_batch_with_no_decodable_file_is_a_config_error(tmp_path):
    _, images = _files(tmp_path, ["truncated_jpeg", "truncated_jpeg"])
    batch = E.collate_encoded(images, torch.tensor([23, 23]), torch.tensor([37, 37]))
    with pytest.raises(ConfigError, match=r"none of the 2 image files of a batch can be decoded "
                                          r"\(sample 10: .*truncated.*\); check") as err:
        E.decode_resized(batch, CPU, lambda index, reason: None)
    assert "\n" not in str(err.value)
