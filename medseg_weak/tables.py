"""Result tables: mean ± standard error over repeats, written as CSV and Markdown (and a bar plot).

The CSV also holds each cell's sample standard deviation and count (the spread of per-image scores).

Shared by every stage that reports "rows x columns over seeds" (DG benchmark, model search, held-out
segmentation), so the numbers people compare are always aggregated the same way.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from medseg_weak.io_utils import atomic_write, atomic_write_text


@dataclass(frozen=True)
class Cell:
    mean: float
    se: float
    n: int
    std: float = float("nan")  # sample standard deviation (n - 1); 0 for one value

    def format(self, digits: int = 3) -> str:
        if self.n == 0:
            return "-"
        if self.n == 1:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.se:.{digits}f}"


def summarise(values: Sequence[float]) -> Cell:
    """Mean, standard error of the mean (sample std / sqrt(n)) and sample std; NaNs are not averaged away."""
    n = len(values)
    if n == 0:
        return Cell(float("nan"), float("nan"), 0)
    mean = sum(values) / n
    if n == 1:
        return Cell(mean, 0.0, 1, 0.0)
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return Cell(mean, math.sqrt(var / n), n, math.sqrt(var))


@dataclass(frozen=True)
class Table:
    title: str
    rows: list[str]
    columns: list[str]
    cells: dict[tuple[str, str], Cell]

    @classmethod
    def from_values(
        cls, title: str, values: Iterable[tuple[str, str, float]], average_column: str | None = "average"
    ) -> Table:
        """Build from (row, column, value) triples; repeats of a (row, column) are aggregated.

        ``average_column`` adds the mean over columns of each row's per-column means (DomainBed's
        "Avg"), with the standard error taken over the per-seed averages where repeats line up.
        """
        grouped: dict[tuple[str, str], list[float]] = defaultdict(list)
        rows: list[str] = []
        columns: list[str] = []
        for row, column, value in values:
            grouped[row, column].append(float(value))
            if row not in rows:
                rows.append(row)
            if column not in columns:
                columns.append(column)
        cells = {key: summarise(vals) for key, vals in grouped.items()}
        if average_column and len(columns) > 1:
            for row in rows:
                per_column = [grouped.get((row, c), []) for c in columns]
                repeats = min(len(v) for v in per_column)
                averages = [sum(v[i] for v in per_column) / len(columns) for i in range(repeats)]
                cells[row, average_column] = summarise(averages)
            columns = [*columns, average_column]
        return cls(title, rows, columns, cells)

    def cell(self, row: str, column: str) -> Cell:
        return self.cells.get((row, column), Cell(float("nan"), float("nan"), 0))

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["row", *[f"{c}_{k}" for c in self.columns for k in ("mean", "se", "n", "std")]])
        for row in self.rows:
            writer.writerow([row, *[v for c in self.columns for v in _csv_fields(self.cell(row, c))]])
        return buf.getvalue()

    def to_markdown(self, digits: int = 3) -> str:
        lines = [f"| {self.title} | " + " | ".join(self.columns) + " |"]
        lines.append("|---|" + "---:|" * len(self.columns))
        for row in self.rows:
            lines.append(
                f"| {row} | " + " | ".join(self.cell(row, c).format(digits) for c in self.columns) + " |"
            )
        return "\n".join(lines) + "\n"

    def write(self, folder: Path, stem: str, plot: bool = True) -> list[Path]:
        folder = Path(folder)
        paths = [
            atomic_write_text(folder / f"{stem}.csv", self.to_csv()),
            atomic_write_text(folder / f"{stem}.md", self.to_markdown()),
        ]
        if plot:
            paths.append(self.plot(folder / f"{stem}.png"))
        return paths

    def plot(self, path: Path) -> Path:
        """Grouped bars (one group per column, one bar per row) with standard-error whiskers."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(self.columns) * max(1, len(self.rows)) / 3, 3.2))
        width = 0.8 / max(1, len(self.rows))
        for i, row in enumerate(self.rows):
            cells = [self.cell(row, c) for c in self.columns]
            xs = [j + (i - (len(self.rows) - 1) / 2) * width for j in range(len(self.columns))]
            ax.bar(xs, [c.mean for c in cells], width, yerr=[c.se for c in cells], label=row, capsize=2)
        ax.set_xticks(range(len(self.columns)), self.columns)
        ax.set_title(self.title, fontsize=9)
        ax.legend(fontsize=7, ncol=min(4, len(self.rows)))
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
        plt.close(fig)
        return Path(path)


def _csv_fields(cell: Cell) -> list[str]:
    if cell.n == 0:
        return ["", "", "0", ""]
    return [f"{cell.mean:.6g}", f"{cell.se:.6g}", str(cell.n), f"{cell.std:.6g}"]
