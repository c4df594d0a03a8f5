"""matplotlib without a display, and figures written atomically: the one way the package saves plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medseg_weak.io_utils import atomic_write


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend, imported on first use (it costs ~0.5 s)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    """Lay out, write as PNG (a half-written file never appears under ``path``), close."""
    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    pyplot().close(fig)
    return Path(path)
