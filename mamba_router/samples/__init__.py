"""Sample documents for demos, tests and benchmarks: a bundled three-page judgment and long synthetic ones.

Every name, number and fact in them is invented.
"""

from __future__ import annotations

from importlib import resources

from mamba_router.samples.synthetic import PAGE_CHARS, synthetic_judgment


def sample_judgment() -> str:
    """A synthetic three-page appellate judgment (invented facts) shipped with the package."""
    return resources.files("mamba_router.samples").joinpath("sample_judgment.txt").read_text(encoding="utf-8")


__all__ = ["PAGE_CHARS", "sample_judgment", "synthetic_judgment"]
