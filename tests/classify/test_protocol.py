import json

import pytest

from medseg_weak.classify.protocol import SELECTION, mark_oracle_slice, read_records, select
from medseg_weak.data.manifest import load_manifest
from medseg_weak.data.splits import leave_one_domain_out
from medseg_weak.errors import ConfigError

RECORDS = [
    {"epoch": 0, "val": {"accuracy": 0.6}, "oracle": {"accuracy": 0.9}, "heldout": {"accuracy": 0.50}},
    {"epoch": 1, "val": {"accuracy": 0.8}, "oracle": {"accuracy": 0.4}, "heldout": {"accuracy": 0.55}},
    {"epoch": 2, "val": {"accuracy": 0.7}, "oracle": {"accuracy": 0.5}, "heldout": {"accuracy": 0.60}},
]


@pytest.mark.parametrize(("rule", "epoch"), [("training_domain", 1), ("oracle", 0), ("last", 2)])
def test_selection_rules_pick_by_their_own_criterion(rule, epoch):
    assert select(RECORDS, rule, "accuracy")["epoch"] == epoch


def test_selection_registry_lists_rules():
    assert SELECTION.names() == ["last", "oracle", "training_domain"]
    with pytest.raises(ConfigError, match="unknown model-selection rule 'best'"):
        select(RECORDS, "best", "accuracy")


def test_oracle_slice_is_patient_level_and_only_in_held_out(synth_mammo):
    lodo = leave_one_domain_out(load_manifest(synth_mammo), "H2")
    marked = mark_oracle_slice(lodo, "H2", seed=0)
    oracle = [r for r in marked.records if r.split == "oracle"]
    assert oracle and {r.domain for r in oracle} == {"H2"}
    held = [r for r in marked.records if r.domain == "H2"]
    assert len(oracle) == pytest.approx(0.2 * len(held), abs=4)
    oracle_patients = {r.patient_id for r in oracle}
    assert all(r.split == "oracle" for r in held if r.patient_id in oracle_patients)
    assert [r.split for r in marked.records if r.domain != "H2"] == [
        r.split for r in lodo.records if r.domain != "H2"
    ]


def test_read_records(tmp_path):
    path = tmp_path / "records.jsonl"
    assert read_records(path) == []
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    assert read_records(path) == RECORDS
