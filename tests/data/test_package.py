"""The data package: readers importable from it, lazily, so that importing it stays cheap."""

from __future__ import annotations

import subprocess
import sys

import pytest

import medseg_weak.data
from medseg_weak.data import io


def test_readers_are_importable_from_the_package() -> None:
    from medseg_weak.data import Image, read_image, read_mask

    assert (read_image, read_mask, Image) == (io.read_image, io.read_mask, io.Image)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'read_everything'"):
        _ = medseg_weak.data.read_everything


def test_importing_the_package_does_not_load_the_readers() -> None:
    code = (
        "import sys, medseg_weak.data; "
        "print(sorted(m for m in ('pydicom', 'PIL', 'tifffile', 'medseg_weak.data.io') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
