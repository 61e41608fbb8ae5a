"""Request bodies of the HTTP API: OpenAI's chat and text completions (the fields this server honours; unknown
fields are ignored, as OpenAI-compatible servers do) and the seed's ``/query``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mamba_router.generation.requests import MAX_NEW_TOKENS_LIMIT, MAX_SEED


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Body):
    """One part of a message's content; only text parts are read."""

    type: str
    text: str | None = None


class ChatMessage(_Body):
    """One chat turn."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None


class StreamOptions(_Body):
    """``stream_options``: with ``include_usage`` a last chunk carries the token counts."""

    include_usage: bool = False


class _Sampling(_Body):
    """Settings shared by chat and text completions, plus this server's extras (``context``, ``pages``, ``top_k``)."""

    model: str = Field(min_length=1, max_length=512)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_NEW_TOKENS_LIMIT)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_NEW_TOKENS_LIMIT)
    temperature: float | None = Field(default=None, ge=0, le=100)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    n: int = Field(default=1, ge=1, le=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    context: str | list[str] | None = Field(default=None, description="documents the question is about")
    pages: int | None = Field(default=None, ge=0)

    def options(self) -> dict[str, Any]:
        """The router's generation keywords for these settings."""
        wanted = self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
        return {
            "max_new_tokens": wanted,
            "temperature": self.temperature if self.temperature is not None else 0.0,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "stop": self.stop,
            "seed": self.seed,
            "pages": self.pages,
        }

    @property
    def include_usage(self) -> bool:
        """Whether a streamed answer ends with a usage chunk."""
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_Sampling):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)


class CompletionRequest(_Sampling):
    """``POST /v1/completions``."""

    prompt: str | list[str]


class QueryRequest(_Body):
    """``POST /query``: a question, optionally about documents."""

    query: str = Field(min_length=1)
    context: str | list[str] | None = None
    model: Literal["auto", "mamba", "transformer"] = "auto"
    max_new_tokens: int | None = Field(default=None, ge=1, le=MAX_NEW_TOKENS_LIMIT)
    pages: int | None = Field(default=None, ge=0)
    dry_run: bool = Field(default=False, description="only decide the route; load no model")
