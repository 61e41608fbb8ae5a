"""How many pages a document has, from the caller's count or from the page markers in its text.

Markers, in order of trust:

1. "Page N of M" (any case, also "Page N / M"): the largest M seen is the page count of the document.
2. Form feeds (``\\f``), as PDF-to-text tools write between pages: one page more than the number of form feeds
   between non-blank text.

A document without either marker is one page. A list of documents counts its pages together.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

PageSource = Literal["caller", "page-of-markers", "form-feeds", "none"]

_PAGE_OF = re.compile(r"\b[Pp][Aa][Gg][Ee]\s+\d{1,6}\s*(?:of|OF|Of|/)\s*(\d{1,6})\b")
_MAX_PAGES = 1_000_000


@dataclass(frozen=True)
class PageCount:
    """Pages of one document (or of several, summed) and where the number came from."""

    pages: int
    source: PageSource

    def detail(self) -> str:
        """A short phrase for a rule's detail: '3 pages (from "Page N of M" markers)'."""
        origin = {
            "caller": "given by the caller",
            "page-of-markers": 'from "Page N of M" markers',
            "form-feeds": "from form feeds",
            "none": "no page markers",
        }[self.source]
        return f"{self.pages} page{'s' if self.pages != 1 else ''} ({origin})"


def count_pages(text: str) -> PageCount:
    """Pages of one document's text, from its markers; 1 (source 'none') when it has none, 0 when it is empty."""
    if not text.strip():
        return PageCount(0, "none")
    if "age" in text or "AGE" in text:
        totals = [int(m) for m in _PAGE_OF.findall(text)]
        totals = [t for t in totals if 0 < t <= _MAX_PAGES]
        if totals:
            return PageCount(max(totals), "page-of-markers")
    if "\f" in text:
        pages = sum(1 for part in text.split("\f") if part.strip())
        return PageCount(max(pages, 1), "form-feeds")
    return PageCount(1, "none")


def count_document_pages(documents: list[str]) -> PageCount:
    """Pages of several documents together; the source is that of the first document with markers."""
    counts = [count_pages(d) for d in documents]
    total = sum(c.pages for c in counts)
    source = next((c.source for c in counts if c.source != "none"), "none")
    return PageCount(total, source)
