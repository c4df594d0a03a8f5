from collections import Counter

import pytest

from medseg_weak.data.manifest import Record, load_manifest, write_manifest
from medseg_weak.data.splits import iter_leave_one_domain_out, leave_one_domain_out, split_patients
from medseg_weak.errors import ConfigError


@pytest.fixture
def big_manifest(tmp_path):
    (tmp_path / "x.png").write_bytes(b"x")
    records = [
        Record(f"H{h}_P{p}_{v}", "x.png", "ABCD"[p % 4], f"H{h}", f"H{h}_P{p}")
        for h in range(3)
        for p in range(40)
        for v in range(4)
    ]
    return load_manifest(write_manifest(records, tmp_path / "m.csv"))


def _patients_by_split(manifest):
    out = {}
    for r in manifest.records:
        out.setdefault(r.patient_id, set()).add(r.split)
    return out


def test_patient_level_and_stratified(big_manifest):
    split = split_patients(big_manifest, val_fraction=0.2, test_fraction=0.2, seed=1)
    assert all(len(s) == 1 for s in _patients_by_split(split).values())
    for domain in split.domains:
        counts = Counter((r.split, r.label) for r in split.records if r.domain == domain)
        for label in "ABCD":  # 10 patients per label per hospital: 2 test, 2 val, 6 train
            assert counts["test", label] == 8 and counts["val", label] == 8 and counts["train", label] == 24


def test_deterministic_and_seed_dependent(big_manifest):
    a = split_patients(big_manifest, seed=3)
    b = split_patients(big_manifest, seed=3)
    c = split_patients(big_manifest, seed=4)
    assert [r.split for r in a.records] == [r.split for r in b.records]
    assert [r.split for r in a.records] != [r.split for r in c.records]


def test_existing_split_is_kept(tmp_path):
    (tmp_path / "x.png").write_bytes(b"x")
    records = [Record(f"{p}", "x.png", "A", "H", f"p{p}", split="test" if p == 0 else "") for p in range(10)]
    manifest = load_manifest(write_manifest(records, tmp_path / "m.csv"))
    out = split_patients(manifest, 0.0, 0.0)
    assert out.records[0].split == "test"
    assert {r.split for r in out.records[1:]} == {"train"}


def test_leave_one_domain_out(big_manifest):
    lodo = leave_one_domain_out(big_manifest, "H1", val_fraction=0.25, seed=0)
    assert {r.split for r in lodo.records if r.domain == "H1"} == {"test"}
    others = [r for r in lodo.records if r.domain != "H1"]
    assert {r.split for r in others} == {"train", "val"}
    assert sum(r.split == "val" for r in others) == 2 * 40  # 10 of 40 patients x 4 views, per hospital
    assert all(len(s) == 1 for s in _patients_by_split(lodo).values())
    held_out = [d for d, _ in iter_leave_one_domain_out(big_manifest)]
    assert held_out == ["H0", "H1", "H2"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"val_fraction": 0.6, "test_fraction": 0.5}, "must leave images to train on"),
        ({"val_fraction": -0.1}, "'data.val_fraction' must be in"),
    ],
)
def test_bad_fractions(big_manifest, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        split_patients(big_manifest, **kwargs)


def test_unknown_test_domain(big_manifest):
    with pytest.raises(ConfigError, match="not a hospital in the manifest; valid: H0, H1, H2"):
        leave_one_domain_out(big_manifest, "H9")
