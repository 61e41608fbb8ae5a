"""Token counts of documents, remembered by the document's hash: a judgment asked about many times is tokenized once
for routing instead of on every question (tokenizing a 12k-token document takes tens of milliseconds, more than a
question about its cached state takes to answer)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from mamba_router.generation.state_cache import document_hash

DEFAULT_DOCUMENTS = 4096  # counts remembered (a key and an int each)


class DocumentTokenCounts:
    """Counts by (tokenizer's model, SHA-256 of the text); the least recently used are forgotten first."""

    def __init__(self, most: int = DEFAULT_DOCUMENTS) -> None:
        self.most = most
        self._counts: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._lock = threading.Lock()

    def count(self, counter: str, text: str, count: Callable[[str], int]) -> int:
        """``count(text)``, from memory when ``counter`` has counted the same text before."""
        key = (counter, document_hash(text))
        with self._lock:
            known = self._counts.get(key)
            if known is not None:
                self._counts.move_to_end(key)
                return known
        counted = count(text)
        with self._lock:
            self._counts[key] = counted
            while len(self._counts) > self.most:
                self._counts.popitem(last=False)
        return counted
