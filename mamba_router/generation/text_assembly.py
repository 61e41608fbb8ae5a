"""Token ids to text one token at a time, as a stream shows it: never half a character, never the start of a stop
string that may still complete.

Two ways to the next piece of text. In general the ids since the last released text are decoded with and without the
newest one and the difference is the new text (what transformers' streamers do): two calls into the tokenizer per
token. A byte-level BPE tokenizer (GPT-2's scheme, used by GPT-NeoX/Mamba, Granite, Llama 3 and others) maps every
token to fixed bytes, so :class:`ByteLevelDetokenizer` looks each token's bytes up once and the text comes out of an
incremental UTF-8 decoder: the same text as decoding the whole sequence, at a table lookup per token (a batch of 64
rows decodes a token each every millisecond).
"""

from __future__ import annotations

import codecs
import threading
import weakref
from collections.abc import Sequence
from typing import Any, Protocol


class Detokenizer(Protocol):
    """The part of a tokenizer the text assembler needs."""

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = ...) -> str: ...


class _BackendDetokenizer:
    """A fast tokenizer's decoding without the Python layers around it (the same text, about 5x less time a call,
    which counts when a batch of 64 rows decodes a token each every millisecond)."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return str(self._backend.decode(list(token_ids), skip_special_tokens=skip_special_tokens))


def fast_detokenizer(tokenizer: Detokenizer) -> Detokenizer:
    """``tokenizer``'s decoding, straight from its Rust backend when that gives the same text (a transformers fast
    tokenizer with its stock ``_decode`` and no clean-up of tokenization spaces); else ``tokenizer`` itself."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or getattr(tokenizer, "clean_up_tokenization_spaces", True):
        return tokenizer
    try:
        from transformers import PreTrainedTokenizerFast
    except ImportError:  # pragma: no cover - transformers is a dependency of every tokenizer that has a backend
        return tokenizer
    stock = getattr(PreTrainedTokenizerFast, "_decode", None)
    if stock is None or getattr(type(tokenizer), "_decode", None) is not stock:
        return tokenizer
    if _byte_level(backend):
        return _byte_level_detokenizer(tokenizer, backend)
    return _BackendDetokenizer(backend)


_byte_level_detokenizers: weakref.WeakKeyDictionary[Any, ByteLevelDetokenizer] = weakref.WeakKeyDictionary()
_byte_level_lock = threading.Lock()


def _byte_level_detokenizer(tokenizer: Any, backend: Any) -> ByteLevelDetokenizer:
    """``tokenizer``'s :class:`ByteLevelDetokenizer`, built once (its table takes about 60 ms for 50,280 tokens, and
    every ``generate`` asks for it) and again only if the vocabulary grew since (tokens added)."""
    size = backend.get_vocab_size(with_added_tokens=True)
    with _byte_level_lock:
        cached = _byte_level_detokenizers.get(tokenizer)
        if cached is None or cached._backend is not backend or len(cached.token_bytes) != size:
            cached = ByteLevelDetokenizer(backend)
            _byte_level_detokenizers[tokenizer] = cached
        return cached


class _PairwiseText:
    """New text by decoding twice per token (the ids since the last released text, with and without the newest)
    and taking the difference; a tail that ends in an incomplete character waits for the next token."""

    def __init__(self, tokenizer: Detokenizer) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0

    def add(self, token_id: int) -> str:
        self._ids.append(token_id)
        return self._new_text(final=False)

    def finish(self) -> str:
        return self._new_text(final=True)

    def _new_text(self, *, final: bool) -> str:
        decode = self._tokenizer.decode
        prefix = decode(self._ids[self._prefix_offset : self._read_offset], skip_special_tokens=True)
        full = decode(self._ids[self._prefix_offset :], skip_special_tokens=True)
        if len(full) > len(prefix) and (final or not full.endswith("\ufffd")):
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
            return full[len(prefix) :]
        return ""


class _ByteText:
    """New text from each token's bytes through an incremental UTF-8 decoder, which holds an incomplete character
    back until its last byte comes (a byte-level tokenizer: see :class:`ByteLevelDetokenizer`)."""

    def __init__(self, token_bytes: Sequence[bytes]) -> None:
        self._token_bytes = token_bytes
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")

    def add(self, token_id: int) -> str:
        table = self._token_bytes
        return self._utf8.decode(table[token_id] if token_id < len(table) else b"")

    def finish(self) -> str:
        return self._utf8.decode(b"", final=True)


