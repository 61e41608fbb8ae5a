"""``mamba-router demo``: the main job on an embedded default, offline, on a tiny random-weight model."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.markup import escape

from mamba_router.demo import DEMO_QUESTION, run_demo


def run_demo_command(args: argparse.Namespace, out: Console) -> int:
    """Run the offline demo and print what it did (or the result as JSON)."""
    outcome = run_demo(
        backend=args.backend,
        question=args.question or DEMO_QUESTION,
        max_new_tokens=args.max_new_tokens,
        device=args.device,
        keep=args.keep,
    )
    if args.json:
        print(outcome.result.model_dump_json(indent=2))
        return 0
    r = outcome.result
    out.print(f"[bold]chosen backend[/]  {escape(outcome.detection.choice_line())}")
    out.print(
        "[yellow]note[/]            the model is a tiny random-weight model built offline: its answer is "
        "meaningless; the run shows detection, loading and generation end to end"
    )
    out.print(f"[bold]document[/]        bundled synthetic judgment, {outcome.context_tokens} tokens")
    out.print(f"[bold]question[/]        {escape(args.question or DEMO_QUESTION)}")
    out.print(f"[bold]answer[/]          {escape(repr(r.text))}")
    out.print(
        f"[bold]run[/]             backend={r.backend} device={r.device} prompt_tokens={r.prompt_tokens} "
        f"completion_tokens={r.completion_tokens} finish={r.finish_reason} "
        f"prefill={r.timings.prefill_ms:.1f} ms total={r.timings.total_ms:.1f} ms"
    )
    if outcome.kept is not None:
        out.print(
            f"[bold]model kept[/]      {escape(str(outcome.kept))} (use it with --model, or run mamba-router init)"
        )
    return 0
