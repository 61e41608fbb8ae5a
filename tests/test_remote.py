"""Remote endpoints as targets ([remote]): the router answers through a real ``mamba-router serve`` on 127.0.0.1 as
that server answers (plain and streamed), and through a real server that misbehaves on purpose (remote_faults.py):
a refused connection, a hang past the read timeout, HTTP 500, 429, malformed JSON and a stream that drops before
its first piece are each retried on the next endpoint and logged with their cause; a stream that drops midway ends
with a typed error naming the endpoint; API keys come from named environment variables and never reach a log."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from remote_faults import ANSWER, FaultServer
from server_process import ServerProcess, free_port, write_config, write_models

from mamba_router import Router
from mamba_router.errors import ConfigurationError, GenerationError
from mamba_router.generation.requests import compose_context_prompt
from mamba_router.remote.endpoints import EndpointPool
from mamba_router.settings.schema import RemoteEndpoint, load_config

ENV = {"MAMBA_ROUTER__MAMBA__BACKEND": "mamba2"}  # the plain-PyTorch Mamba backend runs on this CPU
JUDGMENT = "The appeal is allowed. The respondent shall pay the costs of the appeal within thirty days. " * 8


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    return write_models(tmp_path_factory.mktemp("remote-models"))


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    directory = tmp_path_factory.mktemp("remote-server")
    config = write_config(models, directory / "server.toml", f'[log]\npath = "{directory / "routing.jsonl"}"\n')
    running = ServerProcess(config, env=ENV)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def faults():
    running = FaultServer()
    yield running
    running.stop()


def _router(models: Path, tmp_path: Path, remote: str) -> Router:
    config = write_config(models, tmp_path / "router.toml", f'[log]\npath = "{tmp_path / "routing.jsonl"}"\n{remote}')
    return Router.from_config(config, environ=ENV)


def _endpoints(family: str, *urls: tuple[str, str], options: str = "") -> str:
    entries = "".join(
        f'[[remote.{family}]]\nurl = "{url}"\nmodel = "transformer"\nname = "{name}"\n' for name, url in urls
    )
    return f"[remote]\n{options}\n{entries}"


def test_the_router_answers_through_a_served_model_as_the_server_answers(server, models, tmp_path) -> None:
    remote = (
        f'[remote]\n[[remote.mamba]]\nurl = "{server.url}/v1"\nmodel = "mamba"\n'
        f'[[remote.transformer]]\nurl = "{server.url}/v1"\nmodel = "transformer"\n'
    )
    router = _router(models, tmp_path, remote)
    question = "What did the court order about the costs of the appeal?"
    routed = router.generate(question, context=JUDGMENT, max_new_tokens=12)
    assert (routed.model_used, routed.backend, routed.fallback_used) == ("mamba", "remote", False)
    assert routed.decision.token_count_method == "estimate"  # no tokenizer for the served model on this machine
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)
    direct = client.chat.completions.create(
        model="mamba",
        messages=[{"role": "user", "content": compose_context_prompt(question, JUDGMENT)}],
        max_tokens=12,
        temperature=0,
    )
    assert routed.text == direct.choices[0].message.content
    assert routed.generation.completion_tokens == direct.usage.completion_tokens
    stream = router.stream(question, context=JUDGMENT, max_new_tokens=12)
    assert "".join(stream) == routed.text  # streamed through: the same answer piece by piece
    short = router.generate("hi", max_new_tokens=4)
    assert (short.model_used, short.backend) == ("transformer", "remote")
    health = router.endpoint_health()
    assert [h.answered for h in health["mamba"]] == [2] and health["transformer"][0].failed == 0
    router.close()


CAUSES = {
    "refused": "connection failed",
    "hang": "timed out",
    "500": "HTTP 500",
    "429": "HTTP 429",
    "malformed": "malformed answer",
    "drop-early": "ended before data: [DONE]",
}


@pytest.mark.parametrize(
    ("fault", "stream"),
    [("refused", False), ("hang", False), ("500", False), ("429", False), ("malformed", False)]
    + [("drop-early", True), ("hang", True), ("500", True)],
)
def test_a_failing_endpoint_is_retried_on_the_next_and_logged_with_its_cause(
    fault, stream, faults, models, tmp_path, caplog
) -> None:
    bad = f"http://127.0.0.1:{free_port()}/v1" if fault == "refused" else faults.url(fault)
    options = "read_timeout_s = 1\nconnect_timeout_s = 1\nbackoff_s = 0\nretries = 1\ncooldown_s = 60"
    router = _router(
        models, tmp_path, _endpoints("transformer", ("bad", bad), ("good", faults.url("ok")), options=options)
    )
    caplog.set_level(logging.WARNING, logger="mamba_router.remote")
    if stream:
        routed_stream = router.stream("hi", max_new_tokens=5)
        assert "".join(routed_stream) == ANSWER
        routed = routed_stream.result
    else:
        routed = router.generate("hi", max_new_tokens=5)
    assert routed is not None and routed.text == ANSWER and routed.generation.device == "remote:good"
    bad_health, good_health = router.endpoint_health()["transformer"]
    assert bad_health.failed == 1 and CAUSES[fault] in (bad_health.last_error or "")
    assert bad_health.resting_s > 30 and good_health.answered == 1
    assert "remote endpoint bad failed (" in caplog.text and CAUSES[fault] in caplog.text
    again = router.generate("hi again", max_new_tokens=5)  # the failed endpoint rests: the good one answers first
    assert again.generation.device == "remote:good" and router.endpoint_health()["transformer"][0].failed == 1
    router.close()


def test_a_stream_that_drops_midway_ends_with_an_error_naming_the_endpoint(faults, models, tmp_path) -> None:
    options = "backoff_s = 0\nretries = 2"
    remote = _endpoints("transformer", ("late", faults.url("drop-late")), ("good", faults.url("ok")), options=options)
    router = _router(models, tmp_path, remote)
    stream = router.stream("hi", max_new_tokens=5)
    pieces = []
    with pytest.raises(GenerationError, match="from late broke off"):
        for piece in stream:
            pieces.append(piece)
    assert "".join(pieces) == "fault server "  # what was sent stays sent; the answer is not asked again elsewhere
    router.close()


def test_a_request_refused_as_such_is_not_tried_elsewhere_and_rests_no_endpoint(faults, models, tmp_path) -> None:
    remote = _endpoints(
        "transformer", ("strict", faults.url("400")), ("good", faults.url("ok")), options="backoff_s = 0"
    )
    router = _router(models, tmp_path, remote)
    with pytest.raises(GenerationError, match="strict refused the request: HTTP 400: max_tokens is too large"):
        router.generate("hi", max_new_tokens=5)
    strict, good = router.endpoint_health()["transformer"]
    assert (strict.failed, strict.resting_s, strict.outstanding, good.answered) == (0, 0.0, 0, 0)
    router.close()


def test_when_every_endpoint_fails_the_error_lists_each_cause(faults, models, tmp_path) -> None:
    options = "backoff_s = 0\nretries = 5"
    remote = _endpoints("transformer", ("a", faults.url("500")), ("b", faults.url("malformed")), options=options)
    router = _router(models, tmp_path, remote)
    with pytest.raises(GenerationError, match=r"no remote transformer endpoint answered \(a: HTTP 500.*b: malformed"):
        router.generate("hi", max_new_tokens=5)
    router.close()


def test_api_keys_come_from_named_variables_and_never_reach_a_log(
    faults, models, tmp_path, caplog, monkeypatch
) -> None:
    monkeypatch.setenv("FAULT_KEY", "sekrit-value")
    monkeypatch.delenv("MISSING_KEY", raising=False)
    remote = (
        "[remote]\nbackoff_s = 0\n"
        f'[[remote.transformer]]\nurl = "{faults.url("ok")}"\nmodel = "m"\nname = "unset"\napi_key_env = "MISSING_KEY"\n'
        f'[[remote.transformer]]\nurl = "{faults.url("ok")}"\nmodel = "m"\nname = "keyed"\napi_key_env = "FAULT_KEY"\n'
    )
    router = _router(models, tmp_path, remote)
    caplog.set_level(logging.DEBUG)
    routed = router.generate("hi", max_new_tokens=5)
    assert routed.generation.device == "remote:keyed" and faults.seen_keys[-1] == "Bearer sekrit-value"
    unset = router.endpoint_health()["transformer"][0]
    assert "MISSING_KEY" in (unset.last_error or "")
    everything = caplog.text + repr(router.endpoint_health()) + (tmp_path / "routing.jsonl").read_text()
    assert "sekrit" not in everything
    router.close()


def test_the_pool_takes_the_least_busy_awake_endpoint_and_the_earliest_to_wake_when_all_rest() -> None:
    now = [100.0]
    pool = EndpointPool(
        [RemoteEndpoint(url=f"http://127.0.0.1:{p}/v1", model="m") for p in (1, 2, 3)],
        cooldown_s=10,
        clock=lambda: now[0],
    )
    first = pool.take(set())
    second = pool.take(set())
    assert first is not None and second is not None and (first[0], second[0]) == (0, 1)  # least outstanding
    pool.failed(second[1], "HTTP 500")
    third = pool.take({0})
    assert third is not None and third[0] == 2  # 1 rests
    pool.failed(first[1], "timed out", rest_s=30)
    pool.failed(third[1], "HTTP 500")
    resting = pool.take(set())
    assert resting is not None and resting[0] == 1  # all rest: the one whose rest ends first (t=110)
    now[0] = 200.0
    pool.succeeded(resting[1])
    assert [h.resting_s for h in pool.health()] == [0.0, 0.0, 0.0]
    assert pool.take({0, 1, 2}) is None


@settings(max_examples=80, deadline=None)
@given(url=st.text(max_size=40), variable=st.text(max_size=12))
def test_endpoint_settings_are_checked_with_a_typed_error(url: str, variable: str) -> None:
    overrides = {"remote.transformer": [{"url": url, "model": "m", "api_key_env": variable or None}]}
    try:
        config = load_config(None, environ={}, overrides=overrides).config
    except ConfigurationError as exc:
        assert "remote" in str(exc)
        return
    (endpoint,) = config.remote.transformer
    assert endpoint.url.startswith(("http://", "https://")) and not endpoint.url.endswith("/")
    assert endpoint.api_key_env is None or endpoint.api_key_env.replace("_", "").isalnum()


def test_info_shows_whether_each_endpoint_answers_and_serves_its_model(faults, tmp_path) -> None:
    refused = f"http://127.0.0.1:{free_port()}/v1"
    config = tmp_path / "info.toml"
    config.write_text(
        "[remote]\nconnect_timeout_s = 2\n"
        f'[[remote.mamba]]\nurl = "{faults.url("ok")}"\nmodel = "mamba-7b"\nname = "wrong-model"\n'
        f'[[remote.transformer]]\nurl = "{faults.url("ok")}"\nmodel = "transformer"\nname = "up"\n'
        f'[[remote.transformer]]\nurl = "{refused}"\nmodel = "transformer"\nname = "down"\n'
        f'[[remote.transformer]]\nurl = "{faults.url("500")}"\nmodel = "transformer"\nname = "broken"\n',
        encoding="utf-8",
    )
    shown = subprocess.run(
        [sys.executable, "-m", "mamba_router", "info", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    lines = {line.split()[0]: line for line in shown.stdout.splitlines() if line.startswith("   ")}
    assert "serves transformer" in lines["up"]
    assert "does not serve mamba-7b (it lists transformer)" in lines["wrong-model"]
    assert "connection failed" in lines["down"] and "HTTP 500: internal failure" in lines["broken"]
    as_json = subprocess.run(
        [sys.executable, "-m", "mamba_router", "info", "--json", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    checks = json.loads(as_json.stdout)["remote_endpoints"]["checks"]
    assert [(c["label"], c["ok"]) for c in checks] == [
        ("wrong-model", False),
        ("up", True),
        ("down", False),
        ("broken", False),
    ]


def test_the_compatibility_wrapper_refuses_an_unknown_argument_as_a_local_model_does() -> None:
    """``generate_with_state_space(..., max_length=...)`` is a typed error naming it, before any request is sent."""
    from mamba_router.errors import InvalidRequestError
    from mamba_router.remote.model import RemoteModel
    from mamba_router.settings.schema import RemoteSection

    endpoint = RemoteEndpoint(url="http://127.0.0.1:9/v1", model="served")
    model = RemoteModel("transformer", RemoteSection(transformer=(endpoint,)), len)
    with pytest.raises(InvalidRequestError, match=r"unknown generation argument\(s\) \['max_length'\]"):
        model.generate_with_state_space("What was ordered?", context=JUDGMENT, max_length=5)
    assert model.health()[0].answered == 0 and model.health()[0].failed == 0
    model.close()
