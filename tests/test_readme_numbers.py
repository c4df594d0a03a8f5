"""Every README table that quotes a measurement matches the committed results file it came from."""

from __future__ import annotations

import csv
import re
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


def _tables(text: str) -> list[tuple[int, list[str]]]:
    """(line index of the header, the table's lines) for every Markdown table outside code blocks."""
    lines, tables, fenced, i = text.splitlines(), [], False, 0
    while i < len(lines):
        if lines[i].startswith("```"):
            fenced = not fenced
        if not fenced and lines[i].startswith("|"):
            start = i
            while i < len(lines) and lines[i].startswith("|"):
                i += 1
            tables.append((start, lines[start:i]))
            continue
        i += 1
    return tables


MARKER = re.compile(r"<!-- from (docs/results/[\w./-]+) -->")


def test_every_measured_readme_table_is_copied_from_a_results_file():
    """A table with measured numbers (x.yyy) is preceded by ``<!-- from docs/results/F.md -->`` and
    appears in F line for line, so no README number is typed by hand; the invariance table is the one
    rounded from its CSV (checked above)."""
    text = (ROOT / "README.md").read_text()
    lines = text.splitlines()
    checked = 0
    for start, table in _tables(text):
        if table[0].startswith("| trained with |") or not any(re.search(r"\d\.\d{3}", row) for row in table):
            continue
        marker = next(
            (
                MARKER.search(lines[j])
                for j in range(start - 1, max(start - 4, -1), -1)
                if MARKER.search(lines[j])
            ),
            None,
        )
        assert marker, f"README table at line {start + 1} ({table[0]}) names no results file"
        source = (ROOT / marker.group(1)).read_text().splitlines()
        found = any(source[k : k + len(table)] == table for k in range(len(source)))
        assert found, f"README table at line {start + 1} differs from {marker.group(1)}"
        checked += 1
    assert checked >= 1
