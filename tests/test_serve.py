"""``mamba-router serve`` as a user meets it: the real server process on 127.0.0.1 with tiny offline models, driven
with the official ``openai`` client (sync, async, streaming) and with httpx."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
from server_process import ServerProcess, write_config, write_models

LEGAL = "What did the court order in the judgment?"
JUDGMENT = "The appeal is dismissed. The court orders the respondent to pay the costs within thirty days. " * 40
ENV = {"MAMBA_ROUTER__MAMBA__BACKEND": "mamba2"}  # the plain-PyTorch Mamba backend runs on this CPU


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    return write_models(tmp_path_factory.mktemp("served-models"))


@pytest.fixture(scope="module", params=[False, True], ids=["one-process", "model-process"])
def model_process(request) -> str:
    """``serve.model_process``: every server test runs with the models in the server's process and in their own."""
    return "true" if request.param else "false"


@pytest.fixture(scope="module")
def server(models, model_process, tmp_path_factory):
    directory = tmp_path_factory.mktemp("server")
    config = write_config(
        models,
        directory / "server.toml",
        f'[log]\npath = "{directory / "routing.jsonl"}"\n[limits]\nmax_body_bytes = 200000\n'
        f"[serve]\nmax_batch = 16\nmax_queue = 64\nrequest_timeout_s = 120\nmodel_process = {model_process}\n",
    )
    running = ServerProcess(config, env=ENV)
    yield running
    running.stop()


@pytest.fixture()
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


def _records(server: ServerProcess) -> list[dict]:
    return httpx.get(f"{server.url}/api/v1/model/routing_log", params={"limit": 10_000}, timeout=30).json()["records"]


def _ask(client: openai.OpenAI, content: str, **options) -> str:
    completion = client.chat.completions.create(
        model=options.pop("model", "auto"), messages=[{"role": "user", "content": content}], **options
    )
    return completion.choices[0].message.content or ""


def test_chat_completions_are_routed_and_report_usage_and_the_route(client) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": LEGAL}], max_tokens=8
    )
    completion = raw.parse()
    assert raw.headers["x-mamba-router-model-used"] == "mamba" and raw.headers["x-mamba-router-backend"] == "mamba2"
    assert completion.object == "chat.completion" and completion.model == "auto"
    assert completion.choices[0].finish_reason in ("stop", "length")
    usage = completion.usage
    assert usage is not None and usage.completion_tokens >= 1
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    route = completion.model_extra["mamba_router"]
    assert route["model_used"] == "mamba" and "legal_keywords" in route["rules_fired"]
    assert isinstance(route["decide_ms"], float) and route["decide_ms"] >= 0.0  # the routing decision's own time
    plain = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]
    )
    assert plain.headers["x-mamba-router-model-used"] == "transformer"
    forced = client.chat.completions.with_raw_response.create(
        model="mamba", messages=[{"role": "user", "content": "hello"}], max_tokens=2
    )
    assert forced.headers["x-mamba-router-model-used"] == "mamba"


def test_a_stream_joins_to_the_same_answer_and_ends_with_usage(server, client) -> None:
    whole = _ask(client, LEGAL, max_tokens=12)
    chunks = list(
        client.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": LEGAL}],
            max_tokens=12,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1
    server_timings = chunks[-2].model_extra["mamba_router"]["server_timings"]  # the last chunk with a choice
    assert 0 <= server_timings["route_ms"] <= server_timings["first_piece_ms"]
    exposed = httpx.get(f"{server.url}/metrics").text
    assert 'mamba_router_server_time_to_first_piece_seconds_count{family="' in exposed
    streamed_text = "".join(
        c.choices[0].text for c in client.completions.create(model="mamba", prompt=LEGAL, max_tokens=6, stream=True)
    )
    assert streamed_text == client.completions.create(model="mamba", prompt=LEGAL, max_tokens=6).choices[0].text


def test_sixteen_concurrent_requests_from_the_async_client_equal_each_answered_alone(server, client) -> None:
    prompts = [f"Question {i}: what did the court order about costs{' again' * (i % 5)}?" for i in range(16)]
    budgets = [4 + (i * 3) % 13 for i in range(16)]
    alone = [_ask(client, p, max_tokens=n) for p, n in zip(prompts, budgets)]

    async def together() -> list[str]:
        async with openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0) as aclient:
            replies = await asyncio.gather(
                *(
                    aclient.chat.completions.create(
                        model="auto", messages=[{"role": "user", "content": p}], max_tokens=n
                    )
                    for p, n in zip(prompts, budgets)
                )
            )
        return [r.choices[0].message.content or "" for r in replies]

    assert asyncio.run(together()) == alone
    steps = [line for line in httpx.get(f"{server.url}/metrics").text.splitlines() if "decode_steps_total{" in line]
    assert steps, "the engines report their decoding steps"


