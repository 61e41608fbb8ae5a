"""The batching engine on real-mamba (mamba-ssm kernels, CUDA graphs per ladder rung): 16 requests joining and
leaving one batch equal each answered alone (fp32, greedy), for Mamba-1 and Mamba-2, and a document read by the
engine answers as the model's own ``ask``; a hybrid (attention + Mamba-2) too. Short prompts are fed through the
batch's captured steps (stepped in), longer ones read by the prompt kernels, in the same batch. Run by benchmarks/gpu_check.sh."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mamba_router as mr
from mamba_router.generation.engine import BatchingEngine

pytestmark = pytest.mark.gpu

JUDGMENT = "The appeal is allowed. The respondent shall pay the costs of the appeal within thirty days. " * 30


@pytest.fixture(scope="module", params=["Mamba1", "Mamba2", "Mamba2-attention"])
def model_dir(request, tmp_path_factory, offline_tokenizer) -> Path:
    from mamba_ssm.models.config_mamba import MambaConfig
    from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

    layer = request.param.split("-")[0]
    ssm_cfg = {"layer": layer} if layer == "Mamba1" else {"layer": layer, "headdim": 32}
    extra = {}
    if request.param.endswith("attention"):
        extra = {
            "attn_layer_idx": [1],
            "attn_cfg": {"num_heads": 4, "num_heads_kv": 2, "rotary_emb_dim": 0, "causal": True},
        }
    config = MambaConfig(d_model=256, n_layer=4, vocab_size=len(offline_tokenizer), ssm_cfg=ssm_cfg, **extra)
    torch.manual_seed(5)
    directory = tmp_path_factory.mktemp(f"engine-{request.param}")
    model = MambaLMHeadModel(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.1)  # clear greedy choices
    model.save_pretrained(str(directory))
    offline_tokenizer.save_pretrained(directory)
    return directory


def test_sixteen_requests_joining_one_batch_equal_each_alone(model_dir: Path) -> None:
    model = mr.load_model(model_dir, backend="real-mamba", dtype="float32")
    requests = [
        {"prompt": ("Background. " * (i % 6)) + f"Question {i}: what was ordered?", "max_new_tokens": 6 + (i * 5) % 23}
        for i in range(16)
    ]
    alone = [model.generate(**r, prompt_format="plain") for r in requests]
    # prompts up to 30 tokens are stepped in through the captured steps (6 of the 16), the others read in pieces
    engine = BatchingEngine(model, max_batch=12, prefill_budget=32, stepped_prompt_tokens=30)
    try:
        assert engine.run_ahead  # the default on a GPU
        assert engine.warm_up(timeout=300) >= 0  # graphs of rungs 1..12 captured on empty rows first
        prepared = [model.prepare_generate(**r, prompt_format="plain") for r in requests]  # all queued at once
        jobs = [engine.submit(p) for p in prepared]
        together = [job.result(timeout=300) for job in jobs]
        state = engine.submit_read(model.prepare_read(JUDGMENT, prompt_format="plain")).result(timeout=300)
        asked = engine.submit(model.prepare_ask(state, "Who pays?", max_new_tokens=10, prompt_format="plain"))
        answer = asked.result(timeout=300)
    finally:
        engine.close()
    assert [r.token_ids for r in together] == [r.token_ids for r in alone]
    expected = model.ask(
        model.read(JUDGMENT, prompt_format="plain"), "Who pays?", max_new_tokens=10, prompt_format="plain"
    )
    assert answer.token_ids == expected.token_ids
    assert engine.stats.largest_batch == 12
    short = sum(int(model.prepare_generate(**r, prompt_format="plain").ids.numel()) <= 30 for r in requests)
    assert engine.stats.prompts_stepped_in == short + 1  # + the question about the document (hybrids too)


def test_prompts_and_documents_read_together_equal_each_read_alone(model_dir: Path) -> None:
    """Waiting prompts read in one right-padded pass of mamba-ssm's prompt kernels (Mamba stacks; a hybrid reads
    each alone): the same greedy tokens (fp32) and document states as reading each alone."""
    model = mr.load_model(model_dir, backend="real-mamba", dtype="float32")
    requests = [
        {"prompt": ("Background. " * (i % 7)) + f"Question {i}: what was ordered?", "max_new_tokens": 5 + i % 9}
        for i in range(12)
    ]
    documents = [JUDGMENT, JUDGMENT[: len(JUDGMENT) // 3], "A short judgment: the appeal is dismissed."]
    alone = [model.generate(**r, prompt_format="plain") for r in requests]
    states_alone = [model.read(d, prompt_format="plain") for d in documents]
    engine = BatchingEngine(model, max_batch=16, prefill_budget=8192, stepped_prompt_tokens=0)
    try:
        engine.warm_up(timeout=300)
        prepared = [model.prepare_generate(**r, prompt_format="plain") for r in requests]
        together = [job.result(timeout=300) for job in engine.submit_many(prepared)]
        reads = engine.submit_many([model.prepare_read(d, prompt_format="plain") for d in documents])
        states = [job.result(timeout=300) for job in reads]
    finally:
        engine.close()
    assert [r.token_ids for r in together] == [r.token_ids for r in alone]
    grouped = model.reads_rows_together
    assert grouped == ("attention" not in model.mixers)
    assert engine.stats.prompts_read_together == (len(requests) + len(documents) if grouped else 0)
    for mine, theirs in zip(states, states_alone):
        assert mine.document_tokens == theirs.document_tokens
        for name, tensor in mine.tensors.items():
            torch.testing.assert_close(tensor, theirs.tensors[name], atol=1e-4, rtol=1e-3)
