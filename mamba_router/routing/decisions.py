"""Typed records of routing: each rule's result, the decision, and a routed answer.

Each record has one view, a list of labelled lines with a tone (:func:`decision_view`, :func:`result_view`); the
plain text (``str``), the notebook HTML (``_repr_html_``) and the CLI's coloured output are renderings of it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mamba_router.backends.reports import Family
from mamba_router.generation.results import DocumentStateUse, GenerationResult, Timings
from mamba_router.routing.token_estimate import ESTIMATE_LABEL

TokenCountMethod = Literal["tokenizer", "estimate"]
Tone = Literal["plain", "good", "warn", "bad", "dim"]


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
    requested_family: Literal["auto", "mamba", "transformer"] = Field(
        default="auto", description="what the caller asked for: the rules' choice, or a family"
    )
    log_error: str | None = Field(default=None, description="why the routing log could not record this decision")

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
        return render_text(decision_view(self))

    def __str__(self) -> str:
        return self.to_text()

    def _repr_html_(self) -> str:
        return f"<div>{render_html(decision_view(self))}{_rules_html(self)}</div>"


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
    document_state: DocumentStateUse | None = Field(
        default=None, description="Mamba answered from the document's cached state ('reused') or read it now ('read')"
    )
    generation: GenerationResult
    timings: Timings
    decide_ms: float
    log_error: str | None = Field(default=None, description="why the routing log could not record this answer")

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
        return render_text(result_view(self))

    def __str__(self) -> str:
        return self.to_text()

    def _repr_html_(self) -> str:
        return (
            f"<div><b>answer</b><pre>{escape(self.text)}</pre>{render_html(result_view(self)[1:])}"
            f"{_rules_html(self.decision)}</div>"
        )


@dataclass(frozen=True)
class ViewLine:
    """One line of a record's view: a short label, the text, and a tone renderers may colour."""

    label: str
    text: str
    tone: Tone = "plain"


def _choice(model_used: str, backend: str, fallback_used: bool, fallback_reason: str | None) -> ViewLine:
    text = f"{model_used} ({backend})" + (f", fallback: {short_reason(fallback_reason or '')}" if fallback_used else "")
    return ViewLine("route", text, "warn" if fallback_used else "good")


SHORT_REASON_CHARS = 120


def short_reason(reason: str) -> str:
    """The head of a reason, for one line of a view: up to the first parenthesis (the per-backend details that
    follow it are in the record's ``fallback_reason`` and ``--json``), at most 120 characters."""
    head = reason.split(" (", 1)[0].strip()
    if len(head) < 10:
        head = reason
    if len(head) > SHORT_REASON_CHARS:
        head = head[: SHORT_REASON_CHARS - 3].rstrip() + "..."
    return head + (" [details: fallback_reason, --json]" if head != reason else "")


def _count(decision: RouteDecision) -> str:
    how = "tokenizer of " + decision.token_counter if decision.token_count_method == "tokenizer" else ESTIMATE_LABEL
    return f"{decision.token_count} tokens ({how}), {decision.pages} pages, {decision.documents} document(s)"


def _decision_body(decision: RouteDecision) -> list[ViewLine]:
    lines = [ViewLine("model", decision.model), ViewLine("input", _count(decision))]
    lines += [
        ViewLine("rule", f"[{'x' if r.fired else ' '}] {r.name}: {r.detail}", "good" if r.fired else "dim")
        for r in decision.rules
    ]
    return lines


def decision_view(decision: RouteDecision) -> list[ViewLine]:
    """Route, model, inputs, one line per rule, and the time it took to decide."""
    return [
        _choice(decision.model_used, decision.backend, decision.fallback_used, decision.fallback_reason),
        *_decision_body(decision),
        ViewLine("decided", f"in {decision.decide_ms:.2f} ms, no model loaded (id {decision.decision_id})", "dim"),
        *_log_error(decision.log_error),
    ]


def result_view(result: RoutedResult) -> list[ViewLine]:
    """The route, its rules, the answer, every attempt, the document state, any truncation, and timings that add up
    (deciding, loading and setting up, prefill, decode)."""
    lines = [
        _choice(result.model_used, result.backend, result.fallback_used, result.fallback_reason),
        *_decision_body(result.decision),
        ViewLine("answer", result.text),
    ]
    for attempt in result.attempts:
        outcome = "ok" if attempt.ok else f"failed: {attempt.error_type}: {attempt.error}"
        lines.append(
            ViewLine(
                "attempt",
                f"{attempt.backend} ({attempt.elapsed_ms:.0f} ms) {outcome}",
                "plain" if attempt.ok else "bad",
            )
        )
    if result.document_state is not None:
        how = "reused the cached state of" if result.document_state == "reused" else "read and cached"
        lines.append(ViewLine("document", f"{how} the document"))
    if result.truncation is not None:
        t = result.truncation
        text = (
            f"context from {t.context_tokens_before} to {t.context_tokens_after} tokens ({t.mode}, window {t.window})"
        )
        lines.append(ViewLine("truncated", text, "warn"))
    g, timings = result.generation, result.timings
    answered = next((a for a in reversed(result.attempts) if a.ok), None)
    setup = max(answered.elapsed_ms - timings.total_ms, 0.0) if answered is not None else 0.0  # loading, reading
    lines.append(
        ViewLine(
            "time",
            f"decide {result.decide_ms:.1f} ms + load and setup {setup:.1f} ms + prefill {timings.prefill_ms:.1f} ms "
            f"+ decode {max(timings.total_ms - timings.prefill_ms, 0.0):.1f} ms; prompt {g.prompt_tokens} tokens, answer "
            f"{g.completion_tokens} tokens on {g.device}",
            "dim",
        )
    )
    return lines + _log_error(result.log_error)


def _log_error(error: str | None) -> list[ViewLine]:
    return [] if error is None else [ViewLine("log", f"not recorded: {error}", "warn")]


def render_text(lines: list[ViewLine]) -> str:
    """Plain text: the label in a column of nine, then the text."""
    return "\n".join(f"{line.label:<8} {line.text}" for line in lines)


def render_html(lines: list[ViewLine]) -> str:
    """A small HTML block for notebooks."""
    colours = {"good": "#2aa198", "warn": "#b58900", "bad": "#dc322f", "dim": "#93a1a1", "plain": "inherit"}
    return "".join(
        f"<b>{escape(line.label)}</b> <span style='color:{colours[line.tone]}'>{escape(line.text)}</span><br>"
        for line in lines
        if line.label != "rule"
    )


def _rules_html(decision: RouteDecision) -> str:
    rows = "".join(
        f"<tr><td>{'fired' if r.fired else '-'}</td><td>{escape(r.name)}</td><td>{escape(r.detail)}</td></tr>"
        for r in decision.rules
    )
    return f"<table><tr><th></th><th>rule</th><th>detail</th></tr>{rows}</table>"