def test_a_document_in_extra_body_is_read_once_and_its_state_reused(client) -> None:
    first = client.chat.completions.create(
        model="mamba",
        messages=[{"role": "user", "content": "Who pays the costs?"}],
        max_tokens=4,
        extra_body={"context": JUDGMENT},
    )
    second = client.chat.completions.create(
        model="mamba",
        messages=[{"role": "user", "content": "When are they due?"}],
        max_tokens=4,
        extra_body={"context": JUDGMENT},
    )
    assert first.model_extra["mamba_router"]["document_state"] == "read"
    assert second.model_extra["mamba_router"]["document_state"] == "reused"


def test_models_lists_the_families_and_the_configured_ids(client, models) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids[:3] == ["auto", "mamba", "transformer"]
    assert str(models.parent / "mamba") in ids and str(models.parent / "transformer") in ids


def test_bad_requests_get_typed_json_errors_never_a_stack_trace(server, client) -> None:
    with pytest.raises(openai.NotFoundError, match="not served here"):
        _ask(client, "hi", model="gpt-4o")
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        _ask(client, "hi", max_tokens=0)
    with pytest.raises(openai.BadRequestError, match="last message must be a user turn"):
        client.chat.completions.create(model="auto", messages=[{"role": "assistant", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match=r"reads at most 4096"):  # the Transformer's window
        _ask(client, "Summarise.", model="transformer", max_tokens=4, extra_body={"context": JUDGMENT * 3})
    not_json = httpx.post(
        f"{server.url}/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 400 and not_json.json()["error"]["type"] == "invalid_request_error"
    too_big = httpx.post(f"{server.url}/query", json={"query": "q", "context": "x" * 300_000})
    assert too_big.status_code == 413 and "max_body_bytes" in too_big.json()["error"]["message"]
    secret = "CONFIDENTIAL-PARTY-NAME"
    bad = httpx.post(f"{server.url}/v1/chat/completions", json={"model": "auto", "messages": secret})
    assert bad.status_code == 400 and secret not in bad.text and "Traceback" not in bad.text


def test_seed_endpoints_answer_and_the_log_holds_one_record_per_answer(server) -> None:
    before = len(_records(server))
    answer = httpx.post(
        f"{server.url}/query", json={"query": LEGAL, "context": JUDGMENT, "model": "mamba", "max_new_tokens": 4}
    )
    assert answer.status_code == 200
    body = answer.json()
    assert body["model_used"] == "mamba" and body["backend"] == "mamba2" and body["generation"]["completion_tokens"]
    assert answer.headers["x-mamba-router-decision-id"] == body["decision"]["decision_id"]
    dry = httpx.post(f"{server.url}/query", json={"query": "hello", "dry_run": True}).json()
    assert dry["model_used"] == "transformer"
    records = _records(server)
    assert len(records) == before + 2  # the answer and the dry run
    assert records[-2]["decision_id"] == body["decision"]["decision_id"] and records[-2]["outcome"] == "ok"
    assert JUDGMENT[:40] not in json.dumps(records)  # no document text in the log
    assert httpx.get(f"{server.url}/api/v1/model/routing_log", params={"limit": 1}).json()["records"] == records[-1:]


def test_health_ready_and_prometheus_metrics(server, client) -> None:
    _ask(client, LEGAL, max_tokens=3)
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}
    ready = httpx.get(f"{server.url}/ready").json()
    assert ready["ready"] and all(status == "loaded" for status in ready["models"].values())
    metrics = httpx.get(f"{server.url}/metrics").text
    for name in (
        'mamba_router_requests_total{endpoint="/v1/chat/completions",status="200"}',
        'mamba_router_tokens_total{kind="completion"}',
        "mamba_router_time_to_first_token_seconds_bucket",
        "mamba_router_inter_token_latency_seconds_bucket",
        "mamba_router_queue_depth",
        "mamba_router_running_batch_size",
        "mamba_router_state_cache_bytes",
        "mamba_router_fallbacks_total",
        "mamba_router_engine_passes_total",
        'phase="wait_for_device"',
    ):
        assert name in metrics
    admitted = [line for line in metrics.splitlines() if line.startswith("mamba_router_engine_seconds_total{")]
    assert any('phase="admit"' in line and float(line.split()[-1]) > 0 for line in admitted)


def _running(server: ServerProcess) -> float:
    lines = httpx.get(f"{server.url}/metrics").text.splitlines()
    return sum(float(line.split()[-1]) for line in lines if line.startswith("mamba_router_running_batch_size{"))


def test_a_client_that_disconnects_has_its_sequence_cancelled(server) -> None:
    body = {"model": "mamba", "messages": [{"role": "user", "content": "talk"}], "max_tokens": 100_000, "stream": True}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=60) as response:
        lines = response.iter_lines()
        for _ in range(3):
            next(lines)
        assert _running(server) >= 1
    deadline = time.monotonic() + 20
    while _running(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _running(server) == 0
    with pytest.raises(httpx.ReadTimeout):  # the same without streaming: the client gives up after 1 s
        httpx.post(f"{server.url}/v1/chat/completions", json={**body, "stream": False}, timeout=1)
    deadline = time.monotonic() + 20
    while _running(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _running(server) == 0


def _streaming(url: str, body: dict) -> tuple[threading.Thread, list[str]]:
    """A streamed request read in a thread, once its first line has come: the thread and the lines so far."""
    streamed: list[str] = []

    def read() -> None:
        with httpx.stream("POST", url, json=body, timeout=60) as response:
            streamed.extend(line for line in response.iter_lines() if line)

    reader = threading.Thread(target=read)
    reader.start()
    deadline = time.monotonic() + 30
    while not streamed and time.monotonic() < deadline:
        time.sleep(0.01)
    return reader, streamed


def test_a_full_queue_answers_429_a_slow_request_408_and_shutdown_finishes_running_requests(
    models, model_process, tmp_path
) -> None:
    config = write_config(
        models,
        tmp_path / "busy.toml",
        f'[log]\npath = "{tmp_path / "routing.jsonl"}"\n'
        "[serve]\nmax_batch = 1\nmax_queue = 1\nrequest_timeout_s = 3\nshutdown_grace_s = 30\n"
        f"model_process = {model_process}\n",
    )
    busy = ServerProcess(config, env=ENV)
    try:
        url = f"{busy.url}/v1/chat/completions"
        long = {"model": "mamba", "messages": [{"role": "user", "content": "go on"}], "max_tokens": 100_000}

        async def flood() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=60) as http:
                return await asyncio.gather(*(http.post(url, json=long) for _ in range(6)))

        statuses = sorted(r.status_code for r in asyncio.run(flood()))
        assert 429 in statuses and 408 in statuses and set(statuses) <= {408, 429}
        rejected = next(r for r in asyncio.run(flood()) if r.status_code == 429)
        assert int(rejected.headers["retry-after"]) >= 1 and rejected.json()["error"]["code"] == "rate_limit_exceeded"

        reader, streamed = _streaming(url, {**long, "max_tokens": 40, "stream": True})
        busy.stop()  # SIGTERM while the stream runs
        reader.join(60)
        assert streamed[-1] == "data: [DONE]" and '"finish_reason":"length"' in streamed[-2]
        assert "Application shutdown complete" in busy.output()
        records = [json.loads(line) for line in (tmp_path / "routing.jsonl").read_text().splitlines()]
        assert sum(r.get("outcome") == "ok" for r in records) == 1  # the streamed answer is in the log
    finally:
        busy.stop()


def _model_process_server(models: Path, tmp_path: Path, serve: str = "") -> tuple[ServerProcess, Path]:
    """A server with its models in a model process, and its routing log's path."""
    log = tmp_path / "routing.jsonl"
    config = write_config(
        models,
        tmp_path / "model-process.toml",
        f'[log]\npath = "{log}"\n[serve]\nmodel_process = true\nrequest_timeout_s = 60\n{serve}',
    )
    return ServerProcess(config, env=ENV), log


def _model_process_pid(server: ServerProcess) -> int:
    """The model process: the server's child that runs multiprocessing's spawn entry (not its resource tracker)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except (OSError, IndexError, ValueError):
            continue
        if parent == server.process.pid and b"spawn_main" in command and b"resource_tracker" not in command:
            return int(entry.name)
    raise AssertionError("the server has no model process")


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the model process through /proc")
def test_a_model_process_that_dies_ends_its_streams_with_an_error_and_the_server_answers_503(models, tmp_path) -> None:
    dying, _ = _model_process_server(models, tmp_path)
    try:
        body = {"model": "mamba", "messages": [{"role": "user", "content": "talk"}], "max_tokens": 100_000}
        with httpx.stream("POST", f"{dying.url}/v1/chat/completions", json={**body, "stream": True}, timeout=60) as r:
            lines = r.iter_lines()
            for _ in range(3):
                next(lines)
            os.kill(_model_process_pid(dying), signal.SIGKILL)
            rest = [line for line in lines if line]
        assert rest[-1] == "data: [DONE]"
        error = json.loads(rest[-2].removeprefix("data: "))["error"]
        assert error["code"] == "model_process_unavailable" and "model process" in error["message"]
        after = httpx.post(f"{dying.url}/v1/chat/completions", json={**body, "max_tokens": 4}, timeout=30)
        assert after.status_code == 503 and "model process" in after.json()["error"]["message"]
        not_ready = httpx.get(f"{dying.url}/ready", timeout=10)
        assert not_ready.status_code == 503 and "model process" in not_ready.json()["reason"]
        assert dying.process.poll() is None  # the HTTP side stays up and says why
    finally:
        dying.stop()


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the model process through /proc")
def test_a_stop_signal_to_the_whole_group_still_finishes_running_requests(models, tmp_path) -> None:
    """systemd's stop (and Ctrl+C in a terminal) signals every process of the service: the model process leaves the
    shutdown to the server, which lets the running stream finish and its record reach the log."""
    group, log = _model_process_server(models, tmp_path, "shutdown_grace_s = 30\n")
    try:
        body = {"model": "mamba", "messages": [{"role": "user", "content": "go on"}], "max_tokens": 40, "stream": True}
        reader, streamed = _streaming(f"{group.url}/v1/chat/completions", body)
        os.kill(_model_process_pid(group), signal.SIGTERM)  # as a service manager does, the model process first
        group.stop()
        reader.join(60)
        assert streamed[-1] == "data: [DONE]" and '"finish_reason":"length"' in streamed[-2]
        records = [json.loads(line) for line in log.read_text().splitlines()]
        assert sum(r.get("outcome") == "ok" for r in records) == 1
    finally:
        group.stop()


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the model process through /proc")
def test_the_models_run_in_a_process_of_their_own_by_default_and_the_flag_keeps_them_in_the_servers(
    models, tmp_path
) -> None:
    config = write_config(models, tmp_path / "flag.toml", f'[log]\npath = "{tmp_path / "routing.jsonl"}"\n')
    default = ServerProcess(config, env=ENV)
    try:
        assert _model_process_pid(default) != default.process.pid
    finally:
        default.stop()
    single = ServerProcess(config, env=ENV, args=("--no-model-process",))
    try:
        with pytest.raises(AssertionError, match="no model process"):
            _model_process_pid(single)
        client = openai.OpenAI(base_url=f"{single.url}/v1", api_key="unused", max_retries=0, timeout=60)
        completion = client.chat.completions.create(
            model="mamba", messages=[{"role": "user", "content": LEGAL}], max_tokens=4
        )
        assert completion.usage is not None and completion.usage.completion_tokens >= 1
    finally:
        single.stop()
