"""Plain-text and HTML views of routing records."""

from __future__ import annotations

from html import escape

from mamba_router.routing.records import RouteDecision, RoutedResult


def _choice(model_used: str, backend: str, fallback_used: bool, fallback_reason: str | None) -> str:
    line = f"{model_used} ({backend})"
    if fallback_used:
        line += f", fallback: {fallback_reason}"
    return line


def _count(decision: RouteDecision) -> str:
    how = "tokenizer of " + decision.token_counter if decision.token_count_method == "tokenizer" else "estimate"
    return f"{decision.token_count} tokens ({how}), {decision.pages} pages, {decision.documents} document(s)"


def _rule_lines(decision: RouteDecision) -> list[str]:
    return [f"rule     [{'x' if r.fired else ' '}] {r.name}: {r.detail}" for r in decision.rules]


def decision_to_text(decision: RouteDecision) -> str:
    """Route, inputs and one line per rule."""
    lines = [
        f"route    {_choice(decision.model_used, decision.backend, decision.fallback_used, decision.fallback_reason)}",
        f"model    {decision.model}",
        f"input    {_count(decision)}",
        *_rule_lines(decision),
    ]
    lines.append(f"decided  in {decision.decide_ms:.2f} ms (id {decision.decision_id})")
    return "\n".join(lines)


def result_to_text(result: RoutedResult) -> str:
    """The answer, then the routing and the attempts."""
    lines = [
        f"answer   {result.text!r}",
        f"route    {_choice(result.model_used, result.backend, result.fallback_used, result.fallback_reason)}",
        f"input    {_count(result.decision)}",
        *_rule_lines(result.decision),
    ]
    for attempt in result.attempts:
        outcome = "ok" if attempt.ok else f"failed: {attempt.error_type}: {attempt.error}"
        lines.append(f"attempt  {attempt.backend} ({attempt.elapsed_ms:.0f} ms) {outcome}")
    if result.document_state is not None:
        how = "reused the cached state of" if result.document_state == "reused" else "read and cached"
        lines.append(f"document {how} the document")
    if result.truncation is not None:
        t = result.truncation
        lines.append(
            f"truncated context from {t.context_tokens_before} to {t.context_tokens_after} tokens ({t.mode}, "
            f"window {t.window})"
        )
    lines.append(
        f"time     decide {result.decide_ms:.1f} ms, prefill {result.timings.prefill_ms:.1f} ms, "
        f"total {result.timings.total_ms:.1f} ms"
    )
    return "\n".join(lines)


def _rules_html(decision: RouteDecision) -> str:
    rows = "".join(
        f"<tr><td>{'fired' if r.fired else '-'}</td><td>{escape(r.name)}</td><td>{escape(r.detail)}</td></tr>"
        for r in decision.rules
    )
    return f"<table><tr><th></th><th>rule</th><th>detail</th></tr>{rows}</table>"


def _choice_html(model_used: str, backend: str, fallback_used: bool, fallback_reason: str | None) -> str:
    colour = "#b58900" if fallback_used else "#2aa198" if model_used == "mamba" else "#268bd2"
    text = f"<b style='color:{colour}'>{escape(model_used)}</b> ({escape(backend)})"
    if fallback_used:
        text += f"<br><i>fallback:</i> {escape(fallback_reason or '')}"
    return text


def decision_to_html(decision: RouteDecision) -> str:
    """A small HTML card for notebooks."""
    return (
        "<div><b>route</b> "
        + _choice_html(decision.model_used, decision.backend, decision.fallback_used, decision.fallback_reason)
        + f"<br><b>model</b> {escape(decision.model)}<br><b>input</b> {escape(_count(decision))}"
        + _rules_html(decision)
        + f"<small>decided in {decision.decide_ms:.2f} ms</small></div>"
    )


def result_to_html(result: RoutedResult) -> str:
    """The answer and its routing card, for notebooks."""
    attempts = "".join(
        f"<li>{escape(a.backend)}: {'ok' if a.ok else escape(f'{a.error_type}: {a.error}')}</li>"
        for a in result.attempts
    )
    return (
        f"<div><b>answer</b><pre>{escape(result.text)}</pre><b>answered by</b> "
        + _choice_html(result.model_used, result.backend, result.fallback_used, result.fallback_reason)
        + f"<ul>{attempts}</ul>"
        + decision_to_html(result.decision)
        + "</div>"
    )
