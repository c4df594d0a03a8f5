"""Reading a written report back: sections, tables, and every picture and link it refers to."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path


@dataclass
class Page:
    sections: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    table_rows: list[int] = field(default_factory=list)  # body rows per table
    scripts: list[str] = field(default_factory=list)  # external script sources (there must be none)
    styles: list[str] = field(default_factory=list)  # external style sheets (none)


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.page = Page()
        self._in_body = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section":
            self.page.sections.append(a.get("id") or "")
        elif tag == "img":
            self.page.images.append(a.get("src") or "")
        elif tag == "a":
            self.page.links.append(a.get("href") or "")
        elif tag == "table":
            self.page.table_rows.append(0)
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.page.table_rows[-1] += 1
        elif tag == "script" and a.get("src"):
            self.page.scripts.append(a["src"] or "")
        elif tag == "link":
            self.page.styles.append(a.get("href") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "tbody":
            self._in_body = False


def read_page(path: Path) -> Page:
    parser = _Parser()
    parser.feed(path.read_text())
    return parser.page


def unresolved(page_path: Path) -> list[str]:
    """The page's pictures and links that do not resolve to a file beside it (or reach the network)."""
    from urllib.parse import urlparse

    page = read_page(page_path)
    bad = []
    for ref in [*page.images, *page.links]:
        url = urlparse(ref)
        if url.fragment and not url.path:
            continue
        if url.scheme or url.netloc or not (page_path.parent / url.path).is_file():
            bad.append(ref)
    return bad
