"""Chat formats: with a ChatML or a Llama-3-style template on offline tokenizers, the ids a model reads equal
``apply_chat_template(..., add_generation_prompt=True)``, ``ask`` from a chat-laid-out document state equals reading
everything from scratch (also where the tokenizer merges the document's last characters with what follows),
generation stops at the end-of-turn token and at generation_config.json's EOS ids, and ``plain`` is unchanged."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mamba_router.errors import InvalidRequestError
from mamba_router.generation.document_state import StateMismatchError
from mamba_router.generation.prompt_format import PromptLayout, end_of_turn_ids
from mamba_router.samples import sample_judgment
from mamba_router.samples.synthetic import synthetic_judgment

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAMA3 = (
    "<|begin_of_text|>{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
# Llama-3's pre-tokenizer: punctuation joins the newlines after it (".\n\n" is one piece), so a cut after the
# document's last "." would split a piece.
LLAMA3_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QUESTIONS = ["What did the court order?", "Who was the appellant?"]


def chat_tokenizer(kind: str):
    """A byte-level BPE trained offline, with the template's special tokens and template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = {
        "chatml": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "llama3": ["<|end_of_text|>", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
    }[kind]
    tokenizer = Tokenizer(models.BPE())
    if kind == "llama3":
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=420,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([sample_judgment(), synthetic_judgment(2, seed=1)], trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=specials[0], pad_token=specials[0])
    fast.chat_template = CHATML if kind == "chatml" else LLAMA3
    return fast


@pytest.fixture(scope="module", params=["chatml", "llama3"])
def chat_model(request, tmp_path_factory):
    """A tiny Mamba-2 (ChatML) or Granite-4.0-H-shaped hybrid (Llama-3 template) with a chat tokenizer."""
    from transformers import GraniteMoeHybridConfig, GraniteMoeHybridForCausalLM, Mamba2Config, Mamba2ForCausalLM

    from mamba_router_mps.backend import Mamba2Backend

    tokenizer = chat_tokenizer(request.param)
    torch.manual_seed(2)
    if request.param == "chatml":
        config = Mamba2Config(
            vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_heads=8, head_dim=8, state_size=16
        )
        hf = Mamba2ForCausalLM(config)
    else:
        config = GraniteMoeHybridConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=2,
            layer_types=["mamba", "attention"],
            num_attention_heads=4,
            shared_intermediate_size=48,
            num_local_experts=0,
            mamba_n_heads=4,
            mamba_d_head=16,
            mamba_d_state=16,
            mamba_chunk_size=16,
        )
        hf = GraniteMoeHybridForCausalLM(config)
    directory: Path = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return Mamba2Backend().load(str(directory), device="cpu", dtype="float32", segment=64)


def messages(text: str, system: str | None = None) -> list[dict[str, str]]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]


def template_ids(tokenizer, text: str, system: str | None = None) -> list[int]:
    ids = tokenizer.apply_chat_template(messages(text, system), add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)


@pytest.mark.parametrize("system", [None, "You answer questions about court judgments."])
def test_chat_ids_equal_apply_chat_template(chat_model, system) -> None:
    layout, tokenizer = chat_model.prompts, chat_model.tokenizer
    for fmt in ("auto", "chat"):
        text = "Summarise the order.\n\nKeep it short."
        assert layout.prompt_ids(text, layout.resolve(fmt), system) == template_ids(tokenizer, text, system)
    plain = layout.prompt_ids("Summarise the order.", layout.resolve("plain"))
    assert plain == tokenizer("Summarise the order.", add_special_tokens=True)["input_ids"]


@pytest.mark.parametrize("ending", ["", ".", " (2024)."])
def test_asking_a_chat_state_equals_reading_everything(chat_model, ending) -> None:
    judgment = synthetic_judgment(1, seed=6).rstrip().rstrip(".") + ending
    state = chat_model.read(judgment)
    assert state.prompt_format == "chat"
    for question in QUESTIONS:
        whole = template_ids(chat_model.tokenizer, f"{judgment.rstrip()}\n\n{question}")
        cut = chat_model.prompts.question_ids(question, state.tail, "chat")
        assert whole[: state.document_tokens] + cut == whole  # the two halves are the template's ids
        cached = chat_model.ask(state, question, max_new_tokens=8)
        scratch = chat_model.generate_with_state_space(question, context=judgment, max_new_tokens=8)
        assert cached.token_ids == scratch.token_ids


