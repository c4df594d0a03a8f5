"""The report stage: one static HTML page of everything a run holds, into ``<run>/report/``.

It needs the stages whose outputs it shows (so their digests are part of its fingerprint and a
retrained segmenter rewrites the page); which those are depends on the run: the pipeline's plan,
or the finished stages found in a run directory (:func:`finished_stages`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medseg_weak.config import Config
from medseg_weak.rundir import RunDir
from medseg_weak.stages import Stage, StageContext, StageResult

REPORT = "report"
FORMAT = 1  # bump when the page's content changes, so finished reports are rewritten


@dataclass(frozen=True)
class ReportResult(StageResult):
    @property
    def page(self) -> Path:
        return self.folder / "index.html"

    def summary(self) -> dict[str, Any]:
        return {"page": self.page.name}

    def key_files(self) -> list[Path]:
        return [self.page]


def finished_stages(run: RunDir) -> tuple[str, ...]:
    """The stages of ``run`` whose stage.json says complete (the report excluded), in name order."""
    if not run.root.is_dir():
        return ()
    names = []
    for folder in sorted(p for p in run.root.iterdir() if p.is_dir() and p.name != REPORT):
        state = run.read_state(folder.name)
        if state is not None and state.get("complete"):
            names.append(folder.name)
    return tuple(names)


class ReportStage(Stage):
    """``needs``: the stages to show (they must have finished)."""

    name = REPORT

    def __init__(self, needs: Sequence[str]) -> None:
        self.needs = tuple(needs)

    def fingerprint(self, cfg: Config) -> dict[str, Any]:
        return {"format": FORMAT, "stages": list(self.needs)}

    def run(self, ctx: StageContext) -> ReportResult:
        from medseg_weak.report.context import ReportContext
        from medseg_weak.report.render import write_page

        report = ReportContext(ctx.cfg, ctx.run, ctx.out, ctx.manifest, self.needs)
        write_page(report, f"{ctx.cfg.name} ({ctx.run.root.name})")
        return ReportResult(ctx.out)

    def load(self, ctx: StageContext) -> ReportResult:
        return ReportResult(ctx.out)
