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


@pytest.fixture(scope="session")
def combined_report(report_run, fundus_run, tmp_path_factory) -> Path:
    """The demo's layout: the mammography run with the fundus run nested in it, the page rewritten."""
    import shutil

    import medseg_weak as mw

    run = tmp_path_factory.mktemp("combined") / "run"
    shutil.copytree(report_run, run, ignore=shutil.ignore_patterns("cache"))
    shutil.copytree(fundus_run, run / "fundus", ignore=shutil.ignore_patterns("cache"))
    mw.report(run, progress=False)
    return run
