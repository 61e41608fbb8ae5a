"""How a prompt, or a document and a question, become the token ids a model reads: plain text or its chat template.

``prompt_format``: ``"plain"`` reads the text as it is (the tokenizer's special tokens added), ``"chat"`` puts it in
the user turn of the tokenizer's chat template (after an optional system prompt) and adds the generation prompt,
``"auto"`` (the default) is ``"chat"`` when the tokenizer has a template. In chat, the ids are exactly
``tokenizer.apply_chat_template(messages, add_generation_prompt=True)``.

A question about a document is ``document + "\\n\\n" + question`` in both formats. A document state holds the ids up
to the document's end (inside the template in chat), and a question continues with the ids of the rest. The cut is
placed where tokenizing the two halves gives the ids of the whole prompt; where a tokenizer merges the document's
last characters with what follows (Llama-3's pre-tokenizer joins ``".\\n\\n"``), the cut moves back over those few
characters, which the state keeps as its ``tail`` and every question reads first. So ``ask`` stays token for token
equal to reading everything from scratch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from mamba_router.errors import InvalidRequestError
from mamba_router.generation.requests import compose_context_prompt, context_prompt_parts, shown

PromptFormat = Literal["auto", "chat", "plain"]
PROMPT_FORMATS: tuple[PromptFormat, ...] = ("auto", "chat", "plain")
PLACEHOLDER = "\u2063DOCUMENT\u2063"  # stands for the document when only the text after it is needed
PROBE_QUESTION = "?"
MAX_TAIL_CHARACTERS = 16  # how far back the cut may move to find a place where the tokenizer does not merge


def check_prompt_format(value: object) -> PromptFormat:
    """``value`` when it is one of ``auto``, ``chat``, ``plain``; else an InvalidRequestError naming them."""
    if value not in PROMPT_FORMATS or not isinstance(value, str):
        raise InvalidRequestError(f"prompt_format must be one of {list(PROMPT_FORMATS)}, got {shown(value)}")
    return value


@dataclass(frozen=True)
class DocumentCut:
    """The ids a document state holds and the document characters after them that each question reads first."""

    ids: list[int]
    tail: str


class PromptLayout:
    """Token ids for prompts and document questions with one tokenizer, in either format."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    @property
    def has_chat_template(self) -> bool:
        """True when the tokenizer carries a chat template."""
        return bool(getattr(self.tokenizer, "chat_template", None))

    def resolve(self, prompt_format: object) -> Literal["chat", "plain"]:
        """The format used: ``auto`` becomes ``chat`` when there is a template; ``chat`` without one is an error."""
        chosen = check_prompt_format(prompt_format)
        if chosen == "auto":
            return "chat" if self.has_chat_template else "plain"
        if chosen == "chat" and not self.has_chat_template:
            raise InvalidRequestError(
                "prompt_format='chat' but this model's tokenizer has no chat template; use 'plain' or 'auto'"
            )
        return chosen

    def prompt_ids(self, text: str, fmt: Literal["chat", "plain"], system_prompt: str | None = None) -> list[int]:
        """The ids of a whole prompt: ``text`` as it is, or as the user turn of the chat template."""
        if fmt == "plain":
            return self._ids(text, specials=True)
        return self._ids(self.render(text, system_prompt), specials=False)

    def render(self, user_text: str, system_prompt: str | None = None) -> str:
        """The chat template's text for one user turn (after the system prompt, if any) and the generation prompt."""
        messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        messages.append({"role": "user", "content": user_text})
        try:
            rendered = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception as exc:  # a template that rejects the messages (e.g. no system role)
            raise InvalidRequestError(
                f"the chat template refused the prompt: {type(exc).__name__}: {exc}; use prompt_format='plain'"
            ) from exc
        return str(rendered)

    def cut_document(
        self, document: str, fmt: Literal["chat", "plain"], system_prompt: str | None = None
    ) -> DocumentCut:
        """Where a document state ends for ``document``: ids that every question about it starts with."""
        whole = self._question_text(document, PROBE_QUESTION, fmt, system_prompt)
        core = document.strip()
        # where the document ends: just before the text that follows it (the template's text before it, such as a
        # role name, may contain the document's text too when the document is short)
        at = whole.rfind(core + context_prompt_parts(PROBE_QUESTION, document)[1]) if core else -1
        end = at + len(core) if at >= 0 else -1
        if end < 0:
            raise InvalidRequestError("the chat template changed the document's text; use prompt_format='plain'")
        specials = fmt == "plain"
        expected, offsets = self._ids_and_offsets(whole, specials=specials)
        if offsets is not None:
            cut = _cut_at_token(whole, end, expected, offsets, lambda text: self._ids(text, specials=False))
            if cut is not None:
                return cut
        prefix, suffix = whole[:end], whole[end:]
        for back in range(min(MAX_TAIL_CHARACTERS, len(prefix) - 1) + 1):
            head = self._ids(prefix[: len(prefix) - back], specials=specials)
            if head + self._ids(prefix[len(prefix) - back :] + suffix, specials=False) == expected:
                return DocumentCut(head, prefix[len(prefix) - back :])
        raise InvalidRequestError(
            "this tokenizer merges the end of the document with the question, so a document state cannot be cut "
            "exactly; ask with the document instead (generate_with_state_space)"
        )

    def question_ids(
        self, question: str, tail: str, fmt: Literal["chat", "plain"], system_prompt: str | None = None
    ) -> list[int]:
        """The ids a question reads after a document state whose cut left ``tail``."""
        whole = self._question_text(PLACEHOLDER, question, fmt, system_prompt)
        return self._ids(tail + whole[whole.index(PLACEHOLDER) + len(PLACEHOLDER) :], specials=False)

    def _question_text(
        self, document: str, question: str, fmt: Literal["chat", "plain"], system_prompt: str | None
    ) -> str:
        user_text = compose_context_prompt(question, document)
        return user_text if fmt == "plain" else self.render(user_text, system_prompt)

    def _ids(self, text: str, *, specials: bool) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=specials)["input_ids"])

    def _ids_and_offsets(self, text: str, *, specials: bool) -> tuple[list[int], list[tuple[int, int]] | None]:
        """The ids of ``text`` and each token's character span (None from a tokenizer that cannot give spans)."""
        try:
            encoded = self.tokenizer(text, add_special_tokens=specials, return_offsets_mapping=True)
        except (NotImplementedError, ValueError, TypeError):  # a slow (Python) tokenizer has no spans
            return self._ids(text, specials=specials), None
        return list(encoded["input_ids"]), [tuple(span) for span in encoded["offset_mapping"]]


