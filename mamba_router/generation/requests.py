"""A generation request, checked: prompt, length, sampling settings, stop strings and seed, each with a typed error.

Also the one prompt layout every backend reads for a question about a document: the document first, the question
after it (:func:`compose_context_prompt`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from mamba_router.errors import InvalidRequestError

MAX_NEW_TOKENS_LIMIT = 131_072
MAX_STOP_STRINGS = 32
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class GenerationRequest:
    """A checked generation request."""

    prompt: str
    max_new_tokens: int
    temperature: float
    top_k: int | None
    top_p: float | None
    stop: tuple[str, ...]
    seed: int | None

    @property
    def greedy(self) -> bool:
        """True when tokens are chosen by argmax (temperature 0)."""
        return self.temperature == 0.0


def shown(value: object) -> str:
    """A bad value as an error message shows it: short, and never failing (a 5,000-digit integer has no repr)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**18:
        return f"an integer of about {int(abs(value).bit_length() * 0.30103) + 1} digits"
    try:
        text = repr(value)
    except Exception:  # e.g. a list holding a 5,000-digit integer
        return f"a {type(value).__name__}"
    return text if len(text) <= 80 else text[:77] + "..."


def is_blank(text: str) -> bool:
    """True for an empty or all-whitespace string; unlike ``strip`` it copies nothing (a 1 MB document costs ~0)."""
    return not text or text.isspace()


def check_text(value: object, what: str, *, allow_empty: bool = False) -> str:
    """Return ``value`` if it is a string of valid Unicode (non-blank unless ``allow_empty``); else raise
    InvalidRequestError naming ``what`` and, for bad text, the character offset (never the text)."""
    if not isinstance(value, str):
        raise InvalidRequestError(f"{what} must be a str, got {type(value).__name__}")
    try:
        if not value.isascii():  # ASCII text is valid; only other text is encoded (a copy) to find surrogates
            value.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates: undecodable bytes from argv, "\ud800" from JSON
        raise InvalidRequestError(
            f"{what} is not valid Unicode text: an unpaired surrogate (or undecodable byte) at character {exc.start}; "
            "decode the input as UTF-8 first"
        ) from None
    if not allow_empty and is_blank(value):
        raise InvalidRequestError(f"{what} is empty; pass the text to generate from")
    return value


def check_request(
    prompt: object,
    *,
    max_new_tokens: object = 256,
    temperature: object = 0.0,
    top_k: object = None,
    top_p: object = None,
    stop: object = None,
    seed: object = None,
) -> GenerationRequest:
    """Validate generation arguments and return them typed; every problem is an InvalidRequestError."""
    text = check_text(prompt, "prompt")
    new_tokens = _int_in(
        max_new_tokens, 1, MAX_NEW_TOKENS_LIMIT, f"max_new_tokens must be an int from 1 to {MAX_NEW_TOKENS_LIMIT}"
    )
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise InvalidRequestError(f"temperature must be a number >= 0, got {shown(temperature)}")
    if not _finite(temperature) or temperature < 0:
        raise InvalidRequestError(f"temperature must be a finite number >= 0 (0 is greedy), got {shown(temperature)}")
    k = None if top_k is None else _int_in(top_k, 1, None, "top_k must be None or an int >= 1")
    if top_p is not None:
        if isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not (0.0 < top_p <= 1.0):
            raise InvalidRequestError(f"top_p must be None or a number in (0, 1], got {shown(top_p)}")
    chosen_seed = None if seed is None else _int_in(seed, 0, MAX_SEED, "seed must be None or an int from 0 to 2**63-1")
    return GenerationRequest(
        prompt=text,
        max_new_tokens=new_tokens,
        temperature=float(temperature),
        top_k=k,
        top_p=float(top_p) if top_p is not None else None,
        stop=_check_stop(stop),
        seed=chosen_seed,
    )


def _finite(value: float) -> bool:
    """True for a number that is a finite float (an integer too large for a float is not)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _int_in(value: object, low: int, high: int | None, message: str) -> int:
    """``value`` when it is an int (not a bool) in [low, high]; else InvalidRequestError(message, got value)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        raise InvalidRequestError(f"{message}, got {shown(value)}")
    return value


def _check_stop(stop: object) -> tuple[str, ...]:
    if stop is None:
        return ()
    items = [stop] if isinstance(stop, str) else stop
    if not isinstance(items, (list, tuple)):
        raise InvalidRequestError(f"stop must be a str or a list of str, got {type(stop).__name__}")
    if len(items) > MAX_STOP_STRINGS:
        raise InvalidRequestError(f"stop has {len(items)} strings; at most {MAX_STOP_STRINGS} are allowed")
    for item in items:
        if not isinstance(item, str) or item == "":
            raise InvalidRequestError(f"every stop string must be a non-empty str, got {shown(item)}")
    return tuple(dict.fromkeys(items))


def compose_context_prompt(question: str, context: str | None) -> str:
    """The text a model reads for a question about a document: the document first, the question after it."""
    document, rest = context_prompt_parts(question, context)
    return rest if document is None else document + rest


def context_prompt_parts(question: str, context: str | None) -> tuple[str | None, str]:
    """:func:`compose_context_prompt`'s text in two parts: the document as it stands there (None without one) and
    the text after it, so that a document's part can be handled once for many questions."""
    check_text(question, "prompt")
    if context is None:
        return None, question
    check_text(context, "context", allow_empty=True)
    if is_blank(context):
        return None, question
    return context.rstrip(), f"\n\n{question}"


SAMPLING_ARGUMENTS = frozenset({"temperature", "top_k", "top_p", "stop", "seed"})
GENERATION_ARGUMENTS = SAMPLING_ARGUMENTS | {"max_new_tokens", "stream", "prompt_format", "system_prompt"}


def generation_kwargs(**kwargs: Any) -> dict[str, Any]:
    """Keep only the keyword arguments that ``generate`` accepts (used by compatibility wrappers)."""
    return _only(kwargs, GENERATION_ARGUMENTS)


def sampling_kwargs(**kwargs: Any) -> dict[str, Any]:
    """Keep only the sampling keyword arguments (temperature, top_k, top_p, stop, seed)."""
    return _only(kwargs, SAMPLING_ARGUMENTS)


def _only(kwargs: dict[str, Any], allowed: frozenset[str]) -> dict[str, Any]:
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise InvalidRequestError(f"unknown generation argument(s) {unknown}; allowed: {sorted(allowed)}")
    return kwargs
