"""Runs nested in this one (the demo puts its fundus run in ``runs/demo/fundus``): their quality,
interpretability and invariance sections on the same page, titled with the nested run's name."""

from __future__ import annotations

import dataclasses

from medseg_weak.config import load_config
from medseg_weak.report.context import ReportContext
from medseg_weak.report.sections import interpret, invariance, quality
from medseg_weak.report.views import Section
from medseg_weak.rundir import FOLDS, RunDir

BUILDERS = (quality.build, interpret.build, invariance.build)


def nested_runs(run: RunDir) -> list[RunDir]:
    """Sub-folders of ``run`` that are runs themselves (a config.yaml), leave-one-out folds aside."""
    if not run.root.is_dir():
        return []
    return [
        RunDir(p)
        for p in sorted(run.root.iterdir())
        if p.is_dir() and p.name != FOLDS and (p / "config.yaml").is_file()
    ]


def build(ctx: ReportContext) -> list[Section]:
    from medseg_weak.report.stage import finished_stages

    sections = []
    for child in nested_runs(ctx.run):
        sub = ReportContext(
            cfg=load_config(child.root / "config.yaml"),
            run=child,
            out=ctx.out,
            manifest=None,
            stages=finished_stages(child),
            prefix=f"{ctx.prefix}{child.root.name}_",
        )
        for builder in BUILDERS:
            section = builder(sub)
            if section is not None:
                name = child.root.name
                intro = f"Nested run {name} ({sub.cfg.name}). {section.intro}"
                sections.append(
                    dataclasses.replace(
                        section, id=f"{name}-{section.id}", title=f"{section.title}: {name}", intro=intro
                    )
                )
    return sections
