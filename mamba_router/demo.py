"""The main job on an embedded default: answer a question about the bundled judgment, fully offline.

The detected backend writes a tiny random-weight model in its own checkpoint format into a temporary directory and
loads it back through its real loading path; the answer is therefore gibberish, and the output says so. What it
shows is the pipeline: detection, loading, context-then-question generation, token counts and timings.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mamba_router.backends.detection import detect
from mamba_router.backends.discovery import discover_backends
from mamba_router.backends.platform import collect_platform_facts
from mamba_router.backends.reports import DetectionResult
from mamba_router.generation.decoding import GenerationStream
from mamba_router.generation.loading import get_backend
from mamba_router.generation.results import GenerationResult
from mamba_router.models.quiet import quiet_dependencies
from mamba_router.paths import user_path
from mamba_router.samples import sample_judgment

logger = logging.getLogger(__name__)

DEMO_QUESTION = "What did the court order the respondent to pay?"
CONFIG_FILE_NAME = "mamba-router.toml"


@dataclass(frozen=True)
class DemoOutcome:
    """What the demo did: the detection report, the backend used and the generation result."""

    detection: DetectionResult
    backend: str
    context_tokens: int
    result: GenerationResult
    kept: Path | None = None  # where the model stays, when asked to keep it


def run_demo(
    *,
    backend: str | None = None,
    question: str = DEMO_QUESTION,
    max_new_tokens: int = 24,
    device: str | None = None,
    keep: str | Path | None = None,
) -> DemoOutcome:
    """Build, load and query a tiny offline model on the chosen (or detected) backend; with ``keep``, the model is
    written under that directory and stays (``DemoOutcome.kept``), else it lives in a temporary directory."""
    detection = detect()
    chosen = get_backend(backend, named_by="--backend")
    context = sample_judgment()
    with tempfile.TemporaryDirectory(prefix="mamba-router-demo-") as tmp, quiet_dependencies():
        root = user_path(keep, "--keep").resolve() if keep is not None else Path(tmp)
        path = chosen.write_offline_model(root / chosen.name)
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
            kept=path if keep is not None else None,
        )


@dataclass(frozen=True)
class StarterModels:
    """What :func:`write_starter_models` wrote: the two model directories and a config file that uses them."""

    transformer: Path
    mamba: Path | None  # None when no Mamba backend that can write a model is installed
    mamba_backend: str | None
    config_file: Path

    def config_text(self) -> str:
        """The config file's text."""
        return self.config_file.read_text(encoding="utf-8")


def write_starter_models(directory: str | Path) -> StarterModels:
    """Write the offline tiny models (a Transformer, and a Mamba model in the format of an installed Mamba backend)
    into ``directory``, with a ``mamba-router.toml`` that points the router at them. Random weights: for trying the
    library end to end without a network, not for answers."""
    from mamba_router.transformer import TransformerBackend

    root = user_path(directory, "directory").resolve()
    root.mkdir(parents=True, exist_ok=True)
    with quiet_dependencies():
        transformer = TransformerBackend().write_offline_model(root / "transformer")
        mamba, mamba_backend = _write_mamba_model(root)
    lines = ["# Offline tiny models written by `mamba-router init` (random weights: answers are meaningless)."]
    if mamba is not None:
        lines += ["[mamba]", f"real_model = {_toml_string(mamba)}", f"mamba2_model = {_toml_string(mamba)}", ""]
    lines += ["[transformer]", f"model = {_toml_string(transformer)}", ""]
    config_file = root / CONFIG_FILE_NAME
    config_file.write_text("\n".join(lines), encoding="utf-8")
    return StarterModels(transformer, mamba, mamba_backend, config_file)


def _write_mamba_model(root: Path) -> tuple[Path | None, str | None]:
    """A tiny Mamba model from the first installed Mamba backend that writes one (mamba2 first: it runs anywhere)."""
    found = discover_backends(collect_platform_facts())
    mamba = [d for d in found if d.backend is not None and d.report.family == "mamba"]
    for discovered in sorted(mamba, key=lambda d: d.report.name != "mamba2"):
        assert discovered.backend is not None
        try:
            return discovered.backend.write_offline_model(root / "mamba"), discovered.report.name
        except Exception as exc:  # a backend that cannot write here (no GPU): said, then the next one
            logger.warning(
                "%s could not write an offline model: %s: %s", discovered.report.name, type(exc).__name__, exc
            )
    return None, None


def _toml_string(path: Path) -> str:
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'
