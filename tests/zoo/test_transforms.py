import numpy as np
import pytest
import torch
from PIL import Image

from swav_plugin.host.registry import TRANSFORMS


def test_center_crop_resizes_crops_and_normalises():
    transform = TRANSFORMS.create("center_crop", size=8, crop_fraction=0.5,
                                  mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    pixels = np.zeros((40, 60), np.uint8)
    pixels[5:35, 12:48] = 255  # white well beyond the centre crop and the resize filter
    out = transform(Image.fromarray(pixels, mode="L"))
    assert out.shape == (3, 8, 8)
    # resized to short side 16, the centre 8×8 comes only from white pixels: all ones
    assert torch.allclose(out, torch.ones_like(out), atol=1e-6)


@pytest.mark.parametrize(("kwargs", "match"), [({"size": 0}, "size"),
                                               ({"crop_fraction": 1.5}, "crop_fraction")])
def test_center_crop_rejects_impossible_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TRANSFORMS.create("center_crop", **kwargs)
