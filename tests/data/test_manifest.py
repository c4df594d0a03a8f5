import pytest

from medseg_weak.data.manifest import DENSITY_LABELS, QUALITY_LABELS, Record, load_manifest, write_manifest
from medseg_weak.errors import InputError, ManifestError


def test_round_trip(tiny_manifest):
    manifest = load_manifest(tiny_manifest)
    assert len(manifest) == 24
    assert manifest.labels == DENSITY_LABELS
    assert manifest.domains == ["H0", "H1", "H2"]
    record = manifest.records[0]
    assert manifest.image_path(record).is_file()
    assert manifest.mask_path(record) is None


def test_quality_labels_inferred(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    write_manifest([Record("1", "a.png", "Usable", "C1", "p1")], tmp_path / "m.csv")
    assert load_manifest(tmp_path / "m.csv").labels == QUALITY_LABELS


def test_every_bad_row_is_reported_at_once(tmp_path):
    (tmp_path / "ok.png").write_bytes(b"x")
    rows = [
        Record("1", "ok.png", "A", "H1", "p1", split="train"),
        Record("1", "ok.png", "B", "H1", "p2"),  # duplicate id
        Record("3", "missing.png", "A", "H1", "p3"),  # missing file
        Record("4", "ok.png", "E", "H1", "p4"),  # unknown label
        Record("5", "ok.png", "A", "", "p5"),  # empty hospital
        Record("6", "ok.png", "A", "H1", "p1", split="test"),  # p1 in two splits
        Record("7", "ok.png", "A", "H1", "p7", mask_path="nomask.png"),
        Record("8", "ok.png", "A", "H1", "p8", laterality="X", split="holdout"),
    ]
    write_manifest(rows, tmp_path / "m.csv")
    with pytest.raises(ManifestError) as info:
        load_manifest(tmp_path / "m.csv")
    problems = info.value.problems
    text = "\n".join(problems)
    assert "line 3: duplicate id '1' (first on line 2)" in text
    assert "line 4: path file not found: missing.png" in text
    assert "line 5: unknown label 'E' (valid: A, B, C, D)" in text
    assert "line 6: empty 'domain'" in text
    assert "patient 'p1' is in more than one split: train (line 2), test (line 7)" in text
    assert "line 8: mask_path file not found: nomask.png" in text
    assert "line 9: laterality 'X' must be L or R" in text
    assert "line 9: unknown split 'holdout'" in text
    assert str(tmp_path / "m.csv") in str(info.value)
    assert len(problems) == 8


def test_header_errors(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("id,path,label\n1,a.png,A\n")
    with pytest.raises(InputError, match="missing column\\(s\\) domain, patient_id"):
        load_manifest(path)
    path.write_text("id,path,label,domain,patient_Id\n1,a.png,A,H1,p1\n")
    with pytest.raises(InputError, match=r"missing column\(s\) patient_id; .*'patient_Id' \(did you mean"):
        load_manifest(path)
    path.write_text("id,path,label,domain,patient_id,label\n1,a.png,A,H1,p1,B\n")
    with pytest.raises(InputError, match="column\\(s\\) label appear more than once"):
        load_manifest(path)
    path.write_text("id,path,label,domain,patient_id\n")
    with pytest.raises(InputError, match="no rows"):
        load_manifest(path)
    with pytest.raises(InputError, match="manifest not found"):
        load_manifest(tmp_path / "nope.csv")


def test_explicit_labels_order(tiny_manifest):
    manifest = load_manifest(tiny_manifest, labels=["D", "C", "B", "A"])
    record = next(r for r in manifest.records if r.label == "D")
    assert manifest.label_index(record) == 0


def test_write_is_atomic_no_temp_left(tmp_path):
    write_manifest([Record("1", "a", "A", "H", "p")], tmp_path / "m.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv"]


def test_unknown_columns_are_kept_as_metadata_and_written_back(tmp_path, caplog):
    (tmp_path / "a.png").write_bytes(b"x")
    path = tmp_path / "m.csv"
    path.write_text(
        "id,path,label,domain,patient_id,age,label_true,scanner\n"
        "1,a.png,A,H1,p1,54,B,Mammomat\n"
        "2,a.png,B,H1,p2,61,B,\n"
    )
    with caplog.at_level("WARNING"):
        manifest = load_manifest(path)
    assert caplog.records == []  # real columns, not typos: no warning
    assert manifest.records[0].extra == {"age": "54", "scanner": "Mammomat"}
    assert manifest.records[1].extra == {"age": "61", "scanner": ""}
    # label_true is the schema's analysis column (the clean label behind reader noise)
    assert manifest.records[0].label == "A" and manifest.records[0].label_true == "B"
    out = write_manifest(manifest.records, tmp_path / "out.csv")
    assert out.read_text().splitlines()[0] == (
        "id,path,label,domain,patient_id,mask_path,laterality,view,split,label_true,age,scanner"
    )
    assert load_manifest(out).records == manifest.records
    assert len({*manifest.records}) == 2  # records stay hashable (sets, dict keys)


def test_extra_columns_of_some_records_only_are_written_with_empty_values(tmp_path):
    rows = [Record("1", "a", "A", "H", "p", extra={"age": "50"}), Record("2", "a", "A", "H", "q")]
    text = write_manifest(rows, tmp_path / "m.csv").read_text().splitlines()
    assert text[0].endswith(",split,age") and text[1].endswith(",50") and text[2].endswith(",")


@pytest.mark.parametrize(
    ("column", "meant"),
    [("Patient ID", "patient_id"), ("mask path", "mask_path"), ("MASK-PATH", "mask_path"), ("views", "view")],
)
def test_a_column_that_looks_like_a_typo_warns(tmp_path, caplog, column, meant):
    (tmp_path / "a.png").write_bytes(b"x")
    path = tmp_path / "m.csv"
    path.write_text(f"id,path,label,domain,patient_id,{column}\n1,a.png,A,H1,p1,v\n")
    with caplog.at_level("WARNING"):
        manifest = load_manifest(path)
    assert manifest.records[0].extra == {column: "v"}
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: column '{column}' is kept as extra metadata; did you mean '{meant}'?"
    ]


def test_values_beyond_the_header_are_a_problem(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    path = tmp_path / "m.csv"
    path.write_text("id,path,label,domain,patient_id\n1,a.png,A,H1,p1,surplus\n")
    with pytest.raises(ManifestError, match="line 2: 1 value\\(s\\) beyond the header's columns"):
        load_manifest(path)


def test_header_names_and_values_are_stripped(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    path = tmp_path / "m.csv"
    path.write_text(" id , path,label ,domain,patient_id, age \n1 , a.png ,B,H1,p1, 54\n")
    record = load_manifest(path).records[0]
    assert (record.id, record.path, record.label, record.extra) == ("1", "a.png", "B", {"age": "54"})
