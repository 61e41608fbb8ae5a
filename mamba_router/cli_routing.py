"""The routing subcommands of the CLI: ``route``, ``generate``, ``log`` and ``config``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from mamba_router.errors import InvalidRequestError
from mamba_router.routing.config import LoadedConfig, load_config
from mamba_router.routing.records import RouteDecision, RoutedResult
from mamba_router.routing.routing_log import RoutingLog


def run(args: argparse.Namespace, out: Console) -> int:
    """Dispatch one routing subcommand; returns the exit status."""
    loaded = load_config(args.config)
    if args.command == "route":
        return _route(args, loaded, out)
    if args.command == "generate":
        return _generate(args, loaded, out)
    if args.command == "log":
        return _log(args, loaded, out)
    if args.command == "config":
        return _config(args, loaded, out)
    raise InvalidRequestError(f"unknown command {args.command!r}")  # pragma: no cover - argparse checks


def _read_documents(paths: list[str]) -> list[str]:
    documents = []
    for name in paths:
        path = Path(name)
        if not path.is_file():
            raise InvalidRequestError(f"--context-file {name!r} does not exist or is not a file")
        try:
            documents.append(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise InvalidRequestError(f"--context-file {name!r} is not UTF-8 text ({exc}); convert it first") from None
    return documents


def _router(loaded: LoadedConfig) -> Any:
    from mamba_router.routing.router import Router

    return Router(loaded)


def _route(args: argparse.Namespace, loaded: LoadedConfig, out: Console) -> int:
    decision = _router(loaded).route(args.query, _read_documents(args.context_file) or None, pages=args.pages)
    if args.json:
        print(decision.model_dump_json(indent=2))
    else:
        _print_decision(decision, out)
    return 0


def _generate(args: argparse.Namespace, loaded: LoadedConfig, out: Console) -> int:
    result = _router(loaded).generate(
        args.query,
        _read_documents(args.context_file) or None,
        pages=args.pages,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        seed=args.seed,
    )
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        _print_result(result, out)
    return 0


def _choice_markup(model_used: str, backend: str, fallback_used: bool, reason: str | None) -> str:
    colour = "yellow" if fallback_used else "green"
    text = f"[{colour}]{escape(model_used)}[/] ({escape(backend)})"
    if fallback_used:
        text += f"\n          [yellow]fallback:[/] {escape(reason or '')}"
    return text


def _print_decision(decision: RouteDecision, out: Console) -> None:
    out.print(
        f"[bold]route[/]     {_choice_markup(decision.model_used, decision.backend, decision.fallback_used, decision.fallback_reason)}"
    )
    out.print(f"[bold]model[/]     {escape(decision.model)}")
    how = "an estimate" if decision.token_count_method == "estimate" else f"tokenizer of {decision.token_counter}"
    out.print(
        f"[bold]input[/]     {decision.token_count} tokens ({escape(how)}), {decision.pages} pages, "
        f"{decision.documents} document(s)"
    )
    for rule in decision.rules:
        mark = "[green]fired[/]" if rule.fired else "[dim]-[/]    "
        out.print(f"  {mark} [bold]{escape(rule.name)}[/]: {escape(rule.detail)}")
    out.print(f"[dim]decided in {decision.decide_ms:.2f} ms, no model loaded (id {decision.decision_id})[/]")


def _print_result(result: RoutedResult, out: Console) -> None:
    out.print(f"[bold]answer[/]    {escape(result.text)}")
    out.print(
        f"[bold]answered[/]  {_choice_markup(result.model_used, result.backend, result.fallback_used, result.fallback_reason)}"
    )
    for attempt in result.attempts:
        outcome = "[green]ok[/]" if attempt.ok else f"[red]failed[/] {escape(f'{attempt.error_type}: {attempt.error}')}"
        out.print(f"  attempt {escape(attempt.backend)} ({attempt.elapsed_ms:.0f} ms): {outcome}")
    if result.document_state is not None:
        out.print(f"[bold]document[/]  state {result.document_state} (Mamba reads a document once per router)")
    if result.truncation is not None:
        t = result.truncation
        out.print(
            f"[yellow]truncated[/] context {t.context_tokens_before} -> {t.context_tokens_after} tokens "
            f"({t.mode}, window {t.window})"
        )
    _print_decision(result.decision, out)
    g = result.generation
    out.print(
        f"[dim]prompt {g.prompt_tokens} tokens, answer {g.completion_tokens} tokens, prefill "
        f"{g.timings.prefill_ms:.1f} ms, total {g.timings.total_ms:.1f} ms on {escape(g.device)}[/]"
    )


def _log(args: argparse.Namespace, loaded: LoadedConfig, out: Console) -> int:
    if args.limit < 0:
        raise InvalidRequestError(f"--limit must be 0 or more, got {args.limit}")
    settings = loaded.config.log
    log = RoutingLog(settings.path, max_bytes=settings.max_bytes, backups=settings.backups)
    readout = log.read(args.limit)
    if args.json:
        for record in readout.records:
            print(json.dumps(record, ensure_ascii=False))
    else:
        out.print(
            f"[bold]routing log[/] {escape(str(settings.path))} (last {len(readout.records)} records, oldest first)"
        )
        for r in readout.records:
            fired = ",".join(rule["name"] for rule in r.get("rules", []) if rule.get("fired")) or "none"
            estimated = "~" if r.get("token_count_method") == "estimate" else ""
            line = (
                f"{str(r.get('time', ''))[:19]} {r.get('kind', '?'):8} {r.get('model_used', '?')}/{r.get('backend', '?')}"
                f" tokens={r.get('token_count', '?')}{estimated} pages={r.get('pages', '?')} fired={fired}"
                f" outcome={r.get('outcome', 'decided')}"
            )
            out.print(escape(line), style="yellow" if r.get("fallback_used") or r.get("outcome") == "error" else None)
            if r.get("fallback_used"):
                out.print(f"    fallback: {escape(str(r.get('fallback_reason')))}", style="dim")
            if r.get("outcome") == "error":
                out.print(f"    error: {escape(str(r.get('error_type')))}: {escape(str(r.get('error')))}", style="dim")
        if not readout.files:
            out.print(f"[dim]no log yet at {escape(str(settings.path))}[/]")
    if readout.malformed_lines:
        Console(stderr=True, soft_wrap=True).print(
            f"[yellow]warning:[/] {readout.malformed_lines} line(s) in the log are not valid JSON"
        )
    return 0


def _config(args: argparse.Namespace, loaded: LoadedConfig, out: Console) -> int:
    rows = loaded.effective()
    if args.json:
        print(
            json.dumps({key: {"value": value, "source": source} for key, value, source in rows}, indent=2, default=str)
        )
        return 0
    out.print(f"[bold]router configuration[/] (file: {escape(str(loaded.file or 'none'))})")
    for key, value, source in rows:
        shown = ", ".join(value) if isinstance(value, tuple) else "auto" if value is None else str(value)
        style = "dim" if source == "default" else "bold"
        out.print(f"  {escape(key)} = {escape(shown)}  [{style}]({escape(source)})[/]")
    return 0
