"""Document token counts for routing are remembered by the document's hash: a document asked about again is not
tokenized again (the router's counts against the joined text are in tests/test_router.py)."""

from __future__ import annotations

from mamba_router.routing.token_counts import DocumentTokenCounts


def test_a_document_is_counted_once_per_counter_and_the_oldest_are_forgotten() -> None:
    calls: list[str] = []

    def count(text: str) -> int:
        calls.append(text)
        return len(text.split())

    counts = DocumentTokenCounts(most=2)
    assert counts.count("tok-a", "one two three", count) == 3
    assert counts.count("tok-a", "one two three", count) == 3
    assert len(calls) == 1
    assert counts.count("tok-b", "one two three", count) == 3  # another tokenizer counts for itself
    assert len(calls) == 2
    counts.count("tok-a", "four", count)  # a third entry: the least recently used ("tok-a", "one two three") goes
    counts.count("tok-a", "one two three", count)
    assert len(calls) == 4
