"""The FastAPI example, through FastAPI's test client, on a tiny offline model (no network)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from app import create_app
from fastapi.testclient import TestClient

from mamba_router import Router, load_config
from mamba_router.transformer import TransformerBackend


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
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
    return TestClient(create_app(Router(config)))


def test_query_answers_and_says_how_it_was_routed(client: TestClient) -> None:
    response = client.post(
        "/query",
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
    assert {r["name"] for r in body["decision"]["rules"] if r["fired"]} == {"multi_page", "legal_keywords"}
    assert isinstance(body["text"], str) and body["generation"]["completion_tokens"] <= 4


def test_dry_run_and_the_routing_log(client: TestClient) -> None:
    decision = client.post("/query", json={"query": "hello", "dry_run": True}).json()
    assert decision["model_used"] == "transformer" and decision["fallback_used"] is False
    records = client.get("/routing_log", params={"limit": 2}).json()["records"]
    assert len(records) == 2 and records[-1]["decision_id"] == decision["decision_id"]
    assert records[-1]["kind"] == "route" and "query" not in records[-1]
    assert client.get("/routing_log", params={"limit": -1}).status_code == 422


def test_bad_requests_get_clear_errors(client: TestClient) -> None:
    assert client.post("/query", json={"query": ""}).status_code == 422
    assert client.post("/query", json={"query": "   "}).status_code == 422
    response = client.post("/query", json={"query": "q", "pages": -2})
    assert response.status_code == 422 and "pages" in response.text


SECRET = "CONFIDENTIAL-WITNESS-4471"


@pytest.fixture(scope="module")
def small_client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    tmp = tmp_path_factory.mktemp("api-small")
    model = TransformerBackend().write_offline_model(tmp / "model")
    overrides = {
        "transformer.model": str(model),
        "log.path": str(tmp / "routing.jsonl"),
        "model_routing.enable_mamba": False,
        "limits.max_body_bytes": 4096,
        "limits.max_context_chars": 2000,
    }
    return TestClient(create_app(Router(load_config(environ={}, overrides=overrides))))


@pytest.mark.parametrize(
    "body",
    [
        {"query": [f"Who is {SECRET}?"], "context": f"The judgment names {SECRET}."},  # wrong type for the query
        {"query": "q", "pages": f"{SECRET} pages"},  # wrong type for pages: FastAPI's own 422 echoed it
        {"query": "q", "context": {"text": SECRET}},
        {"query": f"Who is {SECRET}?", "pages": -2},
        {"query": f"Who is {SECRET}?\ud800", "dry_run": True},  # not valid Unicode: was a 500
        {"query": "q", "context": [f"{SECRET}", 5]},
        {"query": "q", "context": f"{SECRET} " * 300, "dry_run": True},  # over limits.max_context_chars
    ],
)
def test_error_bodies_never_repeat_the_request_text(small_client: TestClient, body: dict) -> None:
    response = small_client.post("/query", content=json.dumps(body), headers={"content-type": "application/json"})
    assert response.status_code in (413, 422), response.text
    assert response.headers["content-type"].startswith("application/json")
    assert SECRET not in response.text and "ud800" not in response.text


def test_a_body_over_the_limit_is_refused_before_it_is_parsed(small_client: TestClient) -> None:
    big = json.dumps({"query": "q", "context": "x" * 10_000, "dry_run": True})
    response = small_client.post("/query", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413 and "limits.max_body_bytes" in response.json()["detail"]

    def chunks():  # no content-length: the middleware counts what arrives
        for _ in range(10):
            yield b"x" * 1000

    response = small_client.post("/query", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    small = small_client.post("/query", json={"query": "Was the appeal allowed?", "dry_run": True})
    assert small.status_code == 200
