"""Errors crossing the pipe between the server and its model process (``serve.model_process``) come back as the same
library error class with the same fields, so the server answers them with the same status and headers."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

import mamba_router.errors as errors
from mamba_router.errors import BackendUnavailableError, MambaRouterError, ServerBusyError, UnknownBackendError
from mamba_router.serve.errors import ModelProcessError, error_headers, error_status
from mamba_router.serve.wire import WireError


def _library_errors() -> list[type[MambaRouterError]]:
    found = [v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, MambaRouterError)]
    return sorted(found, key=lambda kind: kind.__name__)


def _through_the_pipe(error: BaseException) -> BaseException:
    return pickle.loads(pickle.dumps(WireError.of(error))).rebuilt()


@pytest.mark.parametrize("kind", _library_errors(), ids=lambda kind: kind.__name__)
def test_every_library_error_comes_back_as_itself_with_its_status(kind: type[MambaRouterError]) -> None:
    if kind is UnknownBackendError:
        error: MambaRouterError = kind("nope", ["real-mamba", "mamba2"])
    elif issubclass(kind, BackendUnavailableError):
        error = kind("real-mamba", "no CUDA here", "pip install 'mamba-router[cuda]'")
    else:
        error = kind("what went wrong, and how to fix it")
    back = _through_the_pipe(error)
    assert type(back) is kind and str(back) == str(error)
    assert error_status(back) == error_status(error)  # type: ignore[arg-type]
    assert vars(back) == vars(error)


@given(st.text(max_size=200), st.floats(min_value=0.0, max_value=3600.0))
def test_a_busy_server_keeps_its_retry_after(message: str, seconds: float) -> None:
    back = _through_the_pipe(ServerBusyError(message, retry_after_s=seconds))
    assert isinstance(back, ServerBusyError) and str(back) == message
    assert error_headers(back) == error_headers(ServerBusyError(message, retry_after_s=seconds))


def test_a_server_side_error_class_and_a_foreign_error_come_back_as_errors_of_the_model_process() -> None:
    assert isinstance(_through_the_pipe(ModelProcessError("gone")), ModelProcessError)
    foreign = _through_the_pipe(KeyError("x"))
    assert type(foreign) is RuntimeError and "KeyError in the model process" in str(foreign)
