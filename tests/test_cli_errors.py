"""How `medseg-weak` ends when something is wrong: library tracebacks never reach the terminal, and the
project's error is the last line on stderr, starting with ``error:``; `data check` lists every problem."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from medseg_weak import cli
from medseg_weak.data.manifest import Record, write_manifest
from medseg_weak.logs import reset_logging
from tests.data.test_check import corrupt_j2k

EXE = Path(sys.executable).parent / "medseg-weak"


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.fixture(autouse=True)
def _reset_logging():
    yield
    reset_logging()  # cli.main installs handlers on the root logger


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


@pytest.fixture
def j2k_manifest(tmp_path: Path) -> Path:
    corrupt_j2k(tmp_path / "bad.dcm")
    (tmp_path / "good.dcm").write_bytes(Path(get_testdata_file("MR_small.dcm")).read_bytes())
    rows = [Record("bad", "bad.dcm", "A", "H1", "p1"), Record("good", "good.dcm", "B", "H1", "p2")]
    return write_manifest(rows, tmp_path / "manifest.csv")


@pytest.mark.parametrize("workers", ["1", pytest.param("2", marks=pytest.mark.slow)])
def test_corrupt_jpeg2000_shows_our_message_only(j2k_manifest, tmp_path, workers):
    """With 2 workers pydicom logs in the worker processes, whose records are forwarded to ours."""
    log = tmp_path / "logs" / "check.log"
    result = run("data", "check", str(j2k_manifest), "-q", "--log-file", str(log), "--workers", workers)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    assert "ERROR pydicom" not in result.stderr  # pydicom logs an ERROR record per decoder plugin
    assert "unreadable_image (1):" in result.stderr
    assert "bad: " in result.stderr and "bad.dcm: pixel data could not be decoded" in result.stderr
    assert _last_line(result.stderr).startswith("error: ")
    assert "1 problem(s) found (1 unreadable_image)" in _last_line(result.stderr)
    text = log.read_text()  # ... and kept for the bug report
    assert text.count("Traceback") == 2 and "Error decoding the J2K data: failed to read the header" in text


def test_debug_prints_the_traceback_and_still_ends_with_the_error(tmp_path):
    result = run("--debug", "data", "check", str(tmp_path / "none.csv"))
    assert result.returncode == 2 and "Traceback" in result.stderr
    assert _last_line(result.stderr) == f"error: {tmp_path / 'none.csv'}: manifest not found"


def test_every_problem_grouped_first_ten_on_screen_all_in_csv(tmp_path, capsys):
    (tmp_path / "ok.png").write_bytes(b"x")
    rows = [Record(f"m{i:02d}", f"missing{i:02d}.png", "A", "H1", f"p{i}") for i in range(13)]
    rows += [Record("m00", "ok.png", "Z", "H1", "q")]  # a duplicate id with an unknown label
    manifest = write_manifest(rows, tmp_path / "manifest.csv")
    out = tmp_path / "problems.csv"
    code = cli.main(["data", "check", str(manifest), "-q", "--no-decode", "--problems", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert "missing_file (13):" in err and "duplicate_id (1):" in err and "unknown_label (1):" in err
    assert "missing09.png" in err and "missing10.png" not in err and "... and 3 more" in err
    assert _last_line(err) == (
        f"error: {manifest}: 15 problem(s) found (1 duplicate_id, 1 unknown_label, 13 missing_file); "
        f"all listed in {out}"
    )
    with out.open(newline="") as f:
        listed = list(csv.DictReader(f))
    assert len(listed) == 15 and {r["kind"] for r in listed} == {
        "missing_file",
        "duplicate_id",
        "unknown_label",
    }
    assert listed[-1]["path"] == "missing12.png" and listed[-1]["id"] == "m12"


def test_clean_data_writes_an_empty_problems_file(tmp_path, capsys):
    (tmp_path / "good.dcm").write_bytes(Path(get_testdata_file("MR_small.dcm")).read_bytes())
    manifest = write_manifest([Record("1", "good.dcm", "A", "H1", "p1")], tmp_path / "manifest.csv")
    assert cli.main(["data", "check", str(manifest), "-q", "--problems", str(tmp_path / "p.csv")]) == 0
    assert (tmp_path / "p.csv").read_text() == "kind,id,path,message\n"
    assert "no problems found" in capsys.readouterr().out


def test_multi_line_error_ends_with_its_summary_line(tmp_path, capsys):
    rows = [Record("1", "a.png", "A", "H1", "p1"), Record("1", "b.png", "A", "H1", "p2")]
    manifest = write_manifest(rows, tmp_path / "manifest.csv")
    code = cli.main(["data", "preview", str(manifest), "--out", str(tmp_path / "p.png")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert "line 3: duplicate id '1' (first on line 2)" in "\n".join(err[:-1])
    assert err[-1] == f"error: {manifest}: 3 problem(s) in manifest (listed above)"


def test_a_bug_shows_its_traceback_then_our_error_line(tmp_path, capsys, monkeypatch):
    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli, "cmd_data_check", broken)
    code = cli.main(["data", "check", str(tmp_path / "m.csv")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" in err and "ZeroDivisionError: division by zero" in err
    assert _last_line(err).startswith("error: unexpected ZeroDivisionError")
