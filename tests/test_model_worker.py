"""The model process's side of ``serve.model_process`` over a real pipe, in this process (the server tests start the
real thing): only the router calls the server may make are answered, and an answer that cannot be sent ends its
request with an error instead of leaving the server waiting."""

from __future__ import annotations

import threading
from multiprocessing import Pipe

import pytest
from server_process import write_models

from mamba_router.errors import GenerationError, InvalidRequestError
from mamba_router.generation.handoff import Finished
from mamba_router.routing.router import Router
from mamba_router.serve.model_worker import ModelWorker
from mamba_router.serve.wire import WireError


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return write_models(tmp_path_factory.mktemp("worker-models"))


@pytest.fixture()
def router(config, monkeypatch):
    """A router of its own per test: a worker whose server goes away closes its router."""
    monkeypatch.setenv("MAMBA_ROUTER__MAMBA__BACKEND", "mamba2")
    return Router.from_config(config)


@pytest.fixture()
def pipe(router):
    server_end, worker_end = Pipe(duplex=True)
    worker = ModelWorker(router, worker_end)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    yield server_end, worker
    server_end.close()  # the worker sees the server go away and stops
    thread.join(30)
    assert not thread.is_alive()


def _next(connection, kind: str) -> tuple:
    assert connection.poll(60), f"no {kind} message within 60 s"
    message = connection.recv()
    assert message[0] == kind, message
    return message


def test_only_the_servers_router_calls_are_answered(pipe) -> None:
    connection, _ = pipe
    connection.send(("call", 1, "read_log", (5,), {}))
    _, call_id, ok, records = _next(connection, "reply")
    assert (call_id, ok) == (1, True) and isinstance(records, list)
    connection.send(("call", 2, "_generate", (), {}))
    _, call_id, ok, error = _next(connection, "reply")
    assert (call_id, ok) == (2, False) and isinstance(error, WireError)
    rebuilt = error.rebuilt()
    assert isinstance(rebuilt, InvalidRequestError) and "'_generate'" in str(rebuilt)


def test_a_request_streams_its_pieces_and_its_end(pipe) -> None:
    connection, _ = pipe
    connection.send(("start", 7, "What did the court order?", None, {"max_new_tokens": 4, "family": "mamba"}))
    items = []
    while not any(isinstance(item, Finished) for _, item in items):
        items += _next(connection, "items")[1]
    assert {stream for stream, _ in items} == {7}
    end = items[-1][1]
    assert end.error is None and end.value.generation.completion_tokens == 4


def test_an_item_that_cannot_be_sent_ends_its_request_with_an_error(pipe) -> None:
    connection, worker = pipe
    worker.outbox.add(9, lambda: None)  # a function does not pickle
    worker.outbox.add(10, "a piece that does")
    worker.outbox.call_soon_threadsafe(print)
    received = dict(_next(connection, "items")[1])
    received.update(dict(_next(connection, "items")[1]))
    assert received[10] == "a piece that does"
    assert isinstance(received[9], Finished)
    error = received[9].error.rebuilt()
    assert isinstance(error, GenerationError) and "could not be sent to the server" in str(error)