def test_the_cut_moves_back_where_the_tokenizer_merges_across_it(chat_model) -> None:
    if chat_model.tokenizer.chat_template != LLAMA3:
        pytest.skip("only Llama-3's pre-tokenizer joins punctuation with the newlines after it")
    state = chat_model.read("The appeal is dismissed.")
    assert state.tail == "."  # ".\n\n" is one piece: the "." is read with each question


def test_the_format_and_system_prompt_must_match_the_state(chat_model) -> None:
    state = chat_model.read("The appeal is dismissed with costs.")
    with pytest.raises(StateMismatchError, match="chat prompt"):
        chat_model.ask(state, "Who pays?", prompt_format="plain")
    with pytest.raises(StateMismatchError, match="system_prompt"):
        chat_model.ask(state, "Who pays?", system_prompt="Be brief.")
    system_state = chat_model.read("The appeal is dismissed with costs.", system_prompt="Be brief.")
    answer = chat_model.ask(system_state, "Who pays?", system_prompt="Be brief.", max_new_tokens=4)
    scratch = chat_model.generate_with_state_space(
        "Who pays?", context="The appeal is dismissed with costs.", system_prompt="Be brief.", max_new_tokens=4
    )
    assert answer.token_ids == scratch.token_ids


def test_plain_stays_plain_and_bad_formats_are_typed_errors(chat_model, mamba_dir) -> None:
    from mamba_router_mps.backend import Mamba2Backend

    plain = chat_model.generate("The court", prompt_format="plain", max_new_tokens=3)
    assert plain.prompt_tokens == len(chat_model.tokenizer("The court")["input_ids"])
    with pytest.raises(InvalidRequestError, match="prompt_format must be one of"):
        chat_model.generate("The court", prompt_format="markdown")
    no_template = Mamba2Backend().load(str(mamba_dir), device="cpu", dtype="float32")
    with pytest.raises(InvalidRequestError, match="no chat template"):
        no_template.generate("The court", prompt_format="chat")
    assert no_template.generate("The court", max_new_tokens=2).prompt_tokens == no_template.count_tokens("The court")


def test_generation_stops_at_the_end_of_turn_and_generation_config_ids(chat_model, tmp_path) -> None:
    tokenizer = chat_model.tokenizer
    end = tokenizer.convert_tokens_to_ids("<|im_end|>" if "<|im_end|>" in tokenizer.get_vocab() else "<|eot_id|>")
    assert end_of_turn_ids(tokenizer) == [end]
    assert end in chat_model._eos and tokenizer.eos_token_id in chat_model._eos


def test_generation_config_eos_ids_are_stop_ids(tmp_path, offline_tokenizer) -> None:
    import json

    from transformers import Mamba2Config, Mamba2ForCausalLM

    from mamba_router_mps.backend import Mamba2Backend

    config = Mamba2Config(
        vocab_size=len(offline_tokenizer), hidden_size=32, num_hidden_layers=1, num_heads=8, head_dim=8
    )
    Mamba2ForCausalLM(config).save_pretrained(tmp_path)
    offline_tokenizer.save_pretrained(tmp_path)
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [7, 11]}))
    model = Mamba2Backend().load(str(tmp_path), device="cpu", dtype="float32")
    assert {7, 11, offline_tokenizer.eos_token_id} <= set(model._eos)


