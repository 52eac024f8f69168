"""Any image file as 8-bit RGB pixels, as a viewer shows it."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

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