def _cut_at_token(
    whole: str, end: int, ids: list[int], offsets: list[tuple[int, int]], encode: Callable[[str], list[int]]
) -> DocumentCut | None:
    """A cut at a token boundary of the whole prompt's own ids: the state reads ``ids[:k]`` (what reading the whole
    prompt reads first), and the question's text from the boundary on must tokenize to ``ids[k:]``. Checking that
    takes a short tokenization per candidate, where cutting the text and tokenizing the document again would take
    a whole one. None when no boundary within MAX_TAIL_CHARACTERS of the document's end checks out."""
    for k in range(len(ids) - 1, 0, -1):
        start, stop = offsets[k - 1]
        if stop <= start or stop > end:
            continue  # a special token (no span), or a token that reaches past the document's end
        if end - stop > MAX_TAIL_CHARACTERS:
            return None
        if encode(whole[stop:]) == ids[k:]:
            return DocumentCut(ids[:k], whole[stop:end])
    return None


def end_of_turn_ids(tokenizer: Any) -> list[int]:
    """The special token the chat template puts after an assistant's reply (``<|im_end|>``, ``<|eot_id|>``, ...),
    found by rendering a reply; empty without a template."""
    if not getattr(tokenizer, "chat_template", None):
        return []
    marker = "\u2063REPLY\u2063"
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "q"}, {"role": "assistant", "content": marker}], tokenize=False
        )
    except Exception:  # a template that cannot render a reply: no end-of-turn token to add
        return []
    after = str(text)[str(text).rindex(marker) + len(marker) :] if marker in str(text) else ""
    special = set(getattr(tokenizer, "all_special_ids", []) or []) | set(
        getattr(tokenizer, "added_tokens_decoder", {}) or {}
    )
    ids = tokenizer(after, add_special_tokens=False)["input_ids"] if after else []
    return [next(i for i in ids if i in special)] if any(i in special for i in ids) else []
