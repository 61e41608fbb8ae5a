"""Legal keywords in a query: whole words, any case."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

from mamba_router.settings.schema import DEFAULT_LEGAL_KEYWORDS


@lru_cache(maxsize=32)
def _pattern(keywords: tuple[str, ...]) -> re.Pattern[str]:
    # Longest first so that "judgement" is not shadowed by a shorter alternative; \b is Unicode-aware, so a keyword
    # inside a longer word ("orderly", "showcase", "case_no") never matches.
    alternatives = "|".join(re.escape(k) for k in sorted(keywords, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def find_keywords(text: str, keywords: Sequence[str]) -> list[str]:
    """The keywords (as configured, lower-cased, de-duplicated, in order of first appearance) found in ``text``."""
    if not keywords or not text:
        return []
    lowered = {k.casefold(): k.casefold() for k in keywords}
    found: dict[str, None] = {}
    for match in _pattern(tuple(lowered)).finditer(text):
        found.setdefault(match.group(0).casefold(), None)
    return list(found)


__all__ = ["DEFAULT_LEGAL_KEYWORDS", "find_keywords"]
