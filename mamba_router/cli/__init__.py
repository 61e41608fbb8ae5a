"""The command line: ``mamba-router`` (entry point :func:`main`). Rich text is used here and nowhere else."""

from mamba_router.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
