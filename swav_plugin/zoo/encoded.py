"""Image files kept encoded until the training device decodes them: nvJPEG on a GPU, libjpeg
on a CPU.

DataLoader workers only read each file's bytes and the size in its header
(:func:`read_encoded`) and :func:`collate_encoded` packs a batch of them into one byte tensor,
a tenth of the decoded pixels. :func:`decode_resized` then, in the training process, decodes
every JPEG of the batch with one batched ``torchvision.io.decode_jpeg`` call on the training
device and resizes each image to the size its crops were drawn for.

What nvJPEG (or the batched call) refuses is decoded one file at a time, then by PIL on the
CPU (PNG and the other formats, and the JPEG corner cases such as CMYK), converted as
:func:`~swav_plugin.zoo.rgb.to_rgb` converts. A file no decoder reads is reported and
replaced by another image of its batch, so that the batch keeps its size.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torchvision.io import ImageReadMode, decode_jpeg

from swav_plugin.host.errors import ConfigError
from swav_plugin.zoo import batch_augment as A
from swav_plugin.zoo.rgb import MAX_PIXELS, open_image, to_rgb, unreadable_reason

_JPEG_START = (0xFF, 0xD8, 0xFF)


class EncodedImage(NamedTuple):
    """An image file's bytes, not decoded, with what its header says."""

    data: torch.Tensor  #: (n,) uint8, the whole file
    height: int
    width: int
    format: str  #: PIL's name of the file format: ``JPEG``, ``PNG``, ...
    index: int = -1  #: the sample's index in the data set it was read through (-1: none)


def read_encoded(path: str | os.PathLike[str], max_pixels: int | None = MAX_PIXELS) -> EncodedImage:
    """The file in ``path`` as bytes, with the height, width and format of its header.

    Only the header is parsed (PIL opens images lazily), so a DataLoader worker hands the
    compressed bytes on, a tenth of the decoded pixels, and the decoding happens where the
    batch goes. Raises what PIL raises for a file whose header it cannot read, and PIL's
    ``DecompressionBombError`` for an image of more than ``max_pixels`` pixels
    (:func:`~swav_plugin.zoo.rgb.open_image`), which is thus never decoded.
    """
    data = Path(path).read_bytes()
    with _open(data, max_pixels) as image:
        width, height = image.size
        file_format = image.format or ""
    return EncodedImage(torch.frombuffer(bytearray(data), dtype=torch.uint8), height, width,
                        file_format)


class EncodedBatch(NamedTuple):
    """A batch of image files, not decoded: every file's bytes one after another.

    ``heights`` and ``widths`` are the size each image is resized to once decoded (the size
    its crops were drawn for), ``indices`` each file's sample index in its data set.
    """

    data: Tensor  #: (total bytes,) uint8
    lengths: Tensor  #: (B,) bytes of each file
    heights: Tensor  #: (B,)
    widths: Tensor  #: (B,)
    indices: Tensor  #: (B,)

    def files(self) -> list[Tensor]:
        """Each file's bytes, views into :attr:`data`."""
        return list(torch.split(self.data, self.lengths.tolist()))


def collate_encoded(
    images: Sequence[EncodedImage], heights: Tensor, widths: Tensor
) -> EncodedBatch:
    """``images`` in one :class:`EncodedBatch`, to be resized to ``heights × widths``: one byte
    tensor rather than one per file, for one shared-memory transfer and one pinned copy."""
    return EncodedBatch(torch.cat([image.data for image in images]),
                        torch.tensor([len(image.data) for image in images]),
                        torch.as_tensor(heights), torch.as_tensor(widths),
                        torch.tensor([image.index for image in images]))


def is_jpeg(data: Tensor) -> bool:
    """Whether ``data`` starts as a JPEG file does (SOI marker, then another marker)."""
    return len(data) >= 3 and tuple(data[:3].tolist()) == _JPEG_START


def _open(data: bytes, max_pixels: int | None = None) -> Image.Image:
    """PIL's lazy image of a file's bytes (:func:`~swav_plugin.zoo.rgb.open_image`); an
    unknown format raises naming no buffer object."""
    try:
        return open_image(io.BytesIO(data), max_pixels)
    except UnidentifiedImageError:
        raise UnidentifiedImageError("cannot identify the image format") from None


def _decode_with_pil(data: Tensor, device: torch.device) -> Tensor:
    with _open(data.numpy().tobytes()) as image:
        image.load()
        pixels = np.asarray(to_rgb(image))
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).to(device)


def decode_files(
    files: Sequence[Tensor], device: torch.device | str
) -> tuple[list[Tensor | None], list[str]]:
    """Each file decoded to a (3, h, w) ``uint8`` RGB image on ``device``, or ``None``.

    The JPEGs go through one batched ``decode_jpeg`` call; if it fails (one bad file fails the
    call), each alone; what ``decode_jpeg`` refuses, and the other formats, through PIL on the
    CPU. Returns the images and, for each ``None``, why the last decoder refused the file.
    """
    device = torch.device(device)
    images: list[Tensor | None] = [None] * len(files)
    reasons = [""] * len(files)
    jpegs = [i for i, data in enumerate(files) if is_jpeg(data)]
    is_jpeg_file = set(jpegs)
    if jpegs:
        try:
            decoded = decode_jpeg([files[i] for i in jpegs], mode=ImageReadMode.RGB,
                                  device=device)
        except (RuntimeError, ValueError):
            decoded = [None] * len(jpegs)
        for i, image in zip(jpegs, decoded, strict=True):
            images[i] = image
    for i, data in enumerate(files):
        if images[i] is not None:
            continue
        if i in is_jpeg_file:
            try:
                images[i] = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
                continue
            except (RuntimeError, ValueError):
                pass
        try:
            images[i] = _decode_with_pil(data, device)
        # PIL raises many types for a bad file (see SkippingImageFolder)
        except Exception as exc:
            reasons[i] = unreadable_reason(exc)
    return images, reasons


def decode_resized(
    batch: EncodedBatch,
    device: torch.device | str,
    on_unreadable: Callable[[int, str], None],
) -> list[Tensor]:
    """The batch's images decoded on ``device`` (:func:`decode_files`), each resized to its
    size: ``uint8`` (3, h, w) tensors.

    A file that cannot be decoded is reported as ``on_unreadable(sample index, reason)`` and
    replaced by the next decodable image of the batch (wrapping round), resized to the size
    its own crops were drawn for. Raises :class:`ConfigError` when none can be decoded.
    """
    images, reasons = decode_files(batch.files(), device)
    good = [i for i, image in enumerate(images) if image is not None]
    indices = batch.indices.tolist()
    if not good:
        raise ConfigError(
            f"none of the {len(images)} image files of a batch can be decoded (sample "
            f"{indices[0]}: {reasons[0]}); check the data set's files"
        )
    for i, image in enumerate(images):
        if image is None:
            on_unreadable(indices[i], reasons[i])
            images[i] = images[next((j for j in good if j > i), good[0])]
    return A.resize_images(images, batch.heights, batch.widths)
