"""`data check` collects every problem of a data set in one run, grouped by kind.

The data set is built from pydicom's own test files (MR_small.dcm is 64 x 64) and tiny PNG masks, and
has one or more problems of every kind; some rows have two at once (a bad row with a bad file, a
missing image with a bad mask), which a check stopping at a record's first problem would miss.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from pydicom.data import get_testdata_file

from medseg_weak.data.check import check_manifest
from medseg_weak.data.manifest import Record, write_manifest


def corrupt_j2k(path: Path) -> Path:
    """A JPEG 2000 DICOM whose image size segment is destroyed: every decoder plugin fails on it."""
    data = bytearray(Path(get_testdata_file("MR_small_jp2klossless.dcm")).read_bytes())
    start = data.find(b"\xff\x4f\xff\x51")  # JPEG 2000 SOC + SIZ markers
    data[start + 4 : start + 40] = b"\xff" * 36
    path.write_bytes(bytes(data))
    return path


def _mask(path: Path, shape: tuple[int, ...]) -> None:
    PILImage.fromarray(np.zeros(shape, np.uint8)).save(path)


@pytest.fixture
def broken_set(tmp_path: Path) -> Path:
    good = Path(get_testdata_file("MR_small.dcm")).read_bytes()
    (tmp_path / "good.dcm").write_bytes(good)
    (tmp_path / "cut.dcm").write_bytes(good[: len(good) // 2])
    corrupt_j2k(tmp_path / "j2k.dcm")
    _mask(tmp_path / "ok.png", (64, 64))
    _mask(tmp_path / "small.png", (32, 64))
    _mask(tmp_path / "rgb.png", (64, 64, 3))
    rows = [
        Record("1", "good.dcm", "A", "H1", "p1", mask_path="ok.png", split="train"),
        Record("1", "good.dcm", "B", "H1", "p2", mask_path="small.png", split="train"),  # dup id + size
        Record("3", "cut.dcm", "E", "H1", "p3", split="train"),  # unknown label + truncated
        Record("4", "gone.dcm", "A", "H1", "p4", mask_path="rgb.png", split="train"),  # missing + RGB
        Record("5", "j2k.dcm", "A", "H2", "p1", mask_path="small.png", split="test"),  # p1 twice + J2K
        Record("6", "good.dcm", "C", "H2", "p6", mask_path="nomask.png", split="test"),  # missing mask
    ]
    return write_manifest(rows, tmp_path / "manifest.csv")


EXPECTED = [
    ("duplicate_id", "1", ""),
    ("unknown_label", "3", ""),
    ("missing_file", "4", "gone.dcm"),
    ("missing_file", "6", "nomask.png"),
    ("unreadable_image", "3", "cut.dcm"),
    ("unreadable_image", "5", "j2k.dcm"),
    ("bad_mask", "4", "rgb.png"),
    ("mask_size", "1", "small.png"),
    ("patient_in_two_splits", "", ""),
]


def test_every_problem_in_one_run_grouped_by_kind(broken_set):
    report = check_manifest(broken_set, workers=1)
    assert [(p.kind, p.id, p.path) for p in report.problems] == EXPECTED
    assert {k: len(v) for k, v in report.by_kind().items()} == {
        "duplicate_id": 1,
        "unknown_label": 1,
        "missing_file": 2,
        "unreadable_image": 2,
        "bad_mask": 1,
        "mask_size": 1,
        "patient_in_two_splits": 1,
    }
    text = {p.kind: p.message for p in report.problems}
    assert "mask small.png is (32, 64), image is (64, 64)" in text["mask_size"]
    assert "mask must be single-channel" in text["bad_mask"]
    assert (
        "patient 'p1' is in more than one split: train (line 2), test (line 6)"
        in text["patient_in_two_splits"]
    )
    # Records with problems are still summarised: four images decoded, three masks read.
    assert sum(len(s.heights) for s in report.domains.values()) == 3
    assert report.domains["H1"].masks == 2 and report.domains["H2"].masks == 1
    assert not report.ok


def test_problems_csv_lists_all_of_them(broken_set, tmp_path):
    import csv

    report = check_manifest(broken_set, workers=1)
    out = report.write_problems(tmp_path / "problems.csv")
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["kind", "id", "path", "message"]
    assert [(r["kind"], r["id"], r["path"]) for r in rows] == EXPECTED
    assert [r["message"] for r in rows] == [p.message for p in report.problems]


def test_no_decode_reports_the_manifest_problems_only(broken_set):
    report = check_manifest(broken_set, decode=False)
    kinds = {p.kind for p in report.problems}
    assert kinds == {"duplicate_id", "unknown_label", "missing_file", "patient_in_two_splits"}


@pytest.mark.slow
def test_two_processes_give_the_same_report_and_forward_library_logs(broken_set, caplog):
    one = check_manifest(broken_set, workers=1)
    with caplog.at_level(logging.ERROR):
        two = check_manifest(broken_set, workers=2)
    assert [(p.kind, p.id, p.path) for p in two.problems] == EXPECTED  # in manifest order, as one process
    # The same messages, but for the address of a BytesIO object that pillow's message quotes.
    assert [p.message.split(" at 0x")[0] for p in two.problems] == [
        p.message.split(" at 0x")[0] for p in one.problems
    ]
    assert {d: (s.heights, s.masks) for d, s in two.domains.items()} == {
        d: (s.heights, s.masks) for d, s in one.domains.items()
    }
    # pydicom's records from the worker processes reach this process's handlers, traceback apart.
    decoder = [r for r in caplog.records if r.name.startswith("pydicom")]
    assert decoder and all("Traceback" in (r.exc_text or "") for r in decoder)
