"""Bad input: clear errors naming the file, column or key, or counted drops; never a partial manifest."""

from __future__ import annotations

import numpy as np
import pytest

from medseg_weak.data.importers import import_dataset
from medseg_weak.data.importers.base import EXAMPLES_KEPT
from medseg_weak.errors import ConfigError, InputError, ManifestError, RegistryError
from tests.data.importers import fakes


def test_unknown_format_lists_the_known_ones(tmp_path):
    with pytest.raises(RegistryError, match=r"Did you mean 'vindr'.*Valid: cbis_ddsm, csv, dicom_folder"):
        import_dataset("vinder", tmp_path, tmp_path / "out")


def test_missing_source_folder(tmp_path):
    with pytest.raises(InputError, match="source folder not found"):
        import_dataset("rsna", tmp_path / "nowhere", tmp_path / "out")


def test_header_without_a_needed_column_names_it_and_the_file(tmp_path):
    source, _ = fakes.build("rsna", tmp_path / "layout")
    csv = source / "train.csv"
    csv.write_text(csv.read_text().replace("density", "densty"))
    with pytest.raises(InputError, match=r"train\.csv: missing column\(s\) 'density'; found: site_id"):
        import_dataset("rsna", source, tmp_path / "out")


def test_cbis_file_with_neither_density_spelling(tmp_path):
    source, _ = fakes.build("cbis_ddsm", tmp_path / "layout")
    calc = source / "calc_case_description_test_set.csv"
    calc.write_text(calc.read_text().replace("breast density", "density"))
    with pytest.raises(
        InputError, match=r"calc_case_description_test_set\.csv: .*'breast_density' or 'breast density'"
    ):
        import_dataset("cbis_ddsm", source, tmp_path / "out")


def test_labels_outside_the_map_are_counted_with_the_first_few_listed(tmp_path):
    source, options = fakes.build("csv", tmp_path / "layout")
    labels = source / "export" / "labels.csv"
    bad = [[f"bad{i}", "p9", "west", 7, "left", "cc"] for i in range(EXAMPLES_KEPT + 2)]
    with labels.open("a") as f:
        f.writelines(",".join(map(str, row)) + "\n" for row in bad)
    result = import_dataset("csv", source, tmp_path / "out", **options)
    reason = "label outside the map (1, 2, 3, 4)"
    assert result.dropped[reason] == 1 + len(bad)
    line = next(ln for ln in result.report.read_text().splitlines() if ln.startswith(f"| {reason}"))
    assert line.count("line ") == EXAMPLES_KEPT and "'9'" in line and "'7'" in line


def test_one_id_with_conflicting_rows_is_dropped_and_listed(tmp_path):
    source, _ = fakes.build("rsna", tmp_path / "layout")
    with (source / "train.csv").open("a") as f:
        f.write("1,10006,462822612,L,CC,61,0,0,0,,0,C,29,False\n")  # same image, density C instead of B
    result = import_dataset("rsna", source, tmp_path / "out")
    assert result.dropped["one id with conflicting values (every copy dropped)"] == 2
    assert "462822612" not in result.manifest.read_text()
    assert "462822612: label" in result.report.read_text()


def test_nothing_kept_is_an_error_and_writes_no_manifest(tmp_path):
    source, _ = fakes.build("rsna", tmp_path / "layout")
    csv = source / "train.csv"
    header, *lines = csv.read_text().splitlines()
    cut = [ln.split(",") for ln in lines]
    csv.write_text("\n".join([header, *(",".join([*c[:11], "", *c[12:]]) for c in cut)]))  # density emptied
    with pytest.raises(InputError, match=r"no image kept out of 4 row\(s\) read \(no density: 4\)"):
        import_dataset("rsna", source, tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.csv").exists()
    assert "| no density | 4 |" in (tmp_path / "out" / "import_report.md").read_text()


def test_an_invalid_manifest_is_never_written(tmp_path):
    """A patient in two splits would leak: the import fails whole, and an older manifest stays as it was."""
    fakes.write_csv(tmp_path / "t.csv", ["f", "p", "s"], [["x1", "a", "train"], ["x2", "a", "test"]])
    for name in ("x1", "x2"):
        fakes.write_jpeg(tmp_path / f"{name}.jpg", np.zeros(fakes.SHAPE))
    mapping = tmp_path / "m.yaml"
    mapping.write_text(
        "columns: {id: f, patient_id: p, split: s}\n"
        'path_template: "{f}.jpg"\nconstants: {domain: H, label: A}\n'
    )
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "manifest.csv").write_text("old\n")
    with pytest.raises(ManifestError, match="patient 'a' is in more than one split"):
        import_dataset("csv", tmp_path, tmp_path / "out", csv=tmp_path / "t.csv", columns=mapping)
    assert (tmp_path / "out" / "manifest.csv").read_text() == "old\n"
    assert not list((tmp_path / "out").glob(".manifest*"))
    assert "**manifest not written**: 1 problem(s)" in (tmp_path / "out" / "import_report.md").read_text()


def test_mapping_typo_names_the_dotted_key(tmp_path):
    mapping = tmp_path / "m.yaml"
    mapping.write_text("columns: {idd: image}\n")
    with pytest.raises(ConfigError, match=r"m\.yaml: unknown key 'columns\.idd' \(did you mean 'id'\?\)"):
        import_dataset("csv", tmp_path, tmp_path / "out", columns=mapping)


def test_mapping_without_a_needed_column_names_the_key(tmp_path):
    mapping = tmp_path / "m.yaml"
    mapping.write_text("columns: {id: image, label: y, patient_id: p}\n")
    with pytest.raises(ConfigError, match=r"'columns\.domain' \(or 'constants\.domain'\) is required"):
        import_dataset("csv", tmp_path, tmp_path / "out", columns=mapping)


def test_options_a_format_needs_or_does_not_take(tmp_path):
    with pytest.raises(ConfigError, match="needs --columns"):
        import_dataset("csv", tmp_path, tmp_path / "out")
    with pytest.raises(ConfigError, match="needs --csv"):
        import_dataset("dicom_folder", tmp_path, tmp_path / "out")
    source, _ = fakes.build("vindr", tmp_path / "layout")
    with pytest.raises(ConfigError, match="format 'vindr' does not take --columns"):
        import_dataset("vindr", source, tmp_path / "out", columns=tmp_path / "m.yaml")


def test_dicom_folder_label_csv_without_a_join_column(tmp_path):
    source, _ = fakes.build("dicom_folder", tmp_path / "layout")
    fakes.write_csv(tmp_path / "l.csv", ["name", "label"], [["x", "A"]])
    with pytest.raises(
        ConfigError, match="no id column to join on; add one of SOPInstanceUID, AccessionNumber"
    ):
        import_dataset("dicom_folder", source, tmp_path / "out", csv=tmp_path / "l.csv")
