"""Read once, ask many (mamba2 backend, CPU): answers equal reading document + question from scratch, the state is
left intact, saves and loads with the model's identity checked, and the LRU cache keeps a byte budget."""

from __future__ import annotations

import pytest
import torch

from mamba_router.errors import InvalidRequestError
from mamba_router.generation.document_state import (
    CorruptStateError,
    DocumentState,
    DocumentStateCache,
    StateMismatchError,
)
from mamba_router.samples.synthetic import synthetic_judgment

QUESTIONS = ["What did the court order?", "Was the appeal allowed, and with what costs?", "Who was the appellant?"]


@pytest.fixture(scope="module")
def model(mamba_dir):
    from mamba_router_mps.backend import Mamba2Backend

    return Mamba2Backend().load(str(mamba_dir), device="cpu", dtype="float32", segment=128)


@pytest.fixture(scope="module")
def judgment() -> str:
    return synthetic_judgment(3, seed=11)


def test_asking_from_the_state_equals_reading_everything_from_scratch(model, judgment) -> None:
    state = model.read(judgment)
    before = {k: t.clone() for k, t in state.tensors.items()}
    for question in QUESTIONS:
        cached = model.ask(state, question, max_new_tokens=12)
        scratch = model.generate_with_state_space(question, context=judgment, max_new_tokens=12)
        assert cached.token_ids == scratch.token_ids and cached.text == scratch.text
    for name, old in before.items():
        assert torch.equal(old, state.tensors[name])  # every question started from an untouched copy
    assert state.document_tokens == model.count_tokens(judgment.rstrip())
    assert state.nbytes > 0 and "tensors" in repr(state)


def test_the_tokens_of_the_two_halves_are_the_tokens_of_the_whole_prompt(model, judgment) -> None:
    from mamba_router.generation.requests import compose_context_prompt

    for question in QUESTIONS:
        whole = model.encode(compose_context_prompt(question, judgment)).tolist()
        halves = (
            model.encode(judgment.rstrip()).tolist()
            + model.tokenizer("\n\n" + question, add_special_tokens=False)["input_ids"]
        )
        assert whole == halves


def test_states_save_and_load_and_another_model_is_refused(model, judgment, tmp_path, llama_dir) -> None:
    state = model.read(judgment)
    path = state.save(tmp_path / "judgment.state.safetensors")
    loaded = DocumentState.load(path, model_identity=model.state_identity)
    assert loaded.document_sha256 == state.document_sha256 and loaded.document_tokens == state.document_tokens
    answer = model.ask(loaded, QUESTIONS[0], max_new_tokens=8)
    assert answer.token_ids == model.ask(state, QUESTIONS[0], max_new_tokens=8).token_ids
    with pytest.raises(StateMismatchError, match="not by this model"):
        DocumentState.load(path, model_identity="someone-else")
    foreign = DocumentState("other-model", state.document_sha256, 3, state.tensors)
    with pytest.raises(StateMismatchError):
        model.ask(foreign, "What?")
    with pytest.raises(InvalidRequestError):
        model.read("   ")
    with pytest.raises(InvalidRequestError):
        model.ask(state, "")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("document_tokens", "lots", "document_tokens must be a positive integer"),
        ("document_tokens", "0", "document_tokens must be a positive integer"),
        ("document_sha256", None, "document_sha256 must be 64 hex digits"),
        ("prompt_format", "markdown", "prompt_format must be"),
    ],
)
def test_a_state_file_with_bad_metadata_is_a_typed_error(model, judgment, tmp_path, field, value, message) -> None:
    from safetensors.torch import save_file

    state = model.read(judgment)
    metadata = {
        "format_version": "2",
        "model_identity": model.state_identity,
        "document_sha256": state.document_sha256,
        "document_tokens": str(state.document_tokens),
    }
    if value is None:
        del metadata[field]
    else:
        metadata[field] = value
    path = tmp_path / "bad.safetensors"
    save_file({k: t.contiguous() for k, t in state.tensors.items()}, str(path), metadata=metadata)
    with pytest.raises(CorruptStateError, match=message):
        DocumentState.load(path, model_identity=model.state_identity)


def test_a_state_whose_tensors_do_not_fit_the_model_is_refused_before_answering(model, judgment) -> None:
    state = model.read(judgment)
    empty = DocumentState(state.model_identity, state.document_sha256, state.document_tokens, {})
    with pytest.raises(StateMismatchError, match="the model needs"):
        model.ask(empty, "What did the court order?")  # no tensors: not "as if no document had been read"
    name, tensor = next(iter(state.tensors.items()))
    wrong = {**state.tensors, name: torch.zeros(*tensor.shape[:-1], tensor.shape[-1] + 1, dtype=tensor.dtype)}
    misshapen = DocumentState(state.model_identity, state.document_sha256, state.document_tokens, wrong)
    with pytest.raises(StateMismatchError, match=name):
        model.ask(misshapen, "What did the court order?")
    halved = {k: t.half() for k, t in state.tensors.items()}
    with pytest.raises(StateMismatchError, match="float16"):
        model.ask(DocumentState(state.model_identity, state.document_sha256, state.document_tokens, halved), "Who?")


