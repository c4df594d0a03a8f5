"""End-to-end: dg-benchmark and search through the real CLI on the tiny built-in benchmark."""

import json

import pytest

from medseg_weak.cli import main
from tests.conftest import tiny_args


@pytest.fixture
def common(synth_mammo):
    return ["-q", *tiny_args(synth_mammo, "classifier.batch_size=4")]


@pytest.mark.slow
def test_dg_benchmark_writes_tables_for_every_selection_rule(tmp_path, common):
    run = tmp_path / "dg"
    args = [
        "dg-benchmark",
        "--rules",
        "erm,agr_sum",
        "--seeds",
        "2",
        "--domains",
        "H2",
        "--run-dir",
        str(run),
    ]
    assert main(args + common) == 0
    out = run / "dg"
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(results) == 2 * 2 * 3  # rules x seeds x selection rules
    assert {r["selection"] for r in results} == {"training_domain", "oracle", "last"}
    md = (out / "table_training_domain.md").read_text()
    assert "| erm |" in md and "| agr_sum |" in md and "H2" in md and "±" in md
    assert (out / "table_training_domain.png").is_file()
    for rule in ("erm", "agr_sum"):
        records = (out / "H2" / rule / "seed0" / "records.jsonl").read_text().splitlines()
        assert len(records) == 1 and {"val", "oracle", "heldout"} <= set(json.loads(records[0]))
    # rerun: every run is complete and skipped; the tables are rebuilt identically
    before = (out / "results.jsonl").read_text()
    assert main(args + common) == 0
    assert (out / "results.jsonl").read_text() == before


def test_dg_benchmark_rejects_unknown_rule_before_training(tmp_path, common):
    assert main(["dg-benchmark", "--rules", "erm,agr_summ", "--run-dir", str(tmp_path / "x"), *common]) == 3
    assert not (tmp_path / "x" / "dg").exists()


@pytest.mark.slow
def test_search_with_halving_ranks_and_writes_best_config(tmp_path, common):
    from medseg_weak.config import load_config

    run = tmp_path / "s"
    args = [
        "search",
        "--backbones",
        "tiny_cnn",
        "--lr",
        "0.003,0.0003,0.01",
        "--halving",
        "--run-dir",
        str(run),
    ]
    assert main(args + common) == 0
    out = run / "search"
    lines = (out / "ranking.csv").read_text().splitlines()
    assert len(lines) == 1 + 3
    assert lines[1].split(",")[3] == "2"  # the winner survived both halvings (3 -> 2 -> 1)
    assert (run / "search" / "round2").is_dir()
    best = load_config(out / "best.yaml")
    assert best.classifier.lr == float(lines[1].split(",")[2]) and best.classifier.epochs == 4


def test_search_rejects_bad_lr(tmp_path, common):
    assert main(["search", "--lr", "fast", "--run-dir", str(tmp_path / "s"), *common]) == 3
