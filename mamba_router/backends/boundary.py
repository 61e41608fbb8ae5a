"""The one boundary between the library and a backend's code.

Whatever a backend raises while loading a model or while running it comes out of :func:`backend_boundary` as a
:class:`~mamba_router.errors.MambaRouterError` naming the backend, the model and what failed: the library's own
errors pass unchanged; running out of memory and every other exception (a pickle refused by
``torch.load(weights_only=True)``, a truncated safetensors file, a config value of the wrong type, a kernel's
``RuntimeError``, a third-party backend's own exception) are wrapped, with the original kept as ``__cause__``.
``KeyboardInterrupt`` and ``SystemExit`` are not touched.
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from mamba_router.errors import CorruptCheckpointError, GenerationError, MambaRouterError, ModelLoadError

Action = Literal["load", "generate"]

DETAIL_CHARS = 600  # of the original message kept in ours (some, like torch.load's, run to pages)

# Raised while reading a checkpoint whose files are damaged or disagree with its config: a refused or broken
# pickle, a truncated safetensors header, a config nested too deeply, a config field of the wrong type.
_DAMAGED_FILE_ERRORS: tuple[type[BaseException], ...] = (RecursionError, EOFError)
_DAMAGED_FILE_ERROR_NAMES = ("SafetensorError", "StrictDataclassFieldValidationError", "StrictDataclassError")


def typed_failure(exc: Exception, *, backend: str, model: str, action: Action, device: str | None = None) -> Exception:
    """The typed error that stands for ``exc``, raised by ``backend`` while it was to ``action`` ``model``."""
    if isinstance(exc, MambaRouterError):
        return exc
    where = f" on {device}" if device else ""
    detail = _detail(exc)
    if isinstance(exc, MemoryError) or _is_torch_out_of_memory(exc):
        error_type = ModelLoadError if action == "load" else GenerationError
        return error_type(f"{backend} ran out of memory{where} while it was to {action} {model}: {detail}")
    if action == "generate":
        return GenerationError(f"{backend} failed while running {model}{where}: {detail}")
    if isinstance(exc, pickle.UnpicklingError):  # torch's own message suggests weights_only=False: not here
        return CorruptCheckpointError(
            f"{backend} refused the pickled weights of {model}: torch.load(weights_only=True) found something other "
            "than tensors in them (the original error is this one's cause). mamba-router never unpickles weights "
            "unsafely; convert a copy you trust to safetensors"
        )
    if isinstance(exc, _DAMAGED_FILE_ERRORS) or type(exc).__name__ in _DAMAGED_FILE_ERROR_NAMES:
        return CorruptCheckpointError(
            f"{backend} could not read the checkpoint {model}: {detail}; its files are damaged or do not match its "
            "config: save the model again or download it again"
        )
    return ModelLoadError(f"{backend} could not load {model}: {detail}")


@contextmanager
def backend_boundary(backend: str, model: str, action: Action, *, device: str | None = None) -> Iterator[None]:
    """Run a backend's ``load`` or generation; any exception leaves as :func:`typed_failure` makes it."""
    try:
        yield
    except Exception as exc:
        typed = typed_failure(exc, backend=backend, model=model, action=action, device=device)
        if typed is exc:
            raise
        raise typed from exc


def _is_torch_out_of_memory(exc: BaseException) -> bool:
    """True for torch's out-of-memory error. Torch is not imported for the question: an exception from torch means
    torch is loaded already, and without it no exception can be torch's (routing alone never imports it)."""
    torch = sys.modules.get("torch")
    error_type = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    return isinstance(error_type, type) and isinstance(exc, error_type)


def _detail(exc: BaseException) -> str:
    message = str(exc).strip() or "(no message)"
    if len(message) > DETAIL_CHARS:
        message = message[:DETAIL_CHARS] + " [...]"
    return f"{type(exc).__name__}: {message}"
