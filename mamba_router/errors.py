"""Typed errors. Every error the library raises on purpose is a :class:`MambaRouterError`.

Each message names what was wrong and how to fix it.
"""

from __future__ import annotations

from collections.abc import Sequence


class MambaRouterError(Exception):
    """Base class of every error raised by mamba_router."""


class ConfigurationError(MambaRouterError, ValueError):
    """A setting (environment variable, config key, argument) has a value that is not allowed."""


class UnknownBackendError(ConfigurationError):
    """A backend was requested by a name that no installed distribution provides."""

    def __init__(self, name: str, known: Sequence[str], *, source: str = "backend") -> None:
        self.name = name
        self.known = tuple(known)
        listed = ", ".join(self.known) if self.known else "(none)"
        super().__init__(f"unknown {source} {name!r}; known backends: {listed}")


class BackendUnavailableError(MambaRouterError):
    """A backend exists but cannot run here; the message carries its reason and install command."""

    def __init__(self, backend: str, reason: str, install_command: str | None = None) -> None:
        self.backend = backend
        self.reason = reason
        self.install_command = install_command
        message = f"backend {backend!r} is not usable: {reason}"
        if install_command:
            message += f" (to install: {install_command})"
        super().__init__(message)


class NoBackendAvailableError(BackendUnavailableError):
    """No discovered backend can run on this machine."""


class MambaUnavailableError(BackendUnavailableError):
    """A Mamba model was asked for on a machine where no Mamba backend is usable."""


class ModelLoadError(MambaRouterError):
    """A model or tokenizer could not be loaded."""


class ModelNotFoundError(ModelLoadError, FileNotFoundError):
    """The model path does not exist or the hub id cannot be resolved."""


class CorruptCheckpointError(ModelLoadError):
    """A model directory exists but its files are missing or unreadable."""


class InvalidRequestError(MambaRouterError, ValueError):
    """An argument of a call (prompt, max_new_tokens, sampling settings, device) is invalid."""


class RequestTooLargeError(InvalidRequestError):
    """A request is larger than the configured ``[limits]`` allow (text, batch or body size)."""


class ContextTooLongError(InvalidRequestError):
    """The prompt plus the tokens to generate do not fit the model's context window."""


class GenerationError(MambaRouterError, RuntimeError):
    """A backend failed while running the model (out of memory, kernel error)."""


class WrongBackendError(ModelLoadError):
    """A checkpoint was given to a backend that does not run its kind of model; the message names the one that does."""


class UnknownModelFamilyError(CorruptCheckpointError):
    """A checkpoint's config names a model family (``model_type``) that no backend here can run."""


class ServerBusyError(MambaRouterError):
    """Too many requests are waiting for a model; retry after ``retry_after_s`` seconds."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RequestTimeoutError(MambaRouterError, TimeoutError):
    """A request ran past its time limit; its sequence was stopped and its batch slot freed."""


class RequestCancelledError(MambaRouterError):
    """A request was cancelled (its client went away); its sequence was stopped and its batch slot freed."""


class EngineClosedError(MambaRouterError):
    """The model's batching engine is shut down (the server is stopping); no new request is taken."""