class TextAssembler:
    """Turns generated token ids into text pieces, holding back partial characters and partial stop strings."""

    def __init__(self, tokenizer: Detokenizer, stop: tuple[str, ...] = ()) -> None:
        token_bytes = tokenizer.token_bytes if isinstance(tokenizer, ByteLevelDetokenizer) else None
        self._source = _ByteText(token_bytes) if token_bytes is not None else _PairwiseText(tokenizer)
        self._stop = stop
        self._text = ""
        self._emitted = 0
        self.stop_sequence: str | None = None

    @property
    def stopped(self) -> bool:
        """True once a stop string has appeared; the text ends just before it."""
        return self.stop_sequence is not None

    @property
    def text(self) -> str:
        """The text released so far."""
        return self._text[: self._emitted]

    def add(self, token_id: int) -> str:
        """Add one token; return the text that is now safe to show (may be empty)."""
        self._text += self._source.add(token_id)
        return self._release(final=False)

    def finish(self) -> str:
        """End of generation: decode what was held back and return the last piece."""
        if not self.stopped:
            self._text += self._source.finish()
        return self._release(final=True)

    def _release(self, *, final: bool) -> str:
        if self.stopped:
            return ""
        safe_end = len(self._text)
        if self._stop:
            hit = self._find_stop()
            if hit is not None:
                index, sequence = hit
                self.stop_sequence = sequence
                self._text = self._text[:index]
                safe_end = index
            elif not final:
                safe_end -= self._held_back()
        piece = self._text[self._emitted : safe_end]
        self._emitted = safe_end
        return piece

    def _find_stop(self) -> tuple[int, str] | None:
        best: tuple[int, str] | None = None
        for sequence in self._stop:
            index = self._text.find(sequence, self._emitted)
            if index >= 0 and (best is None or index < best[0]):
                best = (index, sequence)
        return best

    def _held_back(self) -> int:
        """Length of the longest tail of the text that could still grow into a stop string."""
        tail = self._text[self._emitted :]
        longest = 0
        for sequence in self._stop:
            for size in range(min(len(sequence) - 1, len(tail)), longest, -1):
                if tail.endswith(sequence[:size]):
                    longest = size
                    break
        return longest


def _byte_alphabet() -> dict[str, int]:
    """GPT-2's byte-level alphabet, character -> byte: printable Latin-1 bytes stand for themselves, the other bytes
    (controls, space, soft hyphen...) for the characters from U+0100 on, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1)]
    printable += range(ord("\u00ae"), ord("\u00ff") + 1)
    alphabet = {chr(byte): byte for byte in printable}
    shifted = (byte for byte in range(256) if chr(byte) not in alphabet)
    alphabet.update({chr(256 + index): byte for index, byte in enumerate(shifted)})
    return alphabet


def _byte_level(backend: Any) -> bool:
    try:
        from tokenizers import decoders
    except ImportError:  # pragma: no cover - a backend tokenizer comes from the tokenizers package
        return False
    return isinstance(backend.decoder, decoders.ByteLevel)


class ByteLevelDetokenizer(_BackendDetokenizer):
    """A byte-level BPE tokenizer's decoding, with every token's bytes as decoding it with ``skip_special_tokens``
    gives them (:attr:`token_bytes`): the byte-level decoder turns a token whose characters are all in the byte
    alphabet into those bytes, and any other (an added token) into its UTF-8; special tokens give none."""

    def __init__(self, backend: Any) -> None:
        super().__init__(backend)
        alphabet = _byte_alphabet()
        special = {index for index, token in backend.get_added_tokens_decoder().items() if token.special}
        table: list[bytes] = []
        for index in range(backend.get_vocab_size(with_added_tokens=True)):
            token = backend.id_to_token(index)
            if token is None or index in special:
                table.append(b"")
            elif all(char in alphabet for char in token):
                table.append(bytes(alphabet[char] for char in token))
            else:
                table.append(token.encode("utf-8"))
        self.token_bytes: tuple[bytes, ...] = tuple(table)


__all__ = ["ByteLevelDetokenizer", "Detokenizer", "TextAssembler", "fast_detokenizer"]