def test_the_cache_reuses_states_and_keeps_its_byte_budget(model) -> None:
    documents = [synthetic_judgment(1, seed=s) for s in range(4)]
    one = model.read(documents[0]).nbytes
    cache = DocumentStateCache(max_bytes=2 * one)
    reads = []

    def reader(doc: str):
        return lambda: reads.append(doc) or model.read(doc)

    state, hit = cache.get_or_read(model.state_identity, documents[0], reader(documents[0]))
    assert not hit
    again, hit = cache.get_or_read(model.state_identity, documents[0], reader(documents[0]))
    assert hit and again is state and len(reads) == 1
    for doc in documents[1:]:
        cache.get_or_read(model.state_identity, doc, reader(doc))
    assert len(cache) == 2 and cache.nbytes <= cache.max_bytes
    _, hit = cache.get_or_read(model.state_identity, documents[0], reader(documents[0]))
    assert not hit  # the least recently used document was evicted
    assert (cache.hits, cache.misses) == (1, 5)


def test_the_transformer_reuses_its_kv_cache_the_same_way(llama_dir, tmp_path) -> None:
    from mamba_router.transformer import TransformerBackend

    llama = TransformerBackend().load(str(llama_dir), device="cpu", dtype="float32")
    document = "The appeal is allowed. The respondent shall pay the costs of the appeal within four weeks."
    state = llama.read(document)
    assert set(state.tensors) == {f"{kind}.{i}" for kind in ("key", "value") for i in range(2)}
    assert state.tensors["key.0"].shape[-2] == state.document_tokens  # the cache grows with the document
    before = {k: t.clone() for k, t in state.tensors.items()}
    for question in QUESTIONS[:2]:
        cached = llama.ask(state, question, max_new_tokens=10)
        scratch = llama.generate_with_state_space(question, context=document, max_new_tokens=10)
        assert cached.token_ids == scratch.token_ids
    assert all(torch.equal(before[k], state.tensors[k]) for k in before)
    loaded = DocumentState.load(state.save(tmp_path / "kv.safetensors"), model_identity=llama.state_identity)
    assert (
        llama.ask(loaded, QUESTIONS[0], max_new_tokens=5).token_ids
        == llama.ask(state, QUESTIONS[0], max_new_tokens=5).token_ids
    )
    with pytest.raises(StateMismatchError):
        DocumentState.load(tmp_path / "kv.safetensors", model_identity="mamba-something")


def test_a_state_belongs_to_the_weights_it_was_read_with(tmp_path, offline_tokenizer) -> None:
    """Re-saving new weights at the same path gives another identity: old states are refused (merged adapters:
    test_lora.py)."""
    from transformers import Mamba2Config, Mamba2ForCausalLM

    from mamba_router_mps.backend import Mamba2Backend

    config = Mamba2Config(
        vocab_size=len(offline_tokenizer), hidden_size=32, num_hidden_layers=1, num_heads=8, head_dim=8
    )
    directory = tmp_path / "model"
    torch.manual_seed(1)
    Mamba2ForCausalLM(config).save_pretrained(directory)
    offline_tokenizer.save_pretrained(directory)
    old = Mamba2Backend().load(str(directory), device="cpu", dtype="float32")
    state = old.read("The appeal is allowed with costs.")
    same = Mamba2Backend().load(str(directory), device="cpu", dtype="float32")
    assert same.state_identity == old.state_identity  # the same weights: the state is still good
    torch.manual_seed(2)
    Mamba2ForCausalLM(config).save_pretrained(directory)  # new weights at the same path
    new = Mamba2Backend().load(str(directory), device="cpu", dtype="float32")
    assert new.state_identity != old.state_identity
    with pytest.raises(StateMismatchError, match="another model"):
        new.ask(state, "Who pays?")


def test_the_weights_fingerprint_samples_inside_a_tensor_of_more_than_2_to_the_24_values() -> None:
    """float32 steps would round the last sample index past the end of a 50,280 x 768 embedding (a device assert
    on the GPU); integer steps stay inside and still see the last value."""
    from mamba_router.generation.document_state import weights_fingerprint

    embedding = torch.nn.Embedding(50_280, 768)
    before = weights_fingerprint(embedding)
    with torch.no_grad():
        embedding.weight[-1, -1] += 1.0
    assert weights_fingerprint(embedding) != before
