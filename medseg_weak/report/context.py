"""What every section builder sees: the run, the page's folder, the split manifest, the config.

Section builders read the run's files and copy the pictures they show next to the page, so the
report folder is self-contained (it opens from disk, or zipped and sent, without the run)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg_weak.config import Config
from medseg_weak.rundir import RunDir


@dataclass
class ReportContext:
    cfg: Config
    run: RunDir
    out: Path  # the report folder: index.html and its pictures
    manifest: Any  # medseg_weak.data.manifest.Manifest (split), or None where the run has none
    stages: tuple[str, ...]  # the finished stages whose outputs the page shows
    timings: dict[str, float] = field(default_factory=dict)  # this report's own, seconds per part
    prefix: str = ""  # figure names of a nested run's sections start with it (no clash with the parent's)

    def has(self, stage: str) -> bool:
        return stage in self.stages

    def figure_path(self, name: str) -> Path:
        path = self.out / "img" / f"{self.prefix}{name}"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def copy_figure(self, source: Path, name: str) -> str | None:
        """Copy ``source`` beside the page as img/``name``; its page-relative path (None if missing)."""
        if not source.is_file():
            return None
        shutil.copyfile(source, self.figure_path(name))
        return self.rel(self.figure_path(name))

    def rel(self, path: Path) -> str:
        return path.relative_to(self.out).as_posix()
