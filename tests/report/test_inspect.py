"""`medseg-weak inspect`: the chosen images in layers that resolve, with toggles and metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from medseg_weak.errors import InputError
from tests.report.page import read_page


@pytest.mark.slow  # the fixture trains a tiny pipeline
def test_worst_images_of_a_hospital_in_layers(report_run: Path):
    from medseg_weak.cli import main

    assert main(["inspect", "-q", "--run", str(report_run), "--worst", "2", "--hospital", "H2"]) == 0
    path = report_run / "inspect" / "index.html"
    page = read_page(path)
    assert len(page.sections) == 2 and all(s.startswith("img-H2_") for s in page.sections)
    # per image: the original, the CAM, and the pseudo-mask, truth and UNet contours
    assert len(page.images) == 2 * 5
    assert all((path.parent / src).is_file() for src in page.images)
    html = path.read_text()
    assert html.count('type="range"') == 2 and html.count('data-toggle="UNet"') == 2


def test_worst_sorts_by_pseudo_mask_dice():
    from medseg_weak.report.inspect import select_ids

    scores = {"a": {"dice": "0.9", "domain": "H1"}, "b": {"dice": "0.1", "domain": "H1"}, "c": {"dice": ".5"}}
    assert select_ids(scores, worst=2) == ["b", "c"]
    assert select_ids(scores, ["a"]) == ["a"]
    with pytest.raises(InputError, match="no such image id"):
        select_ids(scores, ["zz"])
    with pytest.raises(InputError, match="no image of this hospital"):
        select_ids(scores, hospital="H9")
