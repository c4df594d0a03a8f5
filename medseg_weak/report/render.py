"""Writing the page: every section builder in page order, then the Jinja2 template, atomically.

The templates, style sheet and script are package files (``templates/``), inlined into the page, so
``index.html`` plus its picture folders is all there is: no server, no CDN, no network."""

from __future__ import annotations

import logging
import time
from importlib import metadata
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from medseg_weak.io_utils import atomic_write_text
from medseg_weak.report.context import ReportContext
from medseg_weak.report.sections import SECTIONS
from medseg_weak.report.views import Section

log = logging.getLogger(__name__)


def environment() -> Environment:
    return Environment(
        loader=PackageLoader("medseg_weak.report", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        undefined=StrictUndefined,  # a typo in a template fails the test, not silently blank
        keep_trailing_newline=True,
    )


def _version() -> str:
    try:
        return metadata.version("medseg-weak")
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "(not installed)"


def build_sections(ctx: ReportContext) -> list[Section]:
    sections = []
    for build in SECTIONS:
        start = time.perf_counter()
        built = build(ctx)
        for section in [built] if isinstance(built, Section) else built or []:
            sections.append(section)
            ctx.timings[section.id] = round(time.perf_counter() - start, 2)
    return sections


def write_page(ctx: ReportContext, title: str) -> Path:
    """Build every section of ``ctx``'s run and write ``<out>/index.html``; return its path."""
    start = time.perf_counter()
    ctx.out.mkdir(parents=True, exist_ok=True)
    sections = build_sections(ctx)
    html = (
        environment()
        .get_template("index.html.j2")
        .render(
            title=title,
            sections=sections,
            version=_version(),
            seconds=f"{time.perf_counter() - start:.1f}",
        )
    )
    path = atomic_write_text(ctx.out / "index.html", html)
    path.chmod(0o644)  # the atomic write's temporary file is private; the page is meant to be shared
    log.info("report: %s (%s)", path, ", ".join(f"{k} {v:.1f} s" for k, v in ctx.timings.items()))
    return path
