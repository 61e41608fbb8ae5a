"""The Ray Serve application on a real local Ray cluster (127.0.0.1, CPU): 2 Mamba replicas and 1 Transformer
replica of tiny offline models behind the ingress, driven over HTTP like `mamba-router serve`. 20 questions about 4
documents each go to their document's replica, which read it once (state reused 16 times); killing a Mamba replica
under load loses no request and no log record; the replica counts come from the config."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from server_process import free_port, write_config, write_models

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

from mamba_router.serve.ray_app import APP_NAME, build_ray_app  # noqa: E402
from mamba_router.settings.schema import load_config  # noqa: E402

DOCUMENTS = [
    f"Judgment {i}. The appeal number {i} is allowed and the respondent pays the costs. " * 6 for i in range(4)
]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ray")
    log_path = directory / "routing.jsonl"
    config_path = write_config(
        write_models(directory / "models"),
        directory / "ray.toml",
        f'[log]\npath = "{log_path}"\n'
        "[ray]\nmamba_replicas = 2\ntransformer_replicas = 1\nmamba_num_cpus = 0.5\ntransformer_num_cpus = 0.5\n"
        "affinity_max_queue = 1000\n",
    )
    config = load_config(config_path, environ={}, overrides={"mamba.backend": "mamba2"}).config
    env = {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_ray_app(config), name=APP_NAME, route_prefix="/")
    yield f"http://127.0.0.1:{port}", config, log_path
    serve.shutdown()
    ray.shutdown()


def _ask(url: str, question: str, document: str | None, **extra) -> dict:
    body = {"model": "mamba", "messages": [{"role": "user", "content": question}], "max_tokens": 6, **extra}
    if document is not None:
        body["context"] = document
    response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()["mamba_router"]


def test_replica_counts_come_from_the_config(app) -> None:
    _, config, _ = app
    deployments = serve.status().applications[APP_NAME].deployments
    running = {name: d.replica_states.get("RUNNING", 0) for name, d in deployments.items()}
    assert running["mamba"] == config.ray.mamba_replicas == 2
    assert running["transformer"] == config.ray.transformer_replicas == 1


def test_a_documents_questions_go_to_the_replica_that_read_it(app) -> None:
    url, _, _ = app
    replica_of: dict[int, str] = {}
    uses = []
    for round_ in range(5):
        for index, document in enumerate(DOCUMENTS):
            info = _ask(url, f"Question {round_} about judgment {index}: who pays?", document)
            assert info["backend"] == "ray" and info["device"].startswith("ray:")
            replica_of.setdefault(index, info["device"])
            assert info["device"] == replica_of[index]  # every question about it meets its state
            uses.append(info["document_state"])
    assert uses[:4] == ["read"] * 4 and uses.count("reused") == 16
    streamed = httpx.post(
        f"{url}/v1/chat/completions",
        json={
            "model": "mamba",
            "messages": [{"role": "user", "content": "And the costs?"}],
            "context": DOCUMENTS[0],
            "max_tokens": 6,
            "stream": True,
        },
        timeout=120,
    )
    last = [json.loads(line[6:]) for line in streamed.text.splitlines() if line.startswith("data: {")][-1]
    assert last["mamba_router"]["device"] == replica_of[0] and last["mamba_router"]["document_state"] == "reused"


def test_killing_a_mamba_replica_under_load_loses_no_request_and_no_record(app) -> None:
    url, _, log_path = app
    before = len(log_path.read_text(encoding="utf-8").splitlines()) if log_path.exists() else 0
    actors = {
        a["name"].rsplit("#", 1)[-1]: a
        for a in ray.util.list_named_actors(all_namespaces=True)
        if "#mamba#" in a["name"]
    }
    assert len(actors) == 2
    owner = {i: _ask(url, "Warm?", d)["device"].removeprefix("ray:") for i, d in enumerate(DOCUMENTS)}
    victim = next(iter(actors)) if len(set(owner.values())) == 1 else owner[0]
    theirs = [d for i, d in enumerate(DOCUMENTS) if owner[i] == victim] or DOCUMENTS[:1]
    killed_at: list[float] = []

    async def load() -> list[tuple[int, str, float]]:
        async with httpx.AsyncClient(timeout=300) as http:

            async def one(i: int) -> tuple[int, str, float]:
                body = {
                    "model": "mamba",
                    "messages": [{"role": "user", "content": f"Who pays? ({i})"}],
                    "context": theirs[i % len(theirs)],
                    "max_tokens": 400,
                }
                response = await http.post(f"{url}/v1/chat/completions", json=body)
                device = (
                    response.json()["mamba_router"]["device"] if response.status_code == 200 else response.text[:600]
                )
                return response.status_code, device.removeprefix("ray:"), time.monotonic()

            tasks = [asyncio.create_task(one(i)) for i in range(8)]
            await asyncio.sleep(0.5)  # the requests are decoding on the victim, their documents' owner
            ray.kill(ray.get_actor(actors[victim]["name"], namespace=actors[victim]["namespace"]), no_restart=True)
            killed_at.append(time.monotonic())
            return await asyncio.gather(*tasks)

    answers = asyncio.run(load())
    assert [status for status, _, _ in answers] == [200] * 8
    after = [device for _, device, done in answers if done > killed_at[0]]
    assert len(after) >= 4 and victim not in after  # in flight when it died: answered again by the other replica
    records = [json.loads(line) for line in log_path.read_text(encoding="utf-8").splitlines()][before:]
    answered = [r for r in records if r.get("kind") == "generate" and r.get("outcome") == "ok"]
    assert len(answered) == 8 + len(DOCUMENTS)  # the warm-up questions and the 8, once each


def test_a_replicas_refusal_reaches_the_client_as_the_same_typed_error(app) -> None:
    url, _, _ = app
    body = {
        "model": "transformer",
        "messages": [{"role": "user", "content": "Summarise."}],
        "context": "The court heard the appeal. " * 1500,  # over the tiny Transformer's 4,096 positions
        "max_tokens": 4,
    }
    response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 400, response.text
    assert "reads at most 4096" in response.json()["error"]["message"]
