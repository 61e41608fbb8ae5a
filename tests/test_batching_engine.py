"""The batching engine: requests answered together in one continuous batch equal the same requests answered alone,
on a Mamba-2, a Mamba-1, a hybrid (attention + Mamba-2 + MoE) and a Transformer; cancel, time limits, a full queue, shutdown and
asyncio callers behave as documented. Tiny offline models, CPU, fp32."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
import torch
from hf_families import hf_model
from test_hybrid_families import MODELS

from mamba_router.errors import (
    ConfigurationError,
    EngineClosedError,
    RequestCancelledError,
    RequestTimeoutError,
    ServerBusyError,
)
from mamba_router.generation.engine import PASS_PHASES, BatchingEngine

DOCUMENT = "The court ordered the respondent to pay the costs of the appeal within thirty days. " * 5
QUESTIONS = [f"Question {i}: what did the court order{' about costs' * (i % 4)}?" for i in range(16)]


def _requests() -> list[dict]:
    """16 different requests: lengths, budgets, a few sampled with seeds, a few with stop strings."""
    out = []
    for i, question in enumerate(QUESTIONS):
        options: dict = {"max_new_tokens": 6 + (i * 5) % 17, "prompt_format": "plain"}
        if i % 5 == 3:
            options.update(temperature=0.9, top_k=20, seed=100 + i)
        if i % 7 == 2:
            options["stop"] = ["e", "a"]
        out.append({"prompt": ("Background. " * (i % 6)) + question, **options})
    return out


@pytest.fixture(scope="module")
def hybrid_dir(tmp_path_factory, offline_tokenizer) -> Path:
    model_type, config = MODELS["granite-moe-rope"]
    hf = hf_model(model_type, len(offline_tokenizer), config, seed=5)
    with torch.no_grad():
        for p in hf.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.15)
    directory = tmp_path_factory.mktemp("granite-hybrid")
    hf.save_pretrained(directory)
    offline_tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def mamba1_dir(tmp_path_factory, offline_tokenizer) -> Path:
    """A tiny Mamba-1 in mamba-ssm's format (the serving benchmark's Mamba-1 rows run this mixer)."""
    from mamba_router.models.mamba import random_mamba, save_mamba_ssm_format
    from mamba_router.models.mamba_config import SSMConfig
    from mamba_router.models.torch_ops import TorchOps

    vocab = len(offline_tokenizer)
    lm = random_mamba(SSMConfig(arch="mamba1", d_model=64, n_layer=2, vocab_size=vocab), TorchOps(), seed=4)
    with torch.no_grad():
        for p in lm.parameters():
            if p.dim() >= 2 and p.shape[0] != lm.cfg.d_inner:  # not A_log: larger weights, clear greedy choices
                p.normal_(0.0, 0.15)
    directory = save_mamba_ssm_format(lm, tmp_path_factory.mktemp("mamba1"), vocab)
    offline_tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module", params=["mamba2", "mamba1", "hybrid", "transformer"])
def model(request, mamba_dir, mamba1_dir, llama_dir, hybrid_dir):
    from mamba_router.transformer.backend import TransformerBackend
    from mamba_router_mps.backend import Mamba2Backend

    if request.param == "transformer":
        return TransformerBackend().load(str(llama_dir), device="cpu", dtype="float32")
    directory = {"mamba2": mamba_dir, "mamba1": mamba1_dir, "hybrid": hybrid_dir}[request.param]
    return Mamba2Backend().load(str(directory), device="cpu", dtype="float32", segment=8)


@pytest.mark.parametrize("stepped", [0, 64], ids=["prompts-read", "prompts-stepped-in"])
@pytest.mark.parametrize("run_ahead", [False, True], ids=["step-then-read", "run-ahead"])
def test_sixteen_requests_in_one_batch_equal_each_request_alone(model, run_ahead: bool, stepped: int) -> None:
    requests = _requests()
    alone = [model.generate(**r) for r in requests]
    # rows join and leave while others decode; with run-ahead each step is queued before the last one is read; with
    # prompts stepped in, a row joins unread and its prompt is fed through the batch's steps (Mamba and hybrid stacks)
    engine = BatchingEngine(model, max_batch=6, prefill_budget=16, run_ahead=run_ahead, stepped_prompt_tokens=stepped)
    try:
        assert engine.warm_up(timeout=60) >= 0
        jobs = [engine.submit(model.prepare_generate(**r)) for r in requests]
        together = [job.result(timeout=120) for job in jobs]
    finally:
        engine.close()
    for one, batched in zip(alone, together):
        assert batched.token_ids == one.token_ids
        assert batched.text == one.text
        assert batched.finish_reason == one.finish_reason
    assert engine.stats.largest_batch == 6
    assert engine.stats.completed == 16 and engine.running == 0
    queued = [r.timings.queue_ms for r in together]  # submission to being taken from the queue, within prefill_ms
    assert all(q is not None and 0 <= q <= r.timings.prefill_ms for q, r in zip(queued, together))
    assert max(q for q in queued if q is not None) > 0  # 16 requests for 6 rows: some waited
    short = sum(int(model.prepare_generate(**r).ids.numel()) <= stepped for r in requests)
    steps_prompts = stepped > 0 and hasattr(model, "mixers")  # Mamba and hybrid stacks, not the Transformer
    assert engine.stats.prompts_stepped_in == (short if steps_prompts else 0)
    assert stepped == 0 or 0 < short < 16  # both kinds of prompt in one batch


def test_prompts_waiting_together_are_read_in_one_pass_and_equal_each_alone(model) -> None:
    requests = _requests()
    alone = [model.generate(**r) for r in requests]
    # every prompt is read (none stepped in); the budget holds the 16 prompts padded to the longest
    engine = BatchingEngine(model, max_batch=16, prefill_budget=4096, stepped_prompt_tokens=0)
    try:
        together = [
            job.result(timeout=120) for job in engine.submit_many([model.prepare_generate(**r) for r in requests])
        ]
    finally:
        engine.close()
    assert [r.token_ids for r in together] == [r.token_ids for r in alone]
    assert [r.text for r in together] == [r.text for r in alone]
    if getattr(model, "reads_rows_together", False):  # Mamba stacks: one pass for all 16
        assert (engine.stats.reads_together, engine.stats.prompts_read_together) == (1, 16)
    else:  # attention layers would keep the padding: one read each
        assert engine.stats.prompts_read_together == 0
    assert getattr(model, "reads_rows_together", False) == (
        hasattr(model, "mixers") and "attention" not in model.mixers
    )


def test_documents_read_together_hold_the_states_of_documents_read_alone(model) -> None:
    documents = [DOCUMENT, "A short judgment.", DOCUMENT[: len(DOCUMENT) // 3] + " The appeal was dismissed."]
    alone = [model.read(d, prompt_format="plain") for d in documents]
    engine = BatchingEngine(model, prefill_budget=4096)
    try:
        jobs = engine.submit_many([model.prepare_read(d, prompt_format="plain") for d in documents])
        read = [job.result(timeout=60) for job in jobs]
    finally:
        engine.close()
    expected_together = 3 if getattr(model, "reads_rows_together", False) else 0
    assert engine.stats.prompts_read_together == expected_together
    for mine, theirs in zip(read, alone):
        assert mine.document_tokens == theirs.document_tokens
        assert mine.tensors.keys() == theirs.tensors.keys()
        for name, tensor in mine.tensors.items():
            torch.testing.assert_close(tensor, theirs.tensors[name], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("run_ahead", [False, True], ids=["step-then-read", "run-ahead"])
def test_threads_share_the_engine_and_streams_join_to_the_text(model, run_ahead: bool) -> None:
    requests = _requests()[:8]
    engine = BatchingEngine(model, max_batch=8, run_ahead=run_ahead)
    results: dict[int, tuple[str, object]] = {}

    def ask(index: int) -> None:
        job = engine.submit(model.prepare_generate(**requests[index]))
        pieces = "".join(job)
        results[index] = (pieces, job.result())

    try:
        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(requests))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        engine.close()
    for index, request in enumerate(requests):
        pieces, result = results[index]
        assert pieces == result.text == model.generate(**request).text


@pytest.mark.parametrize("run_ahead", [False, True], ids=["step-then-read", "run-ahead"])
def test_the_engine_accounts_its_passes_by_phase(model, run_ahead: bool) -> None:
    """Where the engine's thread spends its time: every phase counted, none more than the time the engine ran."""
    engine = BatchingEngine(model, max_batch=8, run_ahead=run_ahead)
    started = time.perf_counter()
    try:
        jobs = [engine.submit(model.prepare_generate(**request)) for request in _requests()[:8]]
        tokens = sum(len(job.result(timeout=60).token_ids) for job in jobs)
    finally:
        engine.close()
    elapsed = time.perf_counter() - started
    stats = engine.stats
    assert set(stats.pass_seconds) == set(PASS_PHASES)
    assert stats.passes >= stats.steps >= max(1, tokens // 8)
    assert all(seconds >= 0 for seconds in stats.pass_seconds.values())
    assert stats.pass_seconds["admit"] > 0 and stats.pass_seconds["launch"] > 0 and stats.pass_seconds["collect"] > 0
    assert sum(stats.pass_seconds.values()) <= elapsed


def test_a_question_from_a_document_read_by_the_engine_equals_asking_the_model(model) -> None:
    state = model.read(DOCUMENT, prompt_format="plain")
    expected = model.ask(state, "What did the court order?", max_new_tokens=12, prompt_format="plain")
    engine = BatchingEngine(model, prefill_budget=32)
    try:
        busy = engine.submit(model.prepare_generate("Something else entirely", max_new_tokens=40))
        read = engine.submit_read(model.prepare_read(DOCUMENT, prompt_format="plain")).result(timeout=60)
        asked = engine.submit(
            model.prepare_ask(read, "What did the court order?", max_new_tokens=12, prompt_format="plain")
        )
        assert asked.result(timeout=60).token_ids == expected.token_ids
        busy.result(timeout=60)
    finally:
        engine.close()
    assert read.document_tokens == state.document_tokens
    assert {k: tuple(v.shape) for k, v in read.tensors.items()} == {k: tuple(v.shape) for k, v in state.tensors.items()}


def test_asyncio_callers_get_results_and_streams(model) -> None:
    requests = _requests()[:6]
    engine = BatchingEngine(model)

    async def main() -> list[tuple[str, str]]:
        async def one(request: dict) -> tuple[str, str]:
            job = engine.submit(model.prepare_generate(**request))
            pieces = [p async for p in job.astream()]
            result = await job.aresult()
            return "".join(pieces), result.text

        return await asyncio.gather(*(one(r) for r in requests))

    try:
        out = asyncio.run(main())
    finally:
        engine.close()
    assert [a for a, _ in out] == [b for _, b in out] == [model.generate(**r).text for r in requests]


@pytest.mark.parametrize("run_ahead", [False, True], ids=["step-then-read", "run-ahead"])
def test_cancel_and_time_limit_free_the_row_and_say_why(mamba_dir, run_ahead: bool) -> None:
    from mamba_router_mps.backend import Mamba2Backend

    model = Mamba2Backend().load(str(mamba_dir), device="cpu", dtype="float32")
    engine = BatchingEngine(model, max_batch=2, run_ahead=run_ahead)
    try:
        long = engine.submit(model.prepare_generate("a long answer", max_new_tokens=100_000))
        timed = engine.submit(model.prepare_generate("another", max_new_tokens=100_000), timeout_s=0.3)
        with pytest.raises(RequestTimeoutError, match="time limit of 0.3 s"):
            timed.result(timeout=30)
        long.cancel()
        with pytest.raises(RequestCancelledError):
            long.result(timeout=30)
        deadline = time.monotonic() + 10
        while engine.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.running == 0
        after = engine.submit(model.prepare_generate("then a short one", max_new_tokens=3)).result(timeout=30)
        assert after.completion_tokens <= 3
    finally:
        engine.close()
    assert engine.stats.cancelled == 1 and engine.stats.timed_out == 1


def test_a_full_queue_is_busy_and_a_closed_engine_takes_nothing(mamba_dir) -> None:
    from mamba_router_mps.backend import Mamba2Backend

    model = Mamba2Backend().load(str(mamba_dir), device="cpu", dtype="float32")
    with pytest.raises(ConfigurationError, match="max_queue"):
        BatchingEngine(model, max_queue=0)
    with pytest.raises(ConfigurationError, match="stepped_prompt_tokens"):
        BatchingEngine(model, stepped_prompt_tokens=-1)
    engine = BatchingEngine(model, max_batch=1, max_queue=2)
    jobs = []
    with pytest.raises(ServerBusyError) as busy:
        for _ in range(50):
            jobs.append(engine.submit(model.prepare_generate("fill the queue", max_new_tokens=50)))
    assert busy.value.retry_after_s >= 1
    assert engine.stats.rejected == 1
    engine.close(drain=True, timeout=60)  # running and waiting requests finish
    assert all(job.result(timeout=1).completion_tokens >= 1 for job in jobs)
    with pytest.raises(EngineClosedError):
        engine.submit(model.prepare_generate("too late"))


def test_closing_without_draining_fails_what_is_left(mamba_dir) -> None:
    from mamba_router_mps.backend import Mamba2Backend

    model = Mamba2Backend().load(str(mamba_dir), device="cpu", dtype="float32")
    engine = BatchingEngine(model, max_batch=1)
    jobs = [engine.submit(model.prepare_generate("x", max_new_tokens=100_000)) for _ in range(3)]
    engine.close(drain=False, timeout=30)
    for job in jobs:
        with pytest.raises(EngineClosedError):
            job.result(timeout=5)
