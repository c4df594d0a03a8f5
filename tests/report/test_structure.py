"""The report of a tiny pipeline run: every section present, every picture and link resolves, no
empty table; rewriting it re-renders no unchanged overlay."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from PIL import Image

from tests.report.page import read_page

pytestmark = pytest.mark.slow  # the fixture trains a tiny pipeline


def test_every_section_present_and_every_reference_resolves(report_run: Path):
    page_path = report_run / "report" / "index.html"
    page = read_page(page_path)
    assert page.sections == ["run", "data", "classifier", "weak-labels", "segmenter"]
    assert not page.scripts and not page.styles  # self-contained: script and style are inline
    assert page.table_rows and min(page.table_rows) > 0
    targets = [*page.images, *page.links]
    for ref in targets:
        url = urlparse(ref)
        if url.fragment and not url.path:
            continue
        assert not url.scheme and not url.netloc, f"{ref}: the page must not reach the network"
        assert (page_path.parent / url.path).is_file(), f"{ref} does not resolve"
    # a tile per image that has a CAM, each with a thumbnail and a full-size picture
    n = len(list((report_run / "cams" / "cam").glob("*.npy")))
    assert sum(src.startswith("gallery/thumb/") for src in page.images) == n
    assert sum(href.startswith("gallery/full/") for href in page.links) >= n


def test_gallery_pictures_are_in_the_original_geometry_at_readable_size(report_run: Path, synth_mammo):
    from medseg_weak.data.manifest import load_manifest

    manifest = load_manifest(synth_mammo)
    full = sorted((report_run / "report" / "gallery" / "full").glob("*.png"))[0]
    record = next(r for r in manifest.records if r.id == full.stem)
    original = Image.open(manifest.mask_path(record))  # the truth mask has the original image's shape
    picture = np.asarray(Image.open(full))
    assert min(picture.shape[:2]) >= 256
    ratio = picture.shape[0] / original.size[1]
    assert picture.shape[1] == pytest.approx(original.size[0] * ratio, abs=1)


def test_rewriting_reuses_every_cached_overlay(report_run: Path, monkeypatch):
    import medseg_weak as mw
    from medseg_weak.report import gallery

    calls = []
    monkeypatch.setattr(gallery, "draw", lambda *a, **k: calls.append(1) or np.zeros((4, 4, 3), np.uint8))
    result = mw.report(report_run)
    assert result.page.is_file() and calls == []
