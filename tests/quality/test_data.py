"""Quality data: degradation targets from bit-masks, grey photographs, photographs without a field of
view, and dataset items over the built-in benchmark."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from medseg_weak.data.cache import ArrayCache
from medseg_weak.data.image import Image
from medseg_weak.data.io import read_image
from medseg_weak.data.manifest import load_manifest
from medseg_weak.data.synthetic.fundus import DEGRADATIONS
from medseg_weak.errors import InputError
from medseg_weak.quality.data import (
    QualityDataset,
    as_colour,
    degradation_target,
    mask_channels,
    preprocess_colour_fundus,
)


def test_degradation_target_bits():
    bits = np.array([[0, 1, 2], [5, 8, 15]], dtype=np.uint8)  # bit i = DEGRADATIONS[i]
    per_kind = degradation_target(bits, "per_kind")
    assert per_kind.shape == (4, 2, 3) and per_kind.dtype == np.float32
    assert per_kind[DEGRADATIONS.index("blur")].tolist() == [[0, 1, 0], [1, 0, 1]]
    assert per_kind[DEGRADATIONS.index("illumination")].tolist() == [[0, 0, 1], [0, 0, 1]]
    assert per_kind[DEGRADATIONS.index("exposure")].tolist() == [[0, 0, 0], [1, 0, 1]]
    assert per_kind[DEGRADATIONS.index("artefact")].tolist() == [[0, 0, 0], [0, 1, 1]]
    assert degradation_target(bits, "any").tolist() == [[[0, 1, 1], [1, 1, 1]]]
    assert mask_channels("per_kind") == DEGRADATIONS and mask_channels("any") == ("any",)


def _disc(shape=(80, 80)) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - 40) ** 2 + (xx - 40) ** 2 < 30**2).astype(np.float32) * 0.6


def test_grey_photograph_is_converted_with_a_note(tmp_path, caplog):
    path = tmp_path / "grey.png"
    PILImage.fromarray((_disc() * 255).astype(np.uint8)).save(path)
    image = read_image(path)
    assert image.pixels.ndim == 2
    with caplog.at_level(logging.WARNING, logger="medseg_weak.data.preprocess"):
        pre = preprocess_colour_fundus(image, 32)
    assert pre.pixels.shape == (32, 32, 3)
    assert np.array_equal(pre.pixels[..., 0], pre.pixels[..., 2])  # the grey channel in R, G and B
    assert "grey.png: grey image given to a colour model" in caplog.text
    colour = Image(np.repeat(_disc()[..., None], 3, axis=2), {})
    assert as_colour(colour) is colour  # colour photographs pass untouched


def test_no_field_of_view_names_the_file(tmp_path):
    path = tmp_path / "black.png"
    PILImage.fromarray(np.zeros((64, 64, 3), np.uint8)).save(path)
    image = Image(np.zeros((64, 64, 3), np.float32), {"path": str(path)})
    with pytest.raises(InputError, match=r"black\.png: no field of view found"):
        preprocess_colour_fundus(image, 32)


def test_dataset_items(synth_fundus, tmp_path):
    manifest = load_manifest(synth_fundus)
    data = QualityDataset(manifest, 48, ArrayCache(tmp_path / "cache"), target="per_kind")
    item = data[0]
    assert item["image"].shape == (3, 48, 48) and item["image"].dtype == torch.float32
    assert item["degradation"].shape == (4, 48, 48) and item["has_mask"] is True
    assert set(torch.unique(item["degradation"]).tolist()) <= {0.0, 1.0}
    # Reject images carry a severe degradation, so some of their pixels are marked.
    rejects = [i for i, r in enumerate(manifest.records) if r.label == "Reject"]
    assert rejects and all(data[i]["degradation"].sum() > 0 for i in rejects)
    any_target = QualityDataset(manifest, 48, ArrayCache(tmp_path / "cache"), target="any")[0]["degradation"]
    assert torch.equal(any_target[0], item["degradation"].amax(dim=0))
    unmasked = manifest.subset(r.__class__(**{**r.__dict__, "mask_path": ""}) for r in manifest.records[:2])
    item = QualityDataset(unmasked, 48)[0]
    assert item["has_mask"] is False and item["degradation"].sum() == 0