def test_the_router_answers_in_the_chat_format_from_config_and_per_call(chat_model, tmp_path, llama_dir) -> None:
    from mamba_router.routing.router import Router
    from mamba_router.settings.schema import load_config
    from mamba_router.transformer import TransformerBackend
    from mamba_router_mps.backend import Mamba2Backend

    overrides = {
        "mamba.mamba2_model": chat_model.model_id,
        "mamba.backend": "mamba2",
        "generation.dtype": "float32",
        "transformer.model": str(llama_dir),
        "log.path": str(tmp_path / "routing.jsonl"),
        "generation.system_prompt": "Answer from the judgment.",
    }
    router = Router(load_config(environ={}, overrides=overrides), backends=[Mamba2Backend(), TransformerBackend()])
    judgment = synthetic_judgment(2, seed=3)
    question = "What did the court order?"
    routed = router.generate(question, context=judgment, max_new_tokens=6)
    assert routed.model_used == "mamba" and routed.document_state == "read"
    expected = chat_model.generate_with_state_space(
        question, context=judgment, system_prompt="Answer from the judgment.", max_new_tokens=6
    )
    assert routed.generation.token_ids == expected.token_ids
    plain = router.generate(question, context=judgment, max_new_tokens=6, prompt_format="plain", system_prompt="")
    assert plain.document_state == "read"  # another layout: another state, not the chat one
    scratch = chat_model.generate_with_state_space(question, context=judgment, prompt_format="plain", max_new_tokens=6)
    assert plain.generation.token_ids == scratch.token_ids


def test_the_transformer_backend_asks_a_chat_state_exactly(tmp_path) -> None:
    """The same layout on the Transformer backend, whose document state is its KV cache."""
    from transformers import LlamaConfig, LlamaForCausalLM

    import mamba_router as mr

    tokenizer = chat_tokenizer("llama3")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
    )
    torch.manual_seed(4)
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model = mr.get_backend("transformer").load(str(tmp_path), device="cpu", dtype="float32")
    judgment = synthetic_judgment(1, seed=9).rstrip().rstrip(".") + "."
    state = model.read(judgment, system_prompt="Answer briefly.")
    assert state.prompt_format == "chat" and state.tail == "."
    for question in QUESTIONS:
        cached = model.ask(state, question, system_prompt="Answer briefly.", max_new_tokens=6)
        scratch = model.generate_with_state_space(
            question, context=judgment, system_prompt="Answer briefly.", max_new_tokens=6
        )
        assert cached.token_ids == scratch.token_ids
        assert scratch.prompt_tokens == len(template_ids(tokenizer, f"{judgment}\n\n{question}", "Answer briefly."))


@pytest.mark.parametrize("kind", ["chatml", "llama3"])
@settings(max_examples=60, deadline=None)
@given(
    document=st.text(
        alphabet=st.sampled_from(list("The court (2024) allowed appeal.,;:!?'\"\n\t é€-0123456789")), min_size=1
    ),
    question=st.sampled_from([*QUESTIONS, "?", " why", "\nand costs?"]),
    fmt=st.sampled_from(["plain", "chat"]),
)
@example(document="d", question="Who pays?", fmt="chat")  # text the template has before the document ("header")
def test_a_document_cut_gives_the_ids_of_the_whole_prompt(kind: str, document: str, question: str, fmt: str) -> None:
    """Whatever the document's text (punctuation, newlines, spaces, non-ASCII at its end), the ids a state holds
    followed by a question's ids are the whole prompt's ids, and the state holds all but a short tail."""
    from mamba_router.generation.prompt_format import MAX_TAIL_CHARACTERS
    from mamba_router.generation.requests import compose_context_prompt

    layout = _layouts(kind)
    if not document.strip():
        return  # an empty document is refused before it is cut (check_text)
    try:
        cut = layout.cut_document(document, fmt)
    except InvalidRequestError:
        return  # a template that changed the text, or a merge no cut can avoid: refused, never wrong
    whole = layout.prompt_ids(compose_context_prompt(question, document), fmt)
    assert cut.ids + layout.question_ids(question, cut.tail, fmt) == whole
    assert len(cut.tail) <= MAX_TAIL_CHARACTERS


@functools.cache
def _layouts(kind: str) -> PromptLayout:
    return PromptLayout(chat_tokenizer(kind))
