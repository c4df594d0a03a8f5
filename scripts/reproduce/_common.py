"""What every reproduce script shares: running the real CLI, and the provenance lines each results
file starts with (command, commit, machine, package versions, seconds)."""

from __future__ import annotations

import csv
import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results"
CLI = ROOT / ".venv" / "bin" / "medseg-weak"


def _head() -> str:
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip()


START_COMMIT = _head()  # the code the measurement ran, not whatever HEAD is when it ends


def medseg_weak(*args: str) -> None:
    """One CLI call; its output goes to the terminal's stderr side so the script's stdout stays the table."""
    subprocess.run([str(CLI), *args], check=True, cwd=ROOT, stdout=sys.stderr)


def provenance(seconds: float, config: str, seed: int = 0) -> list[str]:
    from medseg_weak.provenance import environment_info

    info = environment_info(seed)
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v)
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    return [
        f"Command: `{command}`  ",
        f"Config: `{config}`, seed {seed}; commit `{START_COMMIT}`; {os.cpu_count()} CPU cores; "
        f"{seconds:.0f} s (finished stages are reused on reruns).  ",
        f"Python {info['python']}: {versions}.",
    ]


def read_table(path: Path) -> dict[str, dict[str, str]]:
    """A medseg-weak table CSV (``row, <column>_mean, _se, _n, _std``) as {row: {field: value}}."""
    with path.open(newline="") as f:
        return {r["row"]: r for r in csv.DictReader(f)}


def cell(row: dict[str, str], column: str, se: bool = False) -> str:
    mean = float(row[f"{column}_mean"])
    return f"{mean:.3f} ± {float(row[f'{column}_se']):.3f}" if se else f"{mean:.3f}"
