"""Evaluation through Lightning's predict loop: two gloo CPU ranks score the images one process scores,
and rank 0 writes the same tables (rows gathered, back in data-set order)."""

from __future__ import annotations

import filecmp
import shutil

import pytest

from medseg_weak.cli import main
from tests.conftest import tiny_args

TABLES = ("per_image.csv", "cases.json", "dice_by_hospital.md", "hd95_by_class.md")


@pytest.mark.slow
def test_two_ranks_write_the_tables_of_one_process(synth_mammo, tmp_path):
    run_dir = tmp_path / "run"
    assert main(["pipeline", "-q", "--run-dir", str(run_dir), *tiny_args(synth_mammo)]) == 0
    one = tmp_path / "one_process_eval"
    shutil.copytree(run_dir / "eval", one)
    two_ranks = ["eval.accelerator=cpu", "eval.devices=2", "eval.strategy=ddp_spawn", "eval.batch_size=3"]
    assert main(["evaluate", "-q", "--run", str(run_dir), *tiny_args(synth_mammo, *two_ranks)]) == 0
    rows = (one / "per_image.csv").read_text().splitlines()
    assert len(rows) > 1 + 3 * 2  # more images than one batch per rank: several batches interleave
    for name in TABLES:
        assert filecmp.cmp(one / name, run_dir / "eval" / name, shallow=False), name
