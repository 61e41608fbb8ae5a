"""Typed records of routing: each rule's result, the decision, and a routed answer. They render in a terminal
(``str``) and in a notebook (``_repr_html_``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mamba_router.records import Family, GenerationResult, Timings

TokenCountMethod = Literal["tokenizer", "estimate"]


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RuleResult(_Record):
    """One rule: whether it fired and the inputs it looked at, in words (``detail``) and as values (``inputs``)."""

    name: str
    fired: bool
    detail: str
    inputs: dict[str, Any] = Field(default_factory=dict)


class RouteDecision(_Record):
    """Where one request goes and why. Built without loading a model (``Router.route``)."""

    decision_id: str
    time: datetime
    model_used: Family = Field(description="'mamba' or 'transformer': the family that answers")
    backend: str = Field(description="the backend that answers: real-mamba, mamba2, transformer, ...")
    model: str = Field(description="the model id or directory that backend loads")
    fallback_used: bool = Field(description="a rule asked for Mamba but the Transformer answers")
    fallback_reason: str | None = None
    rules: list[RuleResult]
    token_count: int = Field(description="tokens of context + query")
    token_count_method: TokenCountMethod
    token_counter: str = Field(description="the tokenizer's model id, or 'estimate'")
    pages: int
    page_source: str
    documents: int = Field(description="number of context documents")
    query_chars: int
    context_chars: int
    mamba_backend: str | None = Field(description="the Mamba backend usable here, or None")
    mamba_unavailable_reason: str | None = None
    decide_ms: float

    @property
    def fired_rules(self) -> list[str]:
        """Names of the rules that fired."""
        return [r.name for r in self.rules if r.fired]

    @property
    def reasons(self) -> list[str]:
        """One sentence per fired rule, then the fallback reason if any."""
        lines = [f"{r.name}: {r.detail}" for r in self.rules if r.fired]
        if self.fallback_used and self.fallback_reason:
            lines.append(f"fallback: {self.fallback_reason}")
        return lines

    def to_text(self) -> str:
        """A few readable lines for a terminal or a log viewer."""
        from mamba_router.routing.render import decision_to_text

        return decision_to_text(self)

    def __str__(self) -> str:
        return self.to_text()

    def _repr_html_(self) -> str:
        from mamba_router.routing.render import decision_to_html

        return decision_to_html(self)


class Attempt(_Record):
    """One try at answering: the backend, and the error if it failed."""

    backend: str
    model_used: Family
    ok: bool
    error_type: str | None = None
    error: str | None = None
    elapsed_ms: float


class Truncation(_Record):
    """What was cut from the context to fit the Transformer's window (only when truncation is configured)."""

    mode: Literal["keep_start", "keep_end"]
    context_tokens_before: int
    context_tokens_after: int
    window: int


class RoutedResult(_Record):
    """An answer and the full story of how it was produced."""

    text: str
    model_used: Family
    backend: str
    model: str
    fallback_used: bool
    fallback_reason: str | None = None
    decision: RouteDecision
    attempts: list[Attempt]
    truncation: Truncation | None = None
    document_state: Literal["reused", "read"] | None = Field(
        default=None, description="Mamba answered from the document's cached state ('reused') or read it now ('read')"
    )
    generation: GenerationResult
    timings: Timings
    decide_ms: float

    @property
    def rules(self) -> list[RuleResult]:
        """The decision's rule results."""
        return self.decision.rules

    @property
    def token_count(self) -> int:
        """Tokens of context + query, as the decision counted them."""
        return self.decision.token_count

    def to_text(self) -> str:
        """The answer, then how it was routed."""
        from mamba_router.routing.render import result_to_text

        return result_to_text(self)

    def __str__(self) -> str:
        return self.to_text()

    def _repr_html_(self) -> str:
        from mamba_router.routing.render import result_to_html

        return result_to_html(self)
