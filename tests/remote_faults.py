"""A real HTTP server on 127.0.0.1 whose endpoints misbehave on purpose, for the remote backend's fault tests.

Each fault is a path prefix in front of ``/v1``: ``/500/v1`` answers HTTP 500, ``/400/v1`` 400 (the request is
refused as such), ``/429/v1`` 429 with
``Retry-After: 1``, ``/malformed/v1`` a 200 that is not JSON, ``/hang/v1`` nothing for longer than a test's read
timeout, ``/drop-early/v1`` a stream that closes before its first piece of text, ``/drop-late/v1`` one that closes
after two pieces, ``/ok/v1`` a well-formed answer ("fault server answer"); ``GET .../models`` lists the model
``transformer`` (``/500/v1/models``: HTTP 500). Every completion request's Authorization header is kept in
``seen_keys``."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from server_process import free_port

HANG_S = 5.0
ANSWER = "fault server answer"


def _chunk(text: str, finish: str | None = None) -> str:
    choice = {"index": 0, "delta": {"content": text}, "finish_reason": finish}
    return "data: " + json.dumps({"id": "x", "object": "chat.completion.chunk", "choices": [choice]}) + "\n\n"


def _completion() -> dict:
    message = {"role": "assistant", "content": ANSWER}
    usage = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    return {
        "id": "x",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": usage,
    }


def fault_app(seen_keys: list[str]) -> FastAPI:
    app = FastAPI()

    @app.get("/{fault}/v1/models")
    async def models(fault: str) -> Response:
        if fault == "500":
            return JSONResponse({"error": {"message": "internal failure"}}, status_code=500)
        return JSONResponse({"object": "list", "data": [{"id": "transformer", "object": "model"}]})

    @app.post("/{fault}/v1/chat/completions")
    async def chat(fault: str, request: Request) -> Response:
        seen_keys.append(request.headers.get("authorization", ""))
        body = await request.json()
        if fault == "500":
            return JSONResponse({"error": {"message": "internal failure"}}, status_code=500)
        if fault == "400":
            return JSONResponse({"error": {"message": "max_tokens is too large"}}, status_code=400)
        if fault == "429":
            return JSONResponse({"error": {"message": "too busy"}}, status_code=429, headers={"Retry-After": "1"})
        if fault == "malformed":
            return PlainTextResponse("this is not JSON", status_code=200)
        if fault == "hang":
            await asyncio.sleep(HANG_S)
        if not body.get("stream"):
            return JSONResponse(_completion())

        async def events() -> AsyncIterator[str]:
            yield _chunk("")  # the role chunk: no text yet
            if fault == "drop-early":
                return  # closes without [DONE]
            for word in ("fault ", "server ", "answer"):
                yield _chunk(word)
                if fault == "drop-late" and word == "server ":
                    return
            yield _chunk("", "stop")
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


class FaultServer:
    """:func:`fault_app` served by uvicorn in a thread; ``url(fault)`` is the API base of one fault."""

    def __init__(self) -> None:
        self.seen_keys: list[str] = []
        self.port = free_port()
        config = uvicorn.Config(fault_app(self.seen_keys), host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the fault server did not start")
            time.sleep(0.02)

    def url(self, fault: str) -> str:
        return f"http://127.0.0.1:{self.port}/{fault}/v1"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
