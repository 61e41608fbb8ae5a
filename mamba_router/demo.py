"""The main job on an embedded default: answer a question about the bundled judgment, fully offline.

The detected backend writes a tiny random-weight model in its own checkpoint format into a temporary directory and
loads it back through its real loading path; the answer is therefore gibberish, and the output says so. What it
shows is the pipeline: detection, loading, context-then-question generation, token counts and timings.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from mamba_router.backends.detection import detect
from mamba_router.backends.reports import DetectionResult
from mamba_router.generation.decoding import GenerationStream
from mamba_router.generation.loading import get_backend
from mamba_router.generation.results import GenerationResult
from mamba_router.samples import sample_judgment

DEMO_QUESTION = "What did the court order the respondent to pay?"


@dataclass(frozen=True)
class DemoOutcome:
    """What the demo did: the detection report, the backend used and the generation result."""

    detection: DetectionResult
    backend: str
    context_tokens: int
    result: GenerationResult


def run_demo(
    *, backend: str | None = None, question: str = DEMO_QUESTION, max_new_tokens: int = 24, device: str | None = None
) -> DemoOutcome:
    """Build, load and query a tiny offline model on the chosen (or detected) backend."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    detection = detect()
    chosen = get_backend(backend, named_by="--backend")
    context = sample_judgment()
    with tempfile.TemporaryDirectory(prefix="mamba-router-demo-") as tmp:
        path = chosen.write_offline_model(Path(tmp) / chosen.name)
        model = chosen.load(str(path), device=device)
        answer = model.generate_with_state_space(
            prompt=question, context=context, max_new_tokens=max_new_tokens, seed=0
        )
        assert not isinstance(answer, GenerationStream)
        return DemoOutcome(
            detection=detection,
            backend=chosen.name,
            context_tokens=model.count_tokens(context),
            result=answer,
        )
