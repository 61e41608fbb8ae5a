"""The Router end to end on tiny real models: decisions, dry runs, fallback on unavailability and on runtime
failure, the Transformer's window, privacy of the log, and rendering."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mamba_router.backends.reports import Availability
from mamba_router.errors import (
    ContextTooLongError,
    GenerationError,
    InvalidRequestError,
    MambaRouterError,
    MambaUnavailableError,
)
from mamba_router.generation.requests import compose_context_prompt
from mamba_router.routing.router import Router, RouteRequest
from mamba_router.samples.synthetic import synthetic_judgment
from mamba_router.settings.schema import load_config
from mamba_router.transformer import TransformerBackend

QUERY_MARKER = "ZEBRA-QUERY-7731"
CONTEXT_MARKER = "QUOKKA-CONTEXT-5519"


class FailingModel:
    """A loaded model whose generation fails the way a GPU run can (out of memory, a kernel error)."""

    def __init__(self, inner: Any, error: Exception) -> None:
        self.inner = inner
        self.error = error
        self.backend, self.device, self.model_id = inner.backend, inner.device, inner.model_id
        self.available, self.reason = True, "loaded"

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def generate(self, prompt: str, **kwargs: Any) -> Any:
        raise self.error


class CpuMambaBackend:
    """A Mamba-family backend usable on any machine: it runs the real mamba2 (pure PyTorch) code on the CPU."""

    name = "test-mamba"
    family = "mamba"
    priority = 5
    install_command = "pip install test-mamba"

    def __init__(self, model_dir: Path, fail_with: Exception | None = None) -> None:
        self.default_model = str(model_dir)
        self.fail_with = fail_with
        self.loads = 0

    def probe(self, platform: Any) -> Availability:
        return Availability.usable("test backend, always usable")

    def load(self, model: str, *, device: str | None = None, dtype: str | None = None) -> Any:
        from mamba_router_mps.backend import Mamba2Backend

        self.loads += 1
        loaded = Mamba2Backend().load(model, device="cpu", dtype="float32")
        return FailingModel(loaded, self.fail_with) if self.fail_with is not None else loaded

    def write_offline_model(self, directory: Path) -> Path:  # pragma: no cover - not used here
        raise NotImplementedError


def make_router(tmp_path: Path, llama_dir: Path, mamba: CpuMambaBackend | None = None, **overrides: Any) -> Router:
    settings_ = {"transformer.model": str(llama_dir), "log.path": str(tmp_path / "routing.jsonl"), **overrides}
    config = load_config(environ={}, overrides=settings_)
    backends = ([mamba] if mamba is not None else []) + [TransformerBackend()]
    return Router(config, backends=backends)


def log_records(router: Router) -> list[dict[str, Any]]:
    assert router.log is not None
    return [json.loads(line) for line in router.log.path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture()
def mamba(mamba_dir: Path) -> CpuMambaBackend:
    return CpuMambaBackend(mamba_dir)


def test_route_is_a_dry_run_that_counts_with_the_mamba_tokenizer(tmp_path, llama_dir, mamba) -> None:
    router = make_router(tmp_path, llama_dir, mamba, **{"model_routing.long_context_tokens": 500})
    judgment = synthetic_judgment(2, seed=3)
    decision = router.route("Summarise the facts.", judgment)
    assert mamba.loads == 0 and not router._models  # no model loaded
    assert decision.model_used == "mamba" and decision.backend == "test-mamba" and not decision.fallback_used
    assert decision.token_count_method == "tokenizer" and decision.token_counter == str(mamba.default_model)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(mamba.default_model)
    expected = len(
        tokenizer(compose_context_prompt("Summarise the facts.", judgment), add_special_tokens=False)["input_ids"]
    )
    assert decision.token_count == expected
    rules = {r.name: r for r in decision.rules}
    assert rules["long_context"].fired and f"{expected} tokens" in rules["long_context"].detail
    assert not rules["multi_page"].fired and rules["multi_page"].inputs["pages"] == 2
    assert decision.fired_rules == ["long_context"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    questions=st.lists(
        st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=60).filter(
            lambda q: q.strip() != ""
        ),
        min_size=1,
        max_size=3,
    )
)
def test_questions_about_one_document_count_within_a_token_of_the_joined_text(
    tmp_path, llama_dir, mamba, questions: list[str]
) -> None:
    from transformers import AutoTokenizer

    router = make_router(tmp_path, llama_dir, mamba)
    tokenizer = AutoTokenizer.from_pretrained(mamba.default_model)
    judgment = synthetic_judgment(1, seed=4)
    for question in questions:  # the document is tokenized for the first question only; the counts stay right
        counted = router.route(question, judgment).token_count
        joined = len(tokenizer(compose_context_prompt(question, judgment), add_special_tokens=False)["input_ids"])
        assert abs(counted - joined) <= 1


def test_short_plain_questions_go_to_the_transformer_and_legal_ones_to_mamba(tmp_path, llama_dir, mamba) -> None:
    router = make_router(tmp_path, llama_dir, mamba)
    plain = router.route("What is the capital of France?")
    assert plain.model_used == "transformer" and not plain.fallback_used and plain.fired_rules == []
    legal = router.route("Was the writ petition allowed?")
    assert legal.model_used == "mamba" and legal.fired_rules == ["legal_keywords"]
    paged = router.route("Summarise", "one\ftwo", pages=12)
    assert paged.model_used == "mamba" and paged.page_source == "caller" and paged.pages == 12
    docs = router.route("Summarise", ["a\fb", "Page 1 of 2\nc\nPage 2 of 2"])
    assert docs.pages == 4 and docs.documents == 2 and docs.model_used == "mamba"


words = st.sampled_from(["what", "is", "the", "order", "Appeal", "rent", "due", "case", "bench.", "who", "paid"])


@pytest.fixture(scope="module")
def unavailable_router(tmp_path_factory, llama_dir) -> Router:
    tmp = tmp_path_factory.mktemp("unavailable")
    return make_router(
        tmp, llama_dir, None, **{"model_routing.token_counting": "estimate", "model_routing.long_context_tokens": 300}
    )


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    query=st.lists(words, min_size=1, max_size=8).map(" ".join),
    context_pages=st.integers(0, 5),
    pages=st.one_of(st.none(), st.integers(0, 10)),
)
def test_without_mamba_every_request_gets_the_transformer_and_fallback_says_why(
    unavailable_router, query, context_pages, pages
) -> None:
    context = synthetic_judgment(context_pages, seed=1) if context_pages else None
    decision = unavailable_router.route(query, context, pages=pages)
    assert decision.model_used == "transformer" and decision.backend == "transformer"
    assert decision.fallback_used == bool(decision.fired_rules)
    if decision.fallback_used:
        assert decision.fallback_reason and decision.fallback_reason == unavailable_router.mamba_unavailable_reason
    assert decision.token_count_method == "estimate"


@pytest.fixture(scope="module")
def estimating_router(tmp_path_factory, llama_dir, mamba_dir) -> Router:
    tmp = tmp_path_factory.mktemp("estimating")
    overrides = {"model_routing.token_counting": "estimate", "model_routing.long_context_tokens": 400}
    return make_router(tmp, llama_dir, CpuMambaBackend(mamba_dir), **overrides)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    query=st.lists(words, min_size=1, max_size=6).map(" ".join),
    pages=st.integers(0, 4),
    more_pages=st.integers(0, 4),
    more_text=st.integers(0, 3000),
    caller_pages=st.booleans(),
)
def test_more_text_or_pages_never_moves_a_request_from_mamba_to_the_transformer(
    estimating_router, query, pages, more_pages, more_text, caller_pages
) -> None:
    base = synthetic_judgment(4, seed=2)[: 200 + more_text // 3]
    grown = synthetic_judgment(4, seed=2)[: 200 + more_text]
    small = estimating_router.route(query, base, pages=pages if caller_pages else None)
    large = estimating_router.route(query, grown, pages=pages + more_pages if caller_pages else None)
    assert large.token_count >= small.token_count
    if small.model_used == "mamba":
        assert large.model_used == "mamba"


def test_generate_on_mamba_answers_like_the_model_itself(tmp_path, llama_dir, mamba) -> None:
    router = make_router(tmp_path, llama_dir, mamba)
    judgment = synthetic_judgment(3, seed=4)
    result = router.generate("What did the court order?", judgment, max_new_tokens=8)
    assert result.model_used == "mamba" and result.backend == "test-mamba" and not result.fallback_used
    assert [a.ok for a in result.attempts] == [True]
    direct = router._models[("test-mamba", mamba.default_model)].generate(
        compose_context_prompt("What did the court order?", judgment), max_new_tokens=8
    )
    assert result.text == direct.text and result.generation.token_ids == direct.token_ids
    assert result.decision.token_count_method == "tokenizer"
    again = router.generate("And the costs?", judgment, max_new_tokens=4)  # the loaded model is kept
    assert mamba.loads == 1 and again.model_used == "mamba"


@pytest.mark.parametrize(
    "error",
    [
        GenerationError("real-mamba ran out of memory on cuda:0 (injected)"),
        RuntimeError("CUDA error: an illegal memory access was encountered (injected)"),
    ],
)
def test_a_runtime_mamba_failure_is_retried_on_the_transformer_and_logged(
    tmp_path, llama_dir, mamba_dir, error
) -> None:
    failing = CpuMambaBackend(mamba_dir, fail_with=error)
    router = make_router(tmp_path, llama_dir, failing)
    result = router.generate("Was the appeal allowed?", "The appeal is allowed with costs.", max_new_tokens=6)
    assert result.model_used == "transformer" and result.backend == "transformer" and result.fallback_used
    assert "injected" in (result.fallback_reason or "") and "test-mamba failed at run time" in result.fallback_reason
    assert result.decision.model_used == "mamba"  # the decision was Mamba; the run fell back
    first, second = result.attempts
    assert (first.backend, first.ok, first.error_type) == (
        "test-mamba",
        False,
        "GenerationError",
    )  # typed at the boundary
    assert "injected" in (first.error or "")
    assert (second.backend, second.ok) == ("transformer", True)
    record = log_records(router)[-1]
    assert record["kind"] == "generate" and record["outcome"] == "ok" and record["fallback_used"] is True
    assert [a["ok"] for a in record["attempts"]] == [False, True]
    assert record["model_used"] == "transformer" and "injected" in record["attempts"][0]["error"]


def test_without_fallback_a_mamba_failure_is_an_error_and_is_logged(tmp_path, llama_dir, mamba_dir) -> None:
    failing = CpuMambaBackend(mamba_dir, fail_with=GenerationError("out of memory (injected)"))
    router = make_router(tmp_path, llama_dir, failing, **{"mamba.fallback": False})
    with pytest.raises(GenerationError, match="injected"):
        router.generate("Was the appeal allowed?", max_new_tokens=4)
    record = log_records(router)[-1]
    assert record["outcome"] == "error" and record["error_type"] == "GenerationError"
    assert record["attempts"][0]["ok"] is False
    off = make_router(tmp_path / "b", llama_dir, None, **{"mamba.fallback": "none"})
    with pytest.raises(MambaUnavailableError, match="mamba.fallback=false"):
        off.route("Was the appeal allowed?")


def test_enable_mamba_false_sends_rule_matches_to_the_transformer_with_the_reason(tmp_path, llama_dir, mamba) -> None:
    router = make_router(tmp_path, llama_dir, mamba, **{"model_routing.enable_mamba": False})
    decision = router.route("Was the appeal allowed?")
    assert decision.model_used == "transformer" and decision.fallback_used
    assert "enable_mamba=false" in (decision.fallback_reason or "")


def test_a_context_too_long_for_the_transformer_is_an_error_unless_truncation_is_configured(
    tmp_path, llama_dir
) -> None:
    judgment = synthetic_judgment(2, seed=5)  # far more than the tiny Llama's 256 positions
    router = make_router(tmp_path, llama_dir, None)
    with pytest.raises(ContextTooLongError, match="not truncated") as info:
        router.generate("Summarise the judgment.", judgment, max_new_tokens=8)
    assert "model_routing.truncation" in str(info.value)
    assert log_records(router)[-1]["error_type"] == "ContextTooLongError"

    for mode in ("keep_start", "keep_end"):
        cutting = make_router(tmp_path / mode, llama_dir, None, **{"model_routing.truncation": mode})
        result = cutting.generate("Summarise the judgment.", judgment, max_new_tokens=8)
        t = result.truncation
        assert t is not None and t.mode == mode and t.window == 256
        assert t.context_tokens_after < t.context_tokens_before
        assert result.generation.prompt_tokens + 8 <= 256
        assert log_records(cutting)[-1]["truncation"]["mode"] == mode


def test_the_log_holds_no_text_unless_asked(tmp_path, llama_dir, mamba) -> None:
    query = f"What is {QUERY_MARKER} about in this case?"
    context = f"The document mentions {CONTEXT_MARKER} twice. {CONTEXT_MARKER}."
    router = make_router(tmp_path, llama_dir, mamba)
    router.route(query, context)
    result = router.generate(query, context, max_new_tokens=5)
    raw = router.log.path.read_text(encoding="utf-8")
    assert QUERY_MARKER not in raw and CONTEXT_MARKER not in raw
    if len(result.text.strip()) >= 8:
        assert result.text not in raw
    first, second = log_records(router)
    assert first["query_chars"] == len(query) and first["context_chars"] == len(context)
    assert first["query_hash"] == second["query_hash"] and first["context_hash"] == second["context_hash"]
    assert "query" not in first and "answer" not in second

    loud = make_router(tmp_path / "loud", llama_dir, mamba, **{"log.log_text": True})
    loud.generate(query, context, max_new_tokens=5)
    record = log_records(loud)[-1]
    assert record["query"] == query and record["context"] == context and "answer" in record


def test_a_batch_is_decided_in_one_call_in_order(tmp_path, llama_dir, mamba) -> None:
    router = make_router(tmp_path, llama_dir, mamba)
    decisions = router.route_batch(
        ["hello", {"query": "the decree?"}, RouteRequest("Summarise", "a\fb\fc"), {"query": "x", "pages": 9}]
    )
    assert [d.model_used for d in decisions] == ["transformer", "mamba", "mamba", "mamba"]
    assert len(log_records(router)) == 4 and mamba.loads == 0
    with pytest.raises(InvalidRequestError, match="batch item 0"):
        router.route_batch([{"question": "x"}])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"query": ""}, "query is empty"),
        ({"query": 3}, "query must be a str"),
        ({"query": "q", "pages": -1}, "pages must be"),
        ({"query": "q", "pages": True}, "pages must be"),
        ({"query": "q", "context": 42}, "context must be"),
        ({"query": "q", "context": ["ok", None]}, r"context\[1\] must be a str"),
    ],
)
def test_bad_requests_are_rejected_before_anything_is_logged(tmp_path, llama_dir, kwargs, message) -> None:
    router = make_router(tmp_path, llama_dir, None)
    query = kwargs.pop("query")
    with pytest.raises(InvalidRequestError, match=message):
        router.route(query, **kwargs)
    assert not router.log.path.exists()


def test_decisions_and_results_render_for_terminals_and_notebooks(tmp_path, llama_dir, mamba) -> None:
    router = make_router(tmp_path, llama_dir, mamba)
    decision = router.route("Was the appeal allowed?", "Page 1 of 3\nx")
    text = str(decision)
    assert "mamba (test-mamba)" in text and "[x] legal_keywords" in text and "[x] multi_page" in text
    html = decision._repr_html_()
    assert "<table>" in html and "legal_keywords" in html
    result = router.generate("hello there", max_new_tokens=3)
    assert "transformer (transformer)" in str(result) and "attempt  transformer" in str(result)
    assert "<pre>" in result._repr_html_()
    assert result.rules == result.decision.rules and result.token_count == result.decision.token_count


def test_a_mamba_model_that_cannot_load_falls_back_and_says_why(tmp_path, llama_dir) -> None:
    broken = CpuMambaBackend(tmp_path / "no-such-mamba-model")
    router = make_router(tmp_path, llama_dir, broken)
    result = router.generate("Was the appeal allowed?", max_new_tokens=3)
    assert result.model_used == "transformer" and result.fallback_used
    assert result.attempts[0].error_type == "ModelNotFoundError" and "does not exist" in (result.fallback_reason or "")


def test_repeated_questions_about_one_document_reuse_its_mamba_state(tmp_path, llama_dir, mamba) -> None:
    router = make_router(tmp_path, llama_dir, mamba)
    judgment = synthetic_judgment(3, seed=8)
    first = router.generate("What did the court order?", judgment, max_new_tokens=6)
    second = router.generate("Was the appeal allowed?", judgment, max_new_tokens=6)
    assert (first.document_state, second.document_state) == ("read", "reused")
    model = router._models[("test-mamba", mamba.default_model)]
    direct = model.generate(compose_context_prompt("Was the appeal allowed?", judgment), max_new_tokens=6)
    assert second.generation.token_ids == direct.token_ids
    assert router.state_cache is not None and (router.state_cache.hits, router.state_cache.misses) == (1, 1)
    assert [r["document_state"] for r in log_records(router)] == ["read", "reused"]
    assert "reused the cached state" in str(second)
    off = make_router(tmp_path / "off", llama_dir, mamba, **{"mamba.state_cache_bytes": 0})
    assert off.generate("What was ordered?", judgment, max_new_tokens=3).document_state is None


class SecondCpuMambaBackend(CpuMambaBackend):
    """Another Mamba backend of lower priority (as mamba2 is next to real-mamba on a GPU machine)."""

    name = "test-mamba-b"
    priority = 1


def test_a_failing_mamba_backend_hands_the_same_model_to_the_next_one(tmp_path, llama_dir, mamba_dir) -> None:
    first = CpuMambaBackend(mamba_dir, fail_with=GenerationError("injected kernel failure"))
    second = SecondCpuMambaBackend(mamba_dir)
    config = load_config(
        environ={}, overrides={"transformer.model": str(llama_dir), "log.path": str(tmp_path / "routing.jsonl")}
    )
    router = Router(config, backends=[first, second, TransformerBackend()])
    assert [t.name for t in router.mamba_alternates] == ["test-mamba-b"]
    result = router.generate("What did the court order?", max_new_tokens=3)
    assert (result.model_used, result.backend, result.fallback_used) == ("mamba", "test-mamba-b", False)
    assert [(a.backend, a.ok) for a in result.attempts] == [("test-mamba", False), ("test-mamba-b", True)]
    assert second.loads == 1 and (router.transformer.name, router.transformer.model) not in router._models
    record = log_records(router)[-1]
    assert [(a["backend"], a["ok"]) for a in record["attempts"]] == [("test-mamba", False), ("test-mamba-b", True)]


def test_a_named_mamba_backend_gets_no_alternates(tmp_path, llama_dir, mamba_dir) -> None:
    first = CpuMambaBackend(mamba_dir, fail_with=GenerationError("injected kernel failure"))
    config = load_config(
        environ={},
        overrides={
            "transformer.model": str(llama_dir),
            "log.path": str(tmp_path / "routing.jsonl"),
            "mamba.backend": "test-mamba",
        },
    )
    router = Router(config, backends=[first, SecondCpuMambaBackend(mamba_dir), TransformerBackend()])
    assert router.mamba_alternates == []
    result = router.generate("What did the court order?", max_new_tokens=3)
    assert result.model_used == "transformer" and [a.backend for a in result.attempts] == ["test-mamba", "transformer"]


def test_numbers_and_shapes_at_the_edges_are_typed_errors(tmp_path, llama_dir) -> None:
    """Issue 14, item 7: a string given as a batch, a 5,000-digit page count, a temperature beyond float."""
    router = make_router(tmp_path, llama_dir)
    with pytest.raises(InvalidRequestError, match="list of requests"):
        router.route_batch("order")
    with pytest.raises(InvalidRequestError, match="pages must be a whole number from 0 to 1,000,000, got an integer"):
        router.route("q", pages=10**5000)
    with pytest.raises(InvalidRequestError, match="temperature must be a finite number"):
        router.generate("q", temperature=10**400, max_new_tokens=1)
    with pytest.raises(InvalidRequestError, match="max_new_tokens must be an int"):
        router.generate("q", max_new_tokens=10**5000)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=st.text(alphabet=st.characters(codec=None, blacklist_categories=()), max_size=30))
def test_any_text_routes_or_is_a_typed_error(tmp_path, llama_dir, query) -> None:
    """Issue 14, item 1: lone surrogates ("q \\ud800", undecodable argv bytes) crashed the tokenizer untyped."""
    router = make_router(tmp_path, llama_dir)
    try:
        router.route(query, context=query)
    except MambaRouterError:
        pass


def test_text_that_is_not_unicode_names_the_field_and_offset(tmp_path, llama_dir) -> None:
    from mamba_router.cli import main

    router = make_router(tmp_path, llama_dir)
    with pytest.raises(InvalidRequestError, match="query is not valid Unicode text.*character 2"):
        router.route("q \ud800")
    with pytest.raises(InvalidRequestError, match=r"context\[0\] is not valid Unicode"):
        router.route("What was ordered?", context=["ok \udcff"])
    assert main(["route", "--query", "hi \udcff"]) == 2  # what `--query $'hi \xff'` becomes in argv
    with pytest.raises(InvalidRequestError, match="got bytes; decode it"):
        router.route("What was ordered?", context=b"doc")  # was "context[0] must be a str, got int"


def test_request_limits_are_configurable_and_enforced_where_text_enters(tmp_path, llama_dir) -> None:
    """Issue 14: sizes, pages and batch lengths are [limits] keys, checked before any text is tokenized or logged."""
    from mamba_router.errors import RequestTooLargeError

    limits = {
        "limits.max_query_chars": 50,
        "limits.max_context_chars": 100,
        "limits.max_pages": 10,
        "limits.max_batch": 3,
    }
    router = make_router(tmp_path, llama_dir, **limits)
    with pytest.raises(RequestTooLargeError, match=r"query is 51 characters, more than limits.max_query_chars \(50\)"):
        router.route("q" * 51)
    with pytest.raises(RequestTooLargeError, match="context is 101 characters"):
        router.route("q", context="c" * 101)
    with pytest.raises(RequestTooLargeError, match="context is 120 characters in all"):
        router.route("q", context=["c" * 60, "c" * 60])
    with pytest.raises(InvalidRequestError, match="pages must be a whole number from 0 to 10, got 11"):
        router.route("q", pages=11)
    with pytest.raises(RequestTooLargeError, match=r"at most 3 requests \(limits.max_batch\), got 4"):
        router.route_batch(["a", "b", "c", "d"])
    with pytest.raises(RequestTooLargeError, match="context is 101 characters"):
        router.generate("q", context="c" * 101, max_new_tokens=1)
    assert router.route("q" * 50, context="c" * 100, pages=10).pages == 10
    assert not router.log or len(router.read_log(None)) == 1  # refused requests leave no record
    env = load_config(environ={"MAMBA_ROUTER__LIMITS__MAX_BODY_BYTES": "2048"}).config
    assert env.limits.max_body_bytes == 2048
    with pytest.raises(MambaRouterError, match="max_body_bytes"):
        load_config(environ={"MAMBA_ROUTER__LIMITS__MAX_BODY_BYTES": "12"})


def test_a_forced_mamba_backend_that_cannot_run_is_an_error_like_in_info(tmp_path, llama_dir) -> None:
    """Issue 14, minor: MAMBA_ROUTER_BACKEND=real-mamba made `info` fail but the router answered on the Transformer."""
    from mamba_router.errors import BackendUnavailableError

    config = load_config(
        environ={"MAMBA_ROUTER_BACKEND": "real-mamba"}, overrides={"transformer.model": str(llama_dir)}
    )
    with pytest.raises(
        BackendUnavailableError, match=r"real-mamba.*named by mamba.backend \(from env MAMBA_ROUTER_BACK"
    ):
        Router(config, backends=[UnusableBackend(), TransformerBackend()])


class UnusableBackend(CpuMambaBackend):
    """A Mamba backend that cannot run here (like real-mamba without CUDA)."""

    name = "real-mamba"

    def __init__(self) -> None:
        super().__init__(Path("."))

    def probe(self, platform: Any) -> Availability:
        return Availability.unusable("no CUDA here (test)", "pip install real-mamba")
