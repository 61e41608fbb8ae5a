"""Issue 14: property-based fuzzing of every public entry point.

Arbitrary text (lone surrogates and control characters included), arbitrary JSON values and numbers at the edges go
into ``route``, ``route_batch``, ``generate``, ``read``/``ask``, config loading, ``DocumentState.load``, the CLI and
the HTTP example. The property: only :class:`MambaRouterError` subclasses come out (the CLI: an exit status, never a
traceback; HTTP: 2xx, or 4xx with a JSON body that does not repeat the request's text), and the routing log stays
parseable.

CI runs 100 examples per entry point. The slow run, 2,000 per entry point::

    python -m pytest -m slow --hypothesis-profile=slow tests/test_fuzz_entry_points.py
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mamba_router.errors import MambaRouterError
from mamba_router.generation.document_state import DocumentState
from mamba_router.routing.router import Router
from mamba_router.routing.routing_log import RoutingLog
from mamba_router.settings.schema import SECTIONS, load_config
from mamba_router.transformer import TransformerBackend

pytestmark = pytest.mark.slow

FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
MARKER = "QZXJ"  # every string the HTTP fuzzer sends starts with it; no error body may contain it

ANY_CHAR = st.characters(codec=None, blacklist_categories=())  # surrogates (Cs) and controls (Cc) included
TEXT = st.text(alphabet=ANY_CHAR, max_size=40)
EDGE_NUMBERS = st.one_of(
    st.integers(),
    st.sampled_from([0, -1, 1, 2**31, 2**63, -(2**63)]),
    st.builds(pow, st.just(10), st.sampled_from([400, 5000])),  # beyond float; beyond repr (4,300 digits)
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e-300, 5e-324, 1e308, -0.0, float("nan"), float("inf")]),
)
SCALARS = st.one_of(st.none(), st.booleans(), EDGE_NUMBERS, TEXT)
JSON = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3), max_leaves=8
)
CONTEXTS = st.one_of(st.none(), TEXT, st.lists(TEXT, max_size=3), JSON)
SMALL_OR_BAD_TOKENS = st.one_of(
    st.none(), st.integers(-3, 4), st.integers(min_value=131_073), st.floats(), TEXT, st.booleans()
)


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory, llama_dir: Path) -> Router:
    log = tmp_path_factory.mktemp("fuzz-log") / "routing.jsonl"
    overrides = {"transformer.model": str(llama_dir), "log.path": str(log), "generation.max_new_tokens": 4}
    return Router(load_config(environ={}, overrides=overrides), backends=[TransformerBackend()])


@pytest.fixture(scope="module")
def mamba_model(mamba_dir: Path) -> Any:
    from mamba_router_mps.backend import Mamba2Backend

    return Mamba2Backend().load(str(mamba_dir), device="cpu", dtype="float32")


def _log_is_parseable(router: Router) -> None:
    assert router.log is not None
    assert router.log.read().malformed_lines == 0


@FUZZ
@given(query=st.one_of(TEXT, JSON), context=CONTEXTS, pages=st.one_of(st.none(), EDGE_NUMBERS, JSON))
def test_route(router: Router, query: Any, context: Any, pages: Any) -> None:
    try:
        router.route(query, context, pages=pages)
    except MambaRouterError:
        pass
    _log_is_parseable(router)


@FUZZ
@given(requests=st.one_of(JSON, st.lists(st.one_of(TEXT, JSON, st.fixed_dictionaries({"query": TEXT})), max_size=4)))
def test_route_batch(router: Router, requests: Any) -> None:
    try:
        router.route_batch(requests)
    except MambaRouterError:
        pass
    _log_is_parseable(router)


GENERATE_OPTIONS = st.fixed_dictionaries(
    {},
    optional={  # each option may be left out (its default), so many examples get as far as generating
        "max_new_tokens": SMALL_OR_BAD_TOKENS,
        "temperature": st.one_of(EDGE_NUMBERS, TEXT, st.floats(0, 2)),
        "top_k": st.one_of(st.none(), EDGE_NUMBERS),
        "top_p": st.one_of(st.none(), EDGE_NUMBERS, st.floats(0, 1)),
        "stop": st.one_of(st.none(), TEXT, st.lists(TEXT, max_size=3), JSON),
        "seed": st.one_of(st.none(), EDGE_NUMBERS, TEXT),
        "prompt_format": st.one_of(st.none(), st.sampled_from(["auto", "chat", "plain"]), TEXT, JSON),
        "system_prompt": st.one_of(st.none(), TEXT, JSON),
    },
)


@FUZZ
@given(query=st.one_of(TEXT, JSON), context=CONTEXTS, options=GENERATE_OPTIONS)
def test_generate(router: Router, query: Any, context: Any, options: dict[str, Any]) -> None:
    try:
        router.generate(query, context, **options)
    except MambaRouterError:
        pass
    _log_is_parseable(router)


@FUZZ
@given(
    document=st.one_of(TEXT, JSON),
    question=st.one_of(TEXT, JSON),
    layout=st.fixed_dictionaries(
        {}, optional={"prompt_format": st.one_of(st.sampled_from(["auto", "chat", "plain"]), TEXT, JSON)}
    ),
    options=GENERATE_OPTIONS.map(lambda o: {"max_new_tokens": 3, **o}),
)
def test_read_and_ask(mamba_model: Any, document: Any, question: Any, layout: Any, options: Any) -> None:
    options.pop("system_prompt", None)
    try:
        state = mamba_model.read(document, **layout)
        mamba_model.ask(state, question, **{**layout, **options})
    except MambaRouterError:
        pass


KEYS = [f"{section}.{field}" for section, model in SECTIONS.items() for field in model.model_fields]


@FUZZ
@given(
    overrides=st.dictionaries(st.one_of(st.sampled_from(KEYS), TEXT), st.one_of(JSON, EDGE_NUMBERS), max_size=4),
    environ=st.dictionaries(
        st.one_of(
            st.sampled_from([f"MAMBA_ROUTER__{k.replace('.', '__').upper()}" for k in KEYS]),
            st.sampled_from(["ENABLE_MAMBA", "MAMBA_ROUTER_BACKEND"]),
            TEXT.map(lambda t: "MAMBA_ROUTER__" + t),
        ),
        TEXT,
        max_size=4,
    ),
    file_text=st.one_of(st.none(), TEXT, st.sampled_from(["[log]\npath = ''", "a: !!python/object:os.system {}"])),
    suffix=st.sampled_from([".toml", ".yaml", ".yml", ".json", ""]),
)
def test_config_loading(tmp_path: Path, overrides: Any, environ: Any, file_text: Any, suffix: str) -> None:
    path = None
    if file_text is not None:
        path = tmp_path / f"config{suffix}"
        path.write_bytes(file_text.encode("utf-8", errors="surrogatepass"))
    try:
        load_config(path, environ=environ, overrides=overrides)
    except MambaRouterError:
        pass


@pytest.fixture(scope="module")
def saved_state(mamba_model: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = mamba_model.read("Page 1 of 3\nThe appeal is allowed with costs.")
    return state.save(tmp_path_factory.mktemp("state") / "judgment.state")


def _tensor(shape: list[int], dtype: torch.dtype) -> torch.Tensor:
    return torch.zeros(shape, dtype=dtype)


TENSORS = st.builds(
    _tensor,
    st.lists(st.integers(0, 5), max_size=4),
    st.sampled_from([torch.float32, torch.bfloat16, torch.int64, torch.bool, torch.uint8]),
)


@FUZZ
@given(
    metadata_changes=st.dictionaries(
        st.sampled_from(
            ["format_version", "model_identity", "document_sha256", "document_tokens", "prompt_format", "tail", "x"]
        ),
        st.one_of(st.none(), st.text(max_size=70), st.sampled_from(["2", "lots", "-1", "0", "1e9", "9" * 30])),
        max_size=4,
    ),
    tensor_changes=st.dictionaries(st.text(max_size=12), st.one_of(st.none(), TENSORS), max_size=3),
    raw=st.one_of(st.none(), st.binary(max_size=200), st.integers(0, 4000)),
)
def test_document_state_load(
    mamba_model: Any, saved_state: Path, tmp_path: Path, metadata_changes: Any, tensor_changes: Any, raw: Any
) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    target = tmp_path / "crafted.state"
    if isinstance(raw, bytes):
        target.write_bytes(raw)
    elif isinstance(raw, int):  # the valid file cut short
        target.write_bytes(saved_state.read_bytes()[:raw])
    else:
        with safe_open(str(saved_state), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        for key, value in metadata_changes.items():  # a changed model_identity is refused early; the rest go deeper
            if value is None:
                metadata.pop(key, None)
            else:
                metadata[key] = value
        for key, tensor in tensor_changes.items():
            name = key if key and key in tensors or not tensors else next(iter(tensors))
            if tensor is None:
                tensors.pop(name, None)
            else:
                tensors[name] = tensor
        save_file(tensors, str(target), metadata=metadata)
    try:
        state = DocumentState.load(target, model_identity=mamba_model.state_identity)
        mamba_model.ask(state, "Was the appeal allowed?", max_new_tokens=2)
    except MambaRouterError:
        pass


OPTIONS = [
    "--query",
    "--pages",
    "--json",
    "--limit",
    "--max-new-tokens",
    "--temperature",
    "--seed",
    "--prompt-format",
    "--system-prompt",
    "--show",
    "--config",
    "--context-file",
]
ARGV_TEXT = st.text(
    alphabet=st.characters(codec=None, blacklist_categories=(), blacklist_characters="\x00"), max_size=20
)


@pytest.fixture(scope="module")
def cli_environment(tmp_path_factory: pytest.TempPathFactory, llama_dir: Path) -> Iterator[Path]:
    log = tmp_path_factory.mktemp("fuzz-cli") / "routing.jsonl"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(log.parent)  # a relative --context-file or --config names a file in here, if anything
        for name in ("MAMBA_ROUTER_CONFIG", "MAMBA_ROUTER_BACKEND"):
            patch.delenv(name, raising=False)
        patch.setenv("ENABLE_MAMBA", "0")
        patch.setenv("MAMBA_ROUTER__TRANSFORMER__MODEL", str(llama_dir))
        patch.setenv("MAMBA_ROUTER__LOG__PATH", str(log))
        patch.setenv("MAMBA_ROUTER__GENERATION__MAX_NEW_TOKENS", "4")
        yield log


@FUZZ
@given(
    command=st.sampled_from(["route", "generate", "log", "config", "info", "models"]),
    arguments=st.lists(st.one_of(st.sampled_from(OPTIONS), ARGV_TEXT), max_size=8),
)
def test_cli(cli_environment: Path, capsys: pytest.CaptureFixture[str], command: str, arguments: list[str]) -> None:
    from mamba_router.cli import main

    if "--max-new-tokens" in arguments:  # a valid count stays small: the fuzzer is not a generation benchmark
        arguments = arguments + ["--max-new-tokens", "3"]
    try:
        status = main([command, *arguments])
    except SystemExit as exc:  # argparse's usage errors (status 2) and --help (0)
        status = exc.code if isinstance(exc.code, int) else 2
    assert isinstance(status, int)
    assert "Traceback" not in capsys.readouterr().err
    if cli_environment.exists():
        assert RoutingLog(cli_environment).read().malformed_lines == 0


MARKED_TEXT = st.text(alphabet=ANY_CHAR, max_size=30).map(lambda t: MARKER + t)
MARKED_JSON = (
    st.recursive(
        st.one_of(st.none(), st.booleans(), EDGE_NUMBERS.filter(lambda n: not isinstance(n, int) or abs(n) < 10**300)),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(MARKED_TEXT, inner, max_size=3),
        max_leaves=6,
    )
    | MARKED_TEXT
)
BODIES = st.one_of(
    MARKED_JSON,
    st.fixed_dictionaries(
        {"query": st.one_of(MARKED_TEXT, MARKED_JSON)},
        optional={
            "context": st.one_of(MARKED_TEXT, st.lists(MARKED_TEXT, max_size=3), MARKED_JSON),
            "pages": st.one_of(EDGE_NUMBERS.filter(lambda n: not isinstance(n, int) or abs(n) < 10**300), MARKED_JSON),
            "max_new_tokens": st.one_of(st.integers(-3, 4), st.integers(min_value=4097, max_value=10**12), MARKED_TEXT),
            "dry_run": st.one_of(st.booleans(), MARKED_JSON),
        },
    ),
)


@pytest.fixture(scope="module")
def http_client(tmp_path_factory: pytest.TempPathFactory, llama_dir: Path) -> Any:
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "fastapi_app"))
    try:
        from app import create_app
    finally:
        sys.path.pop(0)
    log = tmp_path_factory.mktemp("fuzz-http") / "routing.jsonl"
    overrides = {
        "transformer.model": str(llama_dir),
        "log.path": str(log),
        "generation.max_new_tokens": 4,
        "limits.max_body_bytes": 4096,
    }
    router = Router(load_config(environ={}, overrides=overrides), backends=[TransformerBackend()])
    return TestClient(create_app(router), raise_server_exceptions=False), router


@FUZZ
@given(body=BODIES)
def test_http_app(http_client: Any, body: Any) -> None:
    client, router = http_client
    raw = json.dumps(body, ensure_ascii=False).encode("utf-8", errors="surrogatepass")
    response = client.post("/query", content=raw, headers={"content-type": "application/json"})
    assert response.status_code < 500, response.text[:500]
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/json")
        assert MARKER not in response.text, response.text[:500]
    _log_is_parseable(router)


def test_the_slow_profile_runs_at_least_2000_examples_per_entry_point() -> None:
    """The slow run's profile is registered (tests/conftest.py) with the count the issue asks for."""
    assert settings.get_profile("slow").max_examples >= 2000
    assert os.environ.get("HYPOTHESIS_PROFILE") in (None, "slow", "default", "ci")
