"""Any image file as 8-bit RGB pixels, as a viewer shows it.

Importing this module silences PIL's ``DecompressionBombWarning`` in the process: the
``max_pixels`` limit of :func:`open_image` replaces it.
"""

from __future__ import annotations

import os
import warnings
from typing import IO

import numpy as np
from PIL import Image

_SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N"}
_WHITE = (255, 255, 255, 255)
#: The default limit on an image's pixels: PIL's own ``Image.MAX_IMAGE_PIXELS``, from which
#: PIL warns of a decompression bomb. Decoded to 8-bit RGB it is 256 MiB per image and per
#: DataLoader worker, and it lies well above a camera's photographs (12 to 50 megapixels),
#: while a PNG of a few kilobytes can claim billions.
MAX_PIXELS = 1024**3 // 4 // 3

# max_pixels (or the choice of none) stands in for PIL's warning of a decompression bomb,
# which Image.open gives before open_image can refuse the image
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def unreadable_reason(exc: Exception) -> str:
    """Why an image file could not be read, in one line."""
    if isinstance(exc, PermissionError):
        return "permission denied"
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def open_image(
    file: str | os.PathLike[str] | IO[bytes], max_pixels: int | None = MAX_PIXELS
) -> Image.Image:
    """PIL's lazy image of ``file``: only its header read, no pixel decoded.

    Raises PIL's ``DecompressionBombError`` when the header's width × height is over
    ``max_pixels`` (``None``: no limit of ours; PIL still refuses more than twice its
    ``Image.MAX_IMAGE_PIXELS``), and whatever PIL raises for a file whose header it cannot
    read.
    """
    image = Image.open(file)
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        image.close()
        raise Image.DecompressionBombError(
            f"{width}x{height} = {width * height} pixels, over max_pixels = {max_pixels}; "
            "raise the data set's max_pixels to read it"
        )
    return image


def load_rgb(path: str | os.PathLike[str], max_pixels: int | None = MAX_PIXELS) -> Image.Image:
    """The image in ``path`` as an 8-bit RGB image (see :func:`to_rgb`).

    The pixels are decoded here, so a truncated file raises here rather than later in a
    transform; an image of more than ``max_pixels`` pixels is refused before it is decoded
    (:func:`open_image`). Raises whatever PIL raises for an unreadable file (mostly
    ``OSError``).
    """
    with open_image(path, max_pixels) as image:
        image.load()
        return to_rgb(image)


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
