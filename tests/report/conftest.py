"""A tiny finished pipeline run (its last stage the report), shared by the report tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import tiny_args


@pytest.fixture(scope="session")
def report_run(synth_mammo, tmp_path_factory) -> Path:
    from medseg_weak.cli import main

    run_dir = tmp_path_factory.mktemp("report") / "run"
    assert main(["pipeline", "-q", "--run-dir", str(run_dir), *tiny_args(synth_mammo)]) == 0
    return run_dir
