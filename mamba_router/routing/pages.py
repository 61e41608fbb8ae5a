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

from mamba_router.generation.requests import is_blank

PageSource = Literal["caller", "page-of-markers", "form-feeds", "none"]

# Patterns that start with a plain literal let the regex engine skip ahead fast (about 1.5 ms per MB); the "P" and
# the word boundary before it are checked on each hit.
_PAGE_OF = re.compile(r"age\s+\d{1,6}\s*(?:of|OF|Of|/)\s*(\d{1,6})\b")
_PAGE_OF_UPPER = re.compile(r"AGE\s+\d{1,6}\s*(?:OF|of|Of|/)\s*(\d{1,6})\b")
MAX_PAGES = 1_000_000  # the most pages a document is taken to have (counted or given)


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
    if is_blank(text):
        return PageCount(0, "none")
    totals = [t for t in _page_totals(text) if 0 < t <= MAX_PAGES]
    if totals:
        return PageCount(max(totals), "page-of-markers")
    if "\f" in text:
        pages = sum(1 for part in text.split("\f") if not is_blank(part))
        return PageCount(max(pages, 1), "form-feeds")
    return PageCount(1, "none")


def _page_totals(text: str) -> list[int]:
    totals = []
    for pattern, initials in ((_PAGE_OF, "Pp"), (_PAGE_OF_UPPER, "P")):
        if pattern is _PAGE_OF_UPPER and "AGE" not in text:
            continue
        for match in pattern.finditer(text):
            start = match.start()
            if start >= 1 and text[start - 1] in initials and (start < 2 or not _is_word_char(text[start - 2])):
                totals.append(int(match.group(1)))
    return totals


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char == "_"


def count_document_pages(documents: list[str]) -> PageCount:
    """Pages of several documents together; the source is that of the first document with markers."""
    counts = [count_pages(d) for d in documents]
    total = sum(c.pages for c in counts)
    source: PageSource = next((c.source for c in counts if c.source != "none"), "none")
    return PageCount(total, source)
