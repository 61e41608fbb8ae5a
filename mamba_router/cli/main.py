"""The ``mamba-router`` command line (also ``python -m mamba_router``): the parser and the dispatch to one module per
command group (``info``, ``models``, ``demo``, ``route``/``generate``/``log``/``config``, ``lora``)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape

from mamba_router.errors import MambaRouterError
from mamba_router.version import __version__


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="mamba-router",
        description="Run long-document LM work on Mamba where the machine can, on a Transformer where it cannot.",
    )
    parser.add_argument("--version", action="version", version=f"mamba-router {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the library does")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="which backend this machine gets, and why each other one is out")
    info.add_argument("--json", action="store_true", help="print get_mamba_info() as JSON")
    info.add_argument("--config", default=None, help="config file whose [remote] endpoints are checked")

    models = sub.add_parser("models", help="model families, which backends run each here, and what each needs")
    models.add_argument("--json", action="store_true", help="print the report as JSON")

    demo = sub.add_parser("demo", help="offline end-to-end run on a tiny random-weight model and a bundled judgment")
    demo.add_argument("--backend", help="backend to use (default: the detected one)")
    demo.add_argument("--device", help="auto, cpu, cuda or mps (default: auto)")
    demo.add_argument("--max-new-tokens", type=int, default=24)
    demo.add_argument("--question", default=None)
    demo.add_argument("--json", action="store_true", help="print the generation result as JSON")
    demo.add_argument("--keep", metavar="DIR", help="write the model under DIR and keep it (default: a temporary one)")

    init = sub.add_parser(
        "init", help="write offline tiny models (Mamba and Transformer) and a config that uses them, then say how"
    )
    init.add_argument("directory", help="where to write them (created if missing)")
    init.add_argument("--json", action="store_true", help="print the paths as JSON")

    route = sub.add_parser("route", help="decide where a request would run, without loading a model (dry run)")
    _add_request_arguments(route)
    route.add_argument("--json", action="store_true", help="print the RouteDecision as JSON")

    generate = sub.add_parser("generate", help="route a request, load the chosen model and answer")
    _add_request_arguments(generate)
    generate.add_argument("--max-new-tokens", type=int, default=None)
    generate.add_argument("--temperature", type=float, default=0.0)
    generate.add_argument("--seed", type=int, default=None)
    generate.add_argument(
        "--prompt-format",
        choices=["auto", "chat", "plain"],
        default=None,
        help="chat: the question (and documents) in the chat template's user turn; auto (default from config): "
        "chat when the model's tokenizer has a template",
    )
    generate.add_argument("--system-prompt", default=None, help="system turn before the question (chat format)")
    generate.add_argument("--json", action="store_true", help="print the RoutedResult as JSON")

    log = sub.add_parser("log", help="print the last routing decisions")
    log.add_argument("--limit", type=int, default=20, help="how many records (default 20)")
    log.add_argument("--config", help="config file (default: $MAMBA_ROUTER_CONFIG)")
    log.add_argument("--json", action="store_true", help="print the records as JSON lines")

    lora = sub.add_parser("lora", help="LoRA fine-tuning: --dry-run shows the plan, --confirm-run trains")
    lora.add_argument("--config", required=True, help="LoRA config (YAML or TOML), e.g. configs/lora_mamba.yaml")
    lora.add_argument("--model", help="base model (hub id or directory); overrides base_model")
    lora.add_argument("--backend", help="backend to load it with; overrides backend")
    lora.add_argument("--data", help="training data (JSONL); overrides data")
    lora.add_argument("--output-dir", help="adapter directory; overrides output_dir")
    mode = lora.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--dry-run", action="store_true", help="print backend, model, targets, parameters, data; no training"
    )
    mode.add_argument("--confirm-run", action="store_true", help="train and write the adapter")
    lora.add_argument(
        "--resume", action="store_true", help="continue from the latest checkpoint in the output directory"
    )
    lora.add_argument("--json", action="store_true", help="print the plan (and the outcome) as JSON")

    serve = sub.add_parser(
        "serve", help="an OpenAI-compatible HTTP server (continuous batching, streaming, metrics) on the router"
    )
    serve.add_argument("--config", help="config file (default: $MAMBA_ROUTER_CONFIG)")
    serve.add_argument("--host", default=None, help="address to listen on (default: serve.host, 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default: serve.port, 8000; 0 picks a free one)")
    serve.add_argument("--no-preload", action="store_true", help="load each model on its first request")
    serve.add_argument(
        "--model-process",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the models in a process of their own, HTTP in this one (default: serve.model_process, on); "
        "--no-model-process keeps them in the server's process",
    )
    serve.add_argument(
        "--ray", action="store_true", help="run as a Ray Serve application ([ray]: replicas per family, affinity)"
    )

    config = sub.add_parser(
        "config", help="print the effective configuration (every section) and where each value came from"
    )
    config.add_argument("--show", action="store_true", help="print every key, its value and where it came from")
    config.add_argument("--config", help="config file (default: $MAMBA_ROUTER_CONFIG)")
    config.add_argument("--json", action="store_true", help="print as JSON")
    return parser


def _add_request_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--query", required=True, help="the question")
    parser.add_argument(
        "--context-file", action="append", default=[], help="a document (UTF-8 text); repeat for several documents"
    )
    parser.add_argument("--pages", type=int, default=None, help="page count of the documents, if known")
    parser.add_argument("--config", help="config file (default: $MAMBA_ROUTER_CONFIG)")
    parser.add_argument(
        "--model",
        help="a model directory or hub id: a Mamba-family checkpoint sets the Mamba model, any other the Transformer",
    )
    parser.add_argument("--mamba-model", help="the Mamba model (mamba.real_model and mamba.mamba2_model)")
    parser.add_argument("--transformer-model", help="the Transformer model (transformer.model)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 selection failed, 2 bad input or error)."""
    _never_fail_on_odd_text()
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    out = Console(highlight=False, soft_wrap=True)
    try:
        if args.command == "info":
            from mamba_router.cli.info import run_info

            return run_info(args, out)
        if args.command == "models":
            from mamba_router.cli.models import run_models

            return run_models(args, out)
        if args.command == "demo":
            from mamba_router.cli.demo import run_demo_command

            return run_demo_command(args, out)
        if args.command == "init":
            from mamba_router.cli.init import run_init

            return run_init(args, out)
        if args.command == "lora":
            from mamba_router.cli.lora import run_lora

            return run_lora(args, out)
        if args.command == "serve":
            from mamba_router.cli.serve import run_serve

            return run_serve(args, out)
        from mamba_router.cli.routing import run_routing

        return run_routing(args, out)
    except MambaRouterError as exc:
        Console(stderr=True, highlight=False, soft_wrap=True).print(
            f"[bold red]error:[/] {type(exc).__name__}: {escape(str(exc))}", markup=True
        )
        return 2
    return 2  # pragma: no cover - argparse enforces a command


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def _never_fail_on_odd_text() -> None:
    """Text that cannot be encoded (argv bytes that are not UTF-8 arrive as lone surrogates) is printed escaped, on
    stdout and stderr alike, whatever PYTHONIOENCODING or the terminal says, instead of crashing the message."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):  # pragma: no cover - a stream that cannot change its error handler
                pass
