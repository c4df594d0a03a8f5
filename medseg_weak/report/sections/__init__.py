"""The page's sections, in page order. A section is one module with ``build(ctx) -> Section | None``
(None when its stage did not run) and one entry here."""

from __future__ import annotations

from collections.abc import Callable

from medseg_weak.report.context import ReportContext
from medseg_weak.report.sections import (
    benchmark,
    classifier,
    data,
    folds,
    interpret,
    invariance,
    nested,
    quality,
    run,
    segmenter,
    weak_labels,
)
from medseg_weak.report.views import Section

SECTIONS: tuple[Callable[[ReportContext], Section | list[Section] | None], ...] = (
    run.build,
    data.build,
    classifier.build,
    weak_labels.build,
    segmenter.build,
    quality.build,
    interpret.build,
    invariance.build,
    benchmark.build,
    folds.build,
    nested.build,
)
