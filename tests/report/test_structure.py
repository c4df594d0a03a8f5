"""The report of a tiny pipeline run: every section present, every picture and link resolves, no
empty table; rewriting it re-renders no unchanged overlay."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.report.page import read_page, unresolved

pytestmark = pytest.mark.slow  # the fixture trains a tiny pipeline


def test_every_section_present_and_every_reference_resolves(report_run: Path):
    page_path = report_run / "report" / "index.html"
    page = read_page(page_path)
    assert page.sections == ["run", "data", "classifier", "weak-labels", "segmenter"]
    assert not page.scripts and not page.styles  # self-contained: script and style are inline
    assert page.table_rows and min(page.table_rows) > 0
    assert unresolved(page_path) == []
    # a tile per image that has a CAM, each with a thumbnail and a full-size picture
    n = len(list((report_run / "cams" / "cam").glob("*.npy")))
    assert sum(src.startswith("gallery/thumb/") for src in page.images) == n
    assert sum(href.startswith("gallery/full/") for href in page.links) >= n


def test_the_fundus_chain_and_a_nested_run_show_their_sections(fundus_run: Path, combined_report: Path):
    page_path = fundus_run / "report" / "index.html"
    page = read_page(page_path)
    assert page.sections == ["run", "data", "quality", "interpret", "invariance"]
    assert unresolved(page_path) == [] and min(page.table_rows) > 0
    images = set(page.images)
    for name in (
        "quality_confusion_all.png",
        "interpret_curves.png",
        "interpret_randomisation.png",
        "interpret_gallery_gradcam.png",
        "invariance_curves.png",
        "invariance_units.png",
    ):
        assert f"img/{name}" in images, name
    combined = combined_report / "report" / "index.html"
    sections = read_page(combined).sections
    assert sections[:5] == ["run", "data", "classifier", "weak-labels", "segmenter"]
    assert sections[5:] == ["fundus-quality", "fundus-interpret", "fundus-invariance"]
    assert unresolved(combined) == []
    assert "img/fundus_interpret_curves.png" in read_page(combined).images  # no clash with the parent's


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
