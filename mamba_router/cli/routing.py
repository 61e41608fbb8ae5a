"""The routing subcommands of the CLI: ``route``, ``generate``, ``log`` and ``config``.

Decisions and results are printed from their views (:mod:`mamba_router.routing.decisions`), the same lines as
their plain text, coloured here."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from mamba_router.backends.reports import detection_source_line
from mamba_router.errors import InvalidRequestError
from mamba_router.routing.decisions import (
    RouteDecision,
    RoutedResult,
    ViewLine,
    decision_view,
    result_view,
    short_reason,
)
from mamba_router.routing.routing_log import RoutingLog
from mamba_router.settings.schema import LoadedConfig, load_config


def run_routing(args: argparse.Namespace, out: Console) -> int:
    """Dispatch one routing subcommand; returns the exit status."""
    loaded = load_config(args.config, overrides=_model_overrides(args))
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
        except OSError as exc:  # unreadable: permissions, a file removed meanwhile
            raise InvalidRequestError(f"--context-file {name!r} cannot be read: {exc.strerror or exc}") from None
    return documents


def _model_overrides(args: argparse.Namespace) -> dict[str, str]:
    """The config keys that ``--model``, ``--mamba-model`` and ``--transformer-model`` set (they win over the file
    and the environment); ``--model`` goes where its checkpoint's family says."""
    overrides: dict[str, str] = {}
    chosen = [(getattr(args, "model", None), None), (getattr(args, "mamba_model", None), "mamba")]
    chosen.append((getattr(args, "transformer_model", None), "transformer"))
    for model, kind in chosen:
        if model is None:
            continue
        if kind is None:
            kind = "mamba" if _is_mamba_checkpoint(model) else "transformer"
        if kind == "mamba":
            overrides.update({"mamba.real_model": model, "mamba.mamba2_model": model})
        else:
            overrides["transformer.model"] = model
    return overrides


def _is_mamba_checkpoint(model: str) -> bool:
    from mamba_router.models.checkpoint import read_config_json
    from mamba_router.models.registry import has_mamba_layers
    from mamba_router.models.source import resolve_model_source

    source = resolve_model_source(model)
    if source.local_path is None:
        raise InvalidRequestError(
            f"--model {model!r}: its config.json is not on this machine, so whether it is a Mamba or a Transformer "
            "model is unknown; use --mamba-model or --transformer-model"
        )
    return has_mamba_layers(read_config_json(source.local_path), model)


def _router(loaded: LoadedConfig) -> Any:
    from mamba_router.routing.router import Router

    return Router(loaded)


def _route(args: argparse.Namespace, loaded: LoadedConfig, out: Console) -> int:
    router = _router(loaded)
    decision = router.route(args.query, _read_documents(args.context_file) or None, pages=args.pages)
    if args.json:
        print(decision.model_dump_json(indent=2))
    else:
        _print_decision(decision, out)
        print_view([_detected_line(router)], out)
    return 0


def _detected_line(router: Any) -> ViewLine:
    """How the router found its backends and what it took: apart from the decision, paid once per process."""
    return ViewLine("detected", detection_source_line(router.detection.source, router.detection.elapsed_ms), "dim")


def _generate(args: argparse.Namespace, loaded: LoadedConfig, out: Console) -> int:
    router = _router(loaded)
    result = router.generate(
        args.query,
        _read_documents(args.context_file) or None,
        pages=args.pages,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        seed=args.seed,
        prompt_format=args.prompt_format,
        system_prompt=args.system_prompt,
    )
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        _print_result(result, out)
        print_view([_detected_line(router)], out)
    return 0


TONE_STYLE = {"plain": "", "good": "green", "warn": "yellow", "bad": "red", "dim": "dim"}


def print_view(lines: list[ViewLine], out: Console) -> None:
    """A record's view (the same lines ``str()`` gives), with bold labels and coloured tones."""
    for line in lines:
        style = TONE_STYLE[line.tone]
        text = f"[{style}]{escape(line.text)}[/]" if style else escape(line.text)
        out.print(f"[bold]{escape(line.label):<9}[/]{text}")


def _print_decision(decision: RouteDecision, out: Console) -> None:
    print_view(decision_view(decision), out)


def _print_result(result: RoutedResult, out: Console) -> None:
    print_view(result_view(result), out)


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
            fired = " ".join(f"[x] {rule['name']}" for rule in r.get("rules", []) if rule.get("fired")) or "[ ] none"
            estimated = "~" if r.get("token_count_method") == "estimate" else ""
            field = {
                k: "?" if r.get(k) is None else str(r[k])
                for k in ("kind", "model_used", "backend", "token_count", "pages")
            }
            line = (
                f"{str(r.get('time') or '')[:19]} {field['kind']:8} {field['model_used']}/{field['backend']}"
                f" tokens={field['token_count']}{estimated} pages={field['pages']} {fired}"
                f" outcome={r.get('outcome') or 'decided'}"
            )
            out.print(escape(line), style="yellow" if r.get("fallback_used") or r.get("outcome") == "error" else None)
            if r.get("fallback_used"):
                out.print(f"    fallback: {escape(short_reason(str(r.get('fallback_reason'))))}", style="dim")
            if r.get("outcome") == "error":
                out.print(f"    error: {escape(str(r.get('error_type')))}: {escape(str(r.get('error')))}", style="dim")
        if not readout.files:
            out.print(f"[dim]no log yet at {escape(str(settings.path))}[/]")
    if readout.malformed_lines:
        Console(stderr=True, soft_wrap=True).print(
            f"[yellow]warning:[/] {readout.malformed_lines} line(s) in the log are not routing records (skipped)"
        )
    return 0


def _config(args: argparse.Namespace, loaded: LoadedConfig, out: Console) -> int:
    """Without --show: the settings that are not at their defaults, and where each came from; --show: every key."""
    every = loaded.effective()
    rows = every if args.show else [row for row in every if row[2] != "default"]
    if args.json:
        print(
            json.dumps({key: {"value": value, "source": source} for key, value, source in rows}, indent=2, default=str)
        )
        return 0
    out.print(f"[bold]configuration[/] (file: {escape(str(loaded.file or 'none'))})")
    for key, value, source in rows:
        shown = ", ".join(value) if isinstance(value, tuple) else "(not set)" if value is None else str(value)
        style = "dim" if source == "default" else "bold"
        out.print(f"  {escape(key)} = {escape(shown)}  [{style}]({escape(source)})[/]")
    if not args.show:
        out.print(f"  [dim]{len(every) - len(rows)} other keys at their defaults; --show lists every key[/]")
    return 0
