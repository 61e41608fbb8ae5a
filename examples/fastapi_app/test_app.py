"""The mounting example, through FastAPI's test client, on a tiny offline model (no network)."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from app import create_app
from fastapi.testclient import TestClient

from mamba_router import Router, load_config
from mamba_router.transformer import TransformerBackend


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("api")
    model = TransformerBackend().write_offline_model(tmp / "model")
    config = load_config(
        environ={},
        overrides={
            "transformer.model": str(model),
            "log.path": str(tmp / "routing.jsonl"),
            "model_routing.enable_mamba": False,
            "model_routing.truncation": "keep_end",
        },
    )
    with TestClient(create_app(Router(config))) as test_client:  # runs the lifespan: models load, then drain
        deadline = time.monotonic() + 60
        while not test_client.get("/llm/ready").json()["ready"] and time.monotonic() < deadline:
            time.sleep(0.05)
        yield test_client


def test_the_mounted_app_answers_next_to_the_host_routes(client: TestClient) -> None:
    assert client.get("/").json()["chat"] == "/llm/v1/chat/completions"
    assert client.get("/llm/ready").json()["ready"] is True
    response = client.post(
        "/llm/query",
        json={
            "query": "Was the appeal allowed?",
            "context": "Page 1 of 4\nThe appeal is allowed.",
            "max_new_tokens": 4,
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert body["model_used"] == "transformer" and body["fallback_used"] is True
    assert "enable_mamba=false" in body["fallback_reason"]
    chat = client.post(
        "/llm/v1/chat/completions",
        json={"model": "auto", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 3},
    ).json()
    assert chat["object"] == "chat.completion" and chat["usage"]["completion_tokens"] <= 3


def test_dry_run_and_the_routing_log(client: TestClient) -> None:
    decision = client.post("/llm/query", json={"query": "hello", "dry_run": True}).json()
    assert decision["model_used"] == "transformer" and decision["fallback_used"] is False
    records = client.get("/llm/api/v1/model/routing_log", params={"limit": 2}).json()["records"]
    assert len(records) == 2 and records[-1]["decision_id"] == decision["decision_id"]
    assert records[-1]["kind"] == "route" and "query" not in records[-1]
    assert client.get("/llm/api/v1/model/routing_log", params={"limit": -1}).status_code == 400
