"""Every README table that quotes a measurement matches the committed results file it came from."""

from __future__ import annotations

import csv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_table(first_header_cell: str) -> list[list[str]]:
    """The README's Markdown table whose header starts with ``| first_header_cell |`` (rows only)."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header_cell} |"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_invariance_matrix_table_matches_its_results_file():
    with (ROOT / "docs/results/invariance_matrix.csv").open() as f:
        results = {row["train"]: row for row in csv.DictReader(f)}
    columns = ["rotation", "brightness", "contrast", "gaussian_blur", "vendor_curve", "held_out_accuracy"]
    rows = readme_table("trained with")
    assert [r[0] for r in rows] == [name for name in results if name != "mean"]
    for name, *cells in rows:
        assert cells == [f"{float(results[name][c]):.3f}" for c in columns], name
