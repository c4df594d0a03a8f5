"""What every registered importer must do, generated from the registry: a new format gets these for free."""

from __future__ import annotations

import re

import pytest

from medseg_weak.data.check import check_manifest
from medseg_weak.data.importers import IMPORTERS, describe, import_dataset
from medseg_weak.data.manifest import load_manifest
from medseg_weak.errors import ConfigError
from tests.data.importers import fakes

FORMATS = IMPORTERS.names()


def test_every_format_has_a_fake_layout_and_a_summary():
    assert sorted(fakes.LAYOUTS) == FORMATS
    assert all(describe(fmt) for fmt in FORMATS)


@pytest.mark.parametrize("fmt", FORMATS)
def test_manifest_passes_data_check_and_the_report_adds_up(fmt, tmp_path):
    source, options = fakes.build(fmt, tmp_path / "layout")
    result = import_dataset(fmt, source, tmp_path / "out", **options)
    check = check_manifest(
        result.manifest, labels=result.labels
    )  # what `data check` runs: decodes every file
    assert check.ok, check.problems
    assert len(check.manifest) == result.kept > 0
    assert result.kept + sum(result.dropped.values()) <= result.rows_read
    report = result.report.read_text()
    assert f"- rows read: {result.rows_read}" in report and f"- images kept: {result.kept}" in report
    totals = [
        int(m)
        for m in re.findall(r"^\| [^|]+ \|.* \| (\d+) \|$", report.split("per domain x label")[1], re.M)
    ]
    assert sum(totals) == result.kept
    for reason, count in result.dropped.items():
        assert f"| {reason} | {count} |" in report


@pytest.mark.parametrize("fmt", FORMATS)
def test_same_input_same_manifest(fmt, tmp_path):
    source, options = fakes.build(fmt, tmp_path / "layout")
    first = import_dataset(fmt, source, tmp_path / "out1", **options).manifest.read_text()
    assert import_dataset(fmt, source, tmp_path / "out2", **options).manifest.read_text() == first


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_missing_image_is_counted_and_listed_not_a_crash(fmt, tmp_path):
    source, options = fakes.build(fmt, tmp_path / "layout")
    before = import_dataset(fmt, source, tmp_path / "out", **options)
    victim = load_manifest(before.manifest, labels=before.labels).records[0]
    (before.manifest.parent / victim.path).unlink()
    after = import_dataset(fmt, source, tmp_path / "out", **options)
    assert after.kept == before.kept - 1
    if fmt in fakes.LISTS_FILES_ON_DISK:  # a file that is not there is simply not listed
        return
    assert after.dropped["image file not found"] == 1
    assert victim.id in after.report.read_text()


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_domain_choice_the_format_does_not_offer_fails_with_a_config_error(fmt, tmp_path):
    source, options = fakes.build(fmt, tmp_path / "layout")
    with pytest.raises(ConfigError, match="domain-by"):
        import_dataset(fmt, source, tmp_path / "out", **options, domain_by="NoSuchField")
    assert not (tmp_path / "out" / "manifest.csv").exists()
