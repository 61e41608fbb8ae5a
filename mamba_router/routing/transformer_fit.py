"""Make a request fit the Transformer's context window, or say clearly that it does not.

Nothing is cut unless ``model_routing.truncation`` asks for it; then the context (never the query) is cut to the
tokens that fit, from its end (``keep_start``) or from its start (``keep_end``), and the result reports it.
"""

from __future__ import annotations

from typing import Any

from mamba_router.errors import ContextTooLongError
from mamba_router.generation.protocols import LoadedModel
from mamba_router.generation.requests import compose_context_prompt
from mamba_router.routing.decisions import Truncation

MAX_REFITS = 4


def prompt_tokens(model: LoadedModel, prompt: str) -> int:
    """Tokens the model reads for ``prompt``, special tokens included (as ``generate`` encodes it)."""
    encode = getattr(model, "encode", None)
    if encode is not None:
        return int(encode(prompt).numel())
    return model.count_tokens(prompt)


def fit_to_window(
    model: LoadedModel, query: str, context: str | None, *, max_new_tokens: int, mode: str
) -> tuple[str, Truncation | None]:
    """The prompt to send (context first, question after it) and what was cut, if anything."""
    prompt = compose_context_prompt(query, context)
    window = model.context_window
    if window is None:
        return prompt, None
    needed = prompt_tokens(model, prompt) + max_new_tokens
    if needed <= window:
        return prompt, None
    if mode == "off" or not context:
        raise ContextTooLongError(
            f"the request needs {needed} tokens (prompt + max_new_tokens={max_new_tokens}) but the Transformer "
            f"{model.model_id} reads at most {window}; it was not truncated. Route it to Mamba (install the Mamba "
            "backend for this platform, or turn it on), shorten the context, lower max_new_tokens, or set "
            "model_routing.truncation to 'keep_start' or 'keep_end'"
        )
    return _truncate(model, query, context, window=window, max_new_tokens=max_new_tokens, mode=mode)


def _truncate(
    model: LoadedModel, query: str, context: str, *, window: int, max_new_tokens: int, mode: str
) -> tuple[str, Truncation]:
    tokenizer: Any = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise ContextTooLongError(f"{model.model_id} exposes no tokenizer, so its context cannot be truncated")
    context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    overhead = prompt_tokens(model, compose_context_prompt(query, "x")) - 1  # the query, separator and specials
    keep = window - max_new_tokens - overhead
    for _ in range(MAX_REFITS):
        if keep <= 0:
            raise ContextTooLongError(
                f"the query and max_new_tokens={max_new_tokens} alone fill {model.model_id}'s window of {window} "
                "tokens; no context can fit. Lower max_new_tokens or shorten the query"
            )
        kept_ids = context_ids[:keep] if mode == "keep_start" else context_ids[-keep:]
        kept = tokenizer.decode(kept_ids, skip_special_tokens=True)
        prompt = compose_context_prompt(query, kept)
        overflow = prompt_tokens(model, prompt) + max_new_tokens - window
        if overflow <= 0:
            return prompt, Truncation(
                mode=mode,  # type: ignore[arg-type]
                context_tokens_before=len(context_ids),
                context_tokens_after=len(kept_ids),
                window=window,
            )
        keep -= overflow  # re-tokenising at the cut can merge or split a few tokens; shave them off and retry
    raise ContextTooLongError(f"could not truncate the context to fit {model.model_id}'s window of {window} tokens")
