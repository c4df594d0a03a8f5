"""Smoke tests of the real `medseg-weak` entry point, including how user errors look."""

import subprocess
import sys
from pathlib import Path

import pytest

from medseg_weak.cli import main
from tests.conftest import tiny_args

EXE = Path(sys.executable).parent / "medseg-weak"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def mammo_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "mammo"
    assert (
        main(
            [
                "synth",
                "mammo",
                "--out",
                str(out),
                "--n-per-hospital",
                "4",
                "--hospitals",
                "2",
                "--height",
                "160",
                "-q",
            ]
        )
        == 0
    )
    return out


def test_version_via_console_script():
    result = run("--version")
    assert result.returncode == 0 and "medseg-weak" in result.stdout


def test_synth_check_preview(mammo_data, tmp_path):
    manifest = mammo_data / "manifest.csv"
    assert manifest.is_file() and (mammo_data / "synth.json").is_file()
    result = run("data", "check", str(manifest), "-q")
    assert result.returncode == 0, result.stderr
    assert "no problems found" in result.stdout and "H1" in result.stdout
    out = tmp_path / "preview.png"
    assert (
        main(["data", "preview", str(manifest), "--out", str(out), "--per-hospital", "2", "--size", "96"])
        == 0
    )
    assert out.stat().st_size > 1000 and out.read_bytes()[:4] == b"\x89PNG"


def test_fundus_synth_and_preview(tmp_path):
    out = tmp_path / "fundus"
    assert (
        main(
            [
                "synth",
                "fundus",
                "--out",
                str(out),
                "--n-per-hospital",
                "3",
                "--hospitals",
                "2",
                "--size",
                "96",
                "-q",
            ]
        )
        == 0
    )
    assert main(["data", "check", str(out / "manifest.csv"), "-q"]) == 0
    png = tmp_path / "f.png"
    assert (
        main(
            [
                "data",
                "preview",
                str(out / "manifest.csv"),
                "--out",
                str(png),
                "--size",
                "64",
                "--set",
                "data.kind=fundus",
            ]
        )
        == 0
    )
    assert png.is_file()


def test_check_reports_corrupt_file_without_traceback(mammo_data, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(mammo_data, copy)
    victim = sorted((copy / "images").glob("*.dcm"))[0]
    victim.write_bytes(victim.read_bytes()[:2000])  # truncated
    result = run("data", "check", str(copy / "manifest.csv"), "-q")
    assert result.returncode == 2
    assert victim.name in result.stderr and "1 problem(s) found" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        (["data", "check", "/nonexistent/manifest.csv"], 2, "/nonexistent/manifest.csv: manifest not found"),
        (["synth", "mammo", "--out", "{tmp}", "--set", "synth.heigth=3"], 3, "unknown key 'synth.heigth'"),
        (["synth", "mammo", "--out", "{tmp}", "--n-per-hospital", "0"], 3, "'synth.n_per_hospital'"),
        (["synth", "mammo", "--out", "{tmp}", "--config", "/no/such.yaml"], 3, "config file not found"),
    ],
)
def test_user_errors_are_one_line(tmp_path, args, code, expected):
    result = run(*[a.replace("{tmp}", str(tmp_path / "o")) for a in args])
    assert result.returncode == code
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_debug_shows_traceback():
    result = run("--debug", "data", "check", "/nonexistent/manifest.csv")
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_train_classifier_via_cli(synth_mammo, tmp_path):
    run_dir = tmp_path / "run"
    args = [
        "train-classifier",
        "-q",
        "--run-dir",
        str(run_dir),
        "--test-domain",
        "H1",
        *tiny_args(synth_mammo),
    ]
    assert main(args) == 0
    assert (run_dir / "config.yaml").is_file() and (run_dir / "env.json").is_file()
    assert (run_dir / "classifier" / "metrics.json").is_file()
    import json

    env = json.loads((run_dir / "env.json").read_text())
    assert env["seed"] == 0 and env["versions"]["torch"]
    result = run(
        *args[:1],
        "--run-dir",
        str(run_dir),
        "--set",
        f"data.manifest={synth_mammo}",
        "--set",
        "data.image_size=32",
        "--set",
        "classifier.epochs=2",
    )
    assert result.returncode == 3 and "made by a different config" in result.stderr
    assert "Traceback" not in result.stderr


def test_cams_on_a_folder_that_is_not_a_run(tmp_path):
    result = run("cams", "--run", str(tmp_path / "nothing"))
    assert result.returncode == 2 and "not a run directory" in result.stderr
    assert not (tmp_path / "nothing").exists()  # nothing generated into a mistyped path


def test_error_messages_keep_square_brackets(capsys):
    # rich would read "[low, high]" as a markup tag and drop it from the one-line error.
    assert main(["pipeline", "-q", "--set", "segmenter.size_prior={A: [0.5, 0.2]}"]) == 3
    err = capsys.readouterr().err
    assert "must be [low, high] with 0 <= low <= high <= 1; got [0.5, 0.2]" in " ".join(err.split())
