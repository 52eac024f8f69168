"""Image files read for training without a bad file ending a run.

:func:`load_rgb` turns any readable file into an 8-bit RGB image; :func:`read_encoded` reads a
file's bytes and its header's size without decoding, for a batch decoded later on the training
device; :class:`SkippingImageFolder`
replaces the samples whose files cannot be read by the next readable ones, logs each such file
once and keeps a count that DataLoader worker processes share with the main process.
"""

from __future__ import annotations

import errno
import io
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torchvision
from PIL import Image

from swav_plugin.host.errors import ConfigError

logger = logging.getLogger(__name__)
#: Errors of the storage rather than of the file (I/O error, too many open files, a stale or
#: timed-out network file system, an interrupted call): the file is tried again next time.
_TRANSIENT = {errno.EIO, errno.EMFILE, errno.ENFILE, errno.ESTALE, errno.ETIMEDOUT,
              errno.EAGAIN, errno.EINTR}

_SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N"}
_WHITE = (255, 255, 255, 255)


def load_rgb(path: str | os.PathLike[str]) -> Image.Image:
    """The image in ``path`` as an 8-bit RGB image (see :func:`to_rgb`).

    The pixels are decoded here, so a truncated file raises here rather than later in a
    transform. Raises whatever PIL raises for an unreadable file (mostly ``OSError``).
    """
    with Image.open(path) as image:
        image.load()
        return to_rgb(image)


class EncodedImage(NamedTuple):
    """An image file's bytes, not decoded, with what its header says."""

    data: torch.Tensor  #: (n,) uint8, the whole file
    height: int
    width: int
    format: str  #: PIL's name of the file format: ``JPEG``, ``PNG``, ...


def read_encoded(path: str | os.PathLike[str]) -> EncodedImage:
    """The file in ``path`` as bytes, with the height, width and format of its header.

    Only the header is parsed (PIL opens images lazily), so a DataLoader worker hands the
    compressed bytes on, a tenth of the decoded pixels, and the decoding happens where the
    batch goes. Raises what PIL raises for a file whose header it cannot read.
    """
    data = Path(path).read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        file_format = image.format or ""
    return EncodedImage(torch.frombuffer(bytearray(data), dtype=torch.uint8), height, width,
                        file_format)


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as a new 8-bit RGB image.

    - 16-bit grey (``I;16*``, and ``I`` whose values lie in 0–65535, as 16-bit PNG and TIFF
      decode) is scaled by ``v >> 8``, where PIL's own conversion would clip to 255 (white).
      16-bit RGB(A) PNGs already decode to 8-bit ``RGB(A)`` in PIL.
    - Transparency (``RGBA``, ``LA``, ``PA``, a palette or grey transparent colour) is composited
      over white, as a viewer shows it; dropping alpha would instead expose whatever colour the
      file stores under transparent pixels (often black).
    - Every other mode (``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, …) goes through PIL's
      ``convert("RGB")``.

    Raises ``ValueError`` for floating-point (``F``) images and ``I`` images outside 0–65535:
    they have no known 8-bit scale, and a guessed one would silently corrupt the data.
    """
    if image.mode in _SIXTEEN_BIT or image.mode == "I":
        pixels = np.asarray(image)
        if image.mode == "I" and (pixels.min() < 0 or pixels.max() > 65535):
            raise ValueError(
                f"32-bit integer pixels in {pixels.min()}..{pixels.max()} have no 8-bit scale"
            )
        image = Image.fromarray((pixels >> 8).astype(np.uint8))
    elif image.mode == "F":
        raise ValueError("floating-point pixels (mode F) have no 8-bit scale")
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, _WHITE), rgba).convert("RGB")
    return image.convert("RGB")


class SkippingImageFolder(torchvision.datasets.ImageFolder):
    """An ImageFolder (``root/class_name/image``) read with :func:`load_rgb`, where a file that
    cannot be read does not stop the run.

    Such a sample is replaced by the next readable one (index + 1, + 2, …, wrapping round), so
    batches keep their size (SwAV's Sinkhorn needs equal batches). Its file is logged once at
    WARNING on the ``swav_plugin.zoo.images`` logger as ``skipped unreadable image PATH:
    REASON`` and flagged in shared memory, so it is not decoded again and the flags set in
    DataLoader worker processes (fork or spawn) are seen by the process that built the data set.

    For a run's summary, in the main process: :attr:`skipped_count` (files found unreadable so
    far, each counted once) and :meth:`skipped_paths`. ``__getitem__`` raises
    :class:`~swav_plugin.host.errors.ConfigError` when no file in the folder can be read.
    """

    def __init__(
        self,
        root: str,
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[int], Any] | None = None,
    ) -> None:
        super().__init__(
            root, transform=transform, target_transform=target_transform, loader=load_rgb
        )
        # One flag per sample rather than a counter: setting a flag is idempotent, so workers
        # need no lock and a file drawn again (next epoch, another worker) is not counted twice.
        self._unreadable = torch.zeros(len(self.samples), dtype=torch.bool).share_memory_()

    @property
    def skipped_count(self) -> int:
        """How many files have been found unreadable, in any process using this data set."""
        return int(self._unreadable.sum())

    def skipped_paths(self) -> list[str]:
        """The paths of the files found unreadable, in sample order."""
        return [self.samples[i][0] for i in self._unreadable.nonzero().flatten().tolist()]

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        count = len(self.samples)
        start = range(count)[index]  # IndexError past the end, which ends plain iteration
        for step in range(count):
            i = (start + step) % count
            if self._unreadable[i]:
                continue
            path, target = self.samples[i]
            try:
                image = self.loader(path)
            # PIL's decoders raise many types (OSError, SyntaxError, ValueError, struct.error,
            # DecompressionBombError, ...), varying with the format and the Pillow version.
            except Exception as exc:
                reason = " ".join(f"{type(exc).__name__}: {exc}".split())
                if isinstance(exc, OSError) and exc.errno in _TRANSIENT:
                    # the storage failed, not the file: skip it this time only
                    logger.warning("could not read image %s this time: %s", path, reason)
                    continue
                self._unreadable[i] = True
                logger.warning("skipped unreadable image %s: %s", path, reason)
                continue
            if self.transform is not None:
                image = self.transform(image)
            if self.target_transform is not None:
                target = self.target_transform(target)
            return image, target
        raise ConfigError(
            f"image folder '{self.root}': none of its {count} image files can be read; "
            "see the logged 'skipped unreadable image' lines"
        )
