"""JPEG masks back to binary PNGs: known values, the size check, and RGB-saved masks."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image as PILImage

from medseg_weak.data.importers.masks import binarise, write_binary_png
from medseg_weak.errors import InputError
from tests.data.importers import fakes


def test_binarise_known_values():
    values = np.array([[0, 3, 127, 128, 241, 255]], dtype=np.uint8)
    assert binarise(values).tolist() == [[0, 0, 0, 255, 255, 255]]


def test_rgb_jpeg_mask_is_read_as_grey_and_thresholded(tmp_path):
    drawn = fakes.disc_mask()
    jpeg = tmp_path / "m.jpg"
    PILImage.fromarray(np.stack([drawn] * 3, axis=-1)).save(jpeg, quality=60)
    png = write_binary_png(jpeg, tmp_path / "m.png", shape=fakes.SHAPE)
    values = np.asarray(PILImage.open(png))
    assert values.ndim == 2 and set(np.unique(values)) == {0, 255}
    assert np.mean((values > 0) == (drawn > 0)) > 0.99


def test_mask_of_another_size_is_refused(tmp_path):
    jpeg = fakes.write_jpeg(tmp_path / "m.jpg", fakes.disc_mask())
    with pytest.raises(InputError, match=r"m\.jpg: mask is \(64, 48\), its image is \(48, 64\)"):
        write_binary_png(jpeg, tmp_path / "m.png", shape=(48, 64))
    assert not (tmp_path / "m.png").exists()
