"""What crosses the pipe between the server and its model process: messages are tuples of plain values, pydantic
results and decisions (they pickle), and errors as :class:`WireError` (a library error's class and fields, so the
server answers it with the same status; library errors have their own constructors and do not all pickle)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import mamba_router.errors as library_errors
from mamba_router.errors import MambaRouterError


@dataclass(frozen=True)
class WireError:
    """An exception raised in the other process."""

    module: str
    name: str
    message: str
    fields: dict[str, Any]

    @classmethod
    def of(cls, error: BaseException) -> WireError:
        """``error`` for the pipe: its class, message and plain fields (numbers, strings, tuples of them)."""
        fields = {k: v for k, v in vars(error).items() if _plain(v)}
        return cls(type(error).__module__, type(error).__qualname__, str(error), fields)

    def rebuilt(self) -> BaseException:
        """The error again: the same library error class with its fields; another exception as a RuntimeError
        naming it (it is a fault of the model process, answered as an internal error)."""
        kind = _library_class(self.module, self.name)
        if kind is None:
            return RuntimeError(f"{self.name} in the model process: {self.message}")
        error = kind.__new__(kind)
        Exception.__init__(error, self.message)
        error.__dict__.update(self.fields)
        return error


def _library_class(module: str, name: str) -> type[MambaRouterError] | None:
    if not module.startswith("mamba_router"):
        return None
    try:
        found = getattr(importlib.import_module(module), name, None)
    except ImportError:
        found = getattr(library_errors, name, None)
    if isinstance(found, type) and issubclass(found, MambaRouterError):
        return found
    return None


def _plain(value: Any) -> bool:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return True
    return isinstance(value, tuple) and all(_plain(v) for v in value)
