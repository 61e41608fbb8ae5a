"""What a loaded model returns for one prompt: the text, its tokens, how it ended, and timings (pydantic records)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

FinishReason = Literal["eos", "stop", "length"]
DocumentStateUse = Literal["reused", "read"]  # a question about a document: its kept state reused, or read now


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Timings(_Record):
    """Wall-clock timings of one generation, in milliseconds."""

    prefill_ms: float
    decode_ms: float
    total_ms: float
    time_to_first_token_ms: float | None = None
    decode_tokens_per_second: float | None = None
    queue_ms: float | None = Field(
        default=None, description="time waiting for a batching engine (prefill_ms includes it)"
    )


class GenerationResult(_Record):
    """What a loaded model produced for one prompt."""

    text: str
    token_ids: list[int] = Field(default_factory=list, description="generated token ids, EOS included")
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason
    stop_sequence: str | None = None
    backend: str
    device: str
    model_id: str
    timings: Timings

    def __str__(self) -> str:
        return self.text
