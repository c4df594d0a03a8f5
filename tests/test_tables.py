import math

import pytest

from medseg_weak.tables import Table, summarise


def test_summarise_known_values():
    cell = summarise([1.0, 2.0, 3.0])
    assert cell.mean == 2.0 and cell.n == 3
    assert cell.se == pytest.approx(1.0 / math.sqrt(3))  # sample std 1.0
    assert cell.std == pytest.approx(1.0) and cell.n == 3 and summarise([0.5]).std == 0.0
    assert summarise([0.5]).format() == "0.500"
    assert summarise([]).format() == "-"


def test_table_aggregates_repeats_and_averages_columns(tmp_path):
    values = [
        ("erm", "H1", 0.5),
        ("erm", "H1", 0.7),
        ("erm", "H2", 0.9),
        ("erm", "H2", 0.7),
        ("pcgrad", "H1", 0.6),
    ]
    table = Table.from_values("accuracy", values)
    assert table.rows == ["erm", "pcgrad"] and table.columns == ["H1", "H2", "average"]
    assert table.cell("erm", "H1").mean == pytest.approx(0.6)
    # per-seed averages: (0.5 + 0.9) / 2 = 0.7 and (0.7 + 0.7) / 2 = 0.7 -> mean 0.7, se 0
    assert table.cell("erm", "average").mean == pytest.approx(0.7) and table.cell("erm", "average").se == 0
    assert table.cell("pcgrad", "average").n == 0  # pcgrad lacks H2: no average claimed
    md = table.to_markdown()
    assert "| erm | 0.600 ± 0.100 | 0.800 ± 0.100 | 0.700 ± 0.000 |" in md
    assert "| pcgrad | 0.600 | - | - |" in md
    paths = table.write(tmp_path, "t")
    assert [p.name for p in paths] == ["t.csv", "t.md", "t.png"] and all(p.stat().st_size > 0 for p in paths)
    lines = tmp_path.joinpath("t.csv").read_text().splitlines()
    assert lines[0].startswith("row,H1_mean,H1_se,H1_n,H1_std,")
    assert lines[1].startswith("erm,0.6,0.1,2,0.141421,")  # values 0.5 and 0.7: std 0.1 * sqrt(2)
