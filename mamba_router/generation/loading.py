"""``load_model``: load a model through a named backend or the one ``detect()`` chooses."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from mamba_router.backends.boundary import backend_boundary
from mamba_router.backends.detection import detect_with_backends, detected_backends
from mamba_router.backends.protocol import Backend
from mamba_router.backends.selection import SelectionSettings, normalize_backend_name, select_backend
from mamba_router.errors import ModelLoadError
from mamba_router.generation.protocols import LoadedModel, SupportsLora


def get_backend(
    name: str | None = None, *, environ: Mapping[str, str] | None = None, named_by: str = "backend argument"
) -> Backend:
    """The backend object called ``name`` (or the detected one), checked as usable or explicitly forceable.

    An unknown name raises UnknownBackendError listing the known ones; a backend that cannot run here raises
    BackendUnavailableError with its reason and install command. Never substitutes another backend. ``named_by``
    says where ``name`` came from in those messages (``--backend``, a config key).
    """
    requested = normalize_backend_name(name) if name is not None else None
    if requested is None:
        detection, found = detect_with_backends(environ=environ)
        chosen = detection.selected
    else:
        detected = detected_backends()
        platform, found = detected.platform, list(detected.found)
        settings = SelectionSettings.from_env(environ)
        forced = SelectionSettings(enable_mamba=settings.enable_mamba, forced_backend=requested, forced_by=named_by)
        chosen = select_backend(platform, [d.report for d in found], forced).candidate.name
    backend = next(d.backend for d in found if d.report.name == chosen and d.loadable)
    assert backend is not None
    return backend


def load_model(
    model: str | os.PathLike[str] | None = None,
    *,
    backend: str | None = None,
    device: str | None = None,
    dtype: str | torch.dtype | None = None,
    adapter: str | os.PathLike[str] | None = None,
) -> LoadedModel:
    """Load ``model`` (a hub id or a local directory; default: the backend's default model).

    ``adapter`` is a LoRA adapter directory (``mamba-router lora`` or peft ``save_pretrained``); it is merged into the
    weights, so it takes effect on every path, fused kernels included.

    ``backend`` names the backend to use (fails with its reason if it cannot run here); by default the one
    :func:`mamba_router.detect` chooses. ``device`` ('auto', 'cpu', 'cuda', 'mps') and ``dtype`` ('auto',
    'float32', 'bfloat16', 'float16') default to what suits the device.
    """
    chosen = get_backend(backend)
    target = chosen.default_model if model is None else os.fspath(model) if isinstance(model, os.PathLike) else model
    with backend_boundary(chosen.name, target, "load"):
        loaded = chosen.load(target, device=device, dtype=dtype)
    if adapter is not None:
        if not isinstance(loaded, SupportsLora):
            raise ModelLoadError(f"{type(loaded).__name__} ({chosen.name}) cannot merge a LoRA adapter")
        loaded.merge_adapter(os.fspath(adapter))
    return loaded
