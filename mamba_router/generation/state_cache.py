"""Document states in memory: :class:`DocumentStateCache` keeps them by document hash within a byte budget, least
recently used out first. Torch-free (a state is only held here), so the router can make one without importing torch."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from mamba_router.errors import ConfigurationError

if TYPE_CHECKING:
    from mamba_router.generation.document_state import DocumentState


def document_hash(document: str) -> str:
    """SHA-256 of the document text (the cache key; never the text itself)."""
    return hashlib.sha256(document.encode("utf-8", errors="surrogatepass")).hexdigest()


def system_prompt_hash(system_prompt: str | None) -> str:
    """SHA-256 of a system prompt ("" for none): a state read after one is only asked after the same one."""
    return "" if not system_prompt else document_hash(system_prompt)


class DocumentStateCache:
    """Document states in memory, keyed by (model identity, document hash), within ``max_bytes``; LRU eviction."""

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        if max_bytes < 0:
            raise ConfigurationError(f"the state cache budget must be 0 or more bytes, got {max_bytes}")
        self.max_bytes = max_bytes
        self._states: OrderedDict[tuple[str, str], DocumentState] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        """Bytes held now."""
        return sum(s.nbytes for s in self._states.values())

    def __len__(self) -> int:
        return len(self._states)

    def get_or_read(
        self, identity: str, document: str, read: Callable[[], DocumentState]
    ) -> tuple[DocumentState, bool]:
        """The cached state for ``document`` (and True), or ``read()``'s, cached (and False)."""
        key = (identity, document_hash(document))
        with self._lock:
            state = self._states.get(key)
            if state is not None:
                self._states.move_to_end(key)
                self.hits += 1
                return state, True
            self.misses += 1
        state = read()
        with self._lock:
            if state.nbytes <= self.max_bytes:
                self._states[key] = state
                self._states.move_to_end(key)
                while self.nbytes > self.max_bytes:
                    self._states.popitem(last=False)
        return state, False
