"""``mamba-router lora``: plan (``--dry-run``) or run (``--confirm-run``) a LoRA fine-tuning."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.markup import escape

from mamba_router.errors import ConfigurationError


def run_lora(args: argparse.Namespace, out: Console) -> int:
    """Load the config and the model, then print the plan or train."""
    from mamba_router.generation.loading import load_model
    from mamba_router.lora.config import load_lora_config
    from mamba_router.lora.trainable import trainable_view
    from mamba_router.lora.trainer import plan_run, train

    config = load_lora_config(
        args.config, base_model=args.model, backend=args.backend, data=args.data, output_dir=args.output_dir
    )
    if config.base_model is None:
        raise ConfigurationError("the LoRA config names no base_model; add it or pass --model PATH")
    device = None if config.device == "auto" else config.device
    loaded = load_model(config.base_model, backend=config.backend, device=device, dtype="float32")
    trainable = trainable_view(loaded)
    if args.dry_run:
        plan, *_ = plan_run(trainable, config)
        if args.json:
            print(json.dumps(plan.as_dict(), indent=2))
            return 0
        out.print(f"[bold]backend[/]          {escape(plan.backend)}")
        out.print(f"[bold]model[/]            {escape(plan.model)}")
        out.print(f"[bold]target modules[/]   {escape(', '.join(plan.target_modules))}")
        share = 100 * plan.trainable_params / max(plan.total_params, 1)
        out.print(
            f"[bold]parameters[/]       {plan.trainable_params:,} trainable of {plan.total_params:,} ({share:.3f}%)"
        )
        data = plan.data
        out.print(
            f"[bold]data[/]             {escape(data['path'])}: {data['examples']} examples "
            f"({plan.train_examples} train, {plan.eval_examples} held out), {data['skipped_lines']} bad lines skipped"
        )
        for problem in data["problems"]:
            out.print(f"                 [yellow]{escape(problem)}[/]")
        out.print(
            f"[bold]steps[/]            {plan.total_steps} ({plan.steps_per_epoch} per epoch); nothing trained (dry run)"
        )
        return 0
    outcome = train(trainable, config, resume=args.resume, progress=not args.json)
    summary = {
        "adapter_dir": str(outcome.adapter_dir),
        "steps": outcome.steps,
        "resumed_from": outcome.resumed_from,
        "first_train_loss": outcome.train_losses[0][1] if outcome.train_losses else None,
        "last_train_loss": outcome.train_losses[-1][1] if outcome.train_losses else None,
        "eval_losses": outcome.eval_losses,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        out.print(f"[bold]adapter[/]   {escape(str(summary['adapter_dir']))} after {outcome.steps} steps")
        out.print(f"[bold]train loss[/] {summary['first_train_loss']:.4f} -> {summary['last_train_loss']:.4f}")
        if outcome.eval_losses:
            out.print(f"[bold]eval loss[/]  {outcome.eval_losses[0][1]:.4f} -> {outcome.eval_losses[-1][1]:.4f}")
    return 0
