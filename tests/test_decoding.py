"""Token choice, incremental text with stop strings, and request validation."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, currently_in_test_context, given, settings
from hypothesis import strategies as st

import mamba_router as mr
from mamba_router.generation.decoding import choose_next_tokens
from mamba_router.generation.requests import MAX_NEW_TOKENS_LIMIT, check_request, compose_context_prompt
from mamba_router.generation.text_assembly import ByteLevelDetokenizer, TextAssembler, fast_detokenizer

TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\ufffd"), min_size=0, max_size=60
)


def assemble(
    tokenizer, text: str, stop: tuple[str, ...] = (), *, byte_level: bool = False
) -> tuple[list[str], TextAssembler]:
    """``text``'s tokens fed one by one; ``byte_level``: through the byte table of :class:`ByteLevelDetokenizer`
    instead of decoding twice per token."""
    if currently_in_test_context():
        assume(tokenizer.eos_token not in text)  # special tokens are not shown as text, by design
    else:
        assert tokenizer.eos_token not in text
    detokenizer = fast_detokenizer(tokenizer) if byte_level else tokenizer
    assert isinstance(detokenizer, ByteLevelDetokenizer) == byte_level
    assembler = TextAssembler(detokenizer, stop)
    pieces = []
    for token_id in tokenizer(text, add_special_tokens=False)["input_ids"]:
        pieces.append(assembler.add(token_id))
        if assembler.stopped:
            break
    pieces.append(assembler.finish())
    return pieces, assembler


BYTE_LEVEL = pytest.mark.parametrize("byte_level", [False, True], ids=["decoded-twice", "byte-table"])


@BYTE_LEVEL
@settings(max_examples=150, deadline=None)
@given(text=TEXT)
def test_feeding_tokens_one_by_one_rebuilds_the_text_exactly(offline_tokenizer, text: str, byte_level: bool) -> None:
    pieces, assembler = assemble(offline_tokenizer, text, byte_level=byte_level)
    assert "".join(pieces) == text == assembler.text
    assert not any("\ufffd" in p for p in pieces), "a multi-byte character was split across pieces"


@settings(max_examples=150, deadline=None)
@given(ids=st.lists(st.integers(0, 399), max_size=40), skip=st.booleans())
def test_fast_detokenizer_gives_the_tokenizers_own_text(offline_tokenizer, ids: list[int], skip: bool) -> None:
    fast = fast_detokenizer(offline_tokenizer)
    assert fast is not offline_tokenizer  # the backend path is taken for a stock fast tokenizer
    assert fast.decode(ids, skip_special_tokens=skip) == offline_tokenizer.decode(ids, skip_special_tokens=skip)


@pytest.fixture(scope="module")
def tokenizer_with_added_tokens(offline_tokenizer):
    """The offline tokenizer with added tokens: special and not, ASCII and not (byte-alphabet characters too)."""
    import copy

    from tokenizers import AddedToken

    tokenizer = copy.deepcopy(offline_tokenizer)
    tokenizer.add_tokens([AddedToken("<judge>", special=False), AddedToken("\u00e9t\u00e9", special=False)])
    tokenizer.add_tokens([AddedToken("\u65e5\u672c", special=False), AddedToken("<|turn|>", special=True)])
    return tokenizer


@settings(max_examples=300, deadline=None)
@given(ids=st.lists(st.integers(0, 420), max_size=30))
def test_the_byte_table_gives_the_text_of_decoding_the_whole_sequence(tokenizer_with_added_tokens, ids) -> None:
    """Any ids (single bytes that are not whole characters, added and special tokens, ids past the vocabulary) fed
    one by one give, joined, the text of decoding them all at once; and the pieces the two ways released agree."""
    fast = fast_detokenizer(tokenizer_with_added_tokens)
    assert isinstance(fast, ByteLevelDetokenizer)
    joined = []
    for detokenizer in (fast, tokenizer_with_added_tokens):
        assembler = TextAssembler(detokenizer)
        joined.append("".join([assembler.add(i) for i in ids] + [assembler.finish()]))
    assert joined[0] == joined[1] == tokenizer_with_added_tokens.decode(ids, skip_special_tokens=True)


def test_a_tokenizer_s_byte_table_is_built_once_and_again_when_tokens_are_added(offline_tokenizer) -> None:
    import copy

    tokenizer = copy.deepcopy(offline_tokenizer)
    first = fast_detokenizer(tokenizer)
    assert fast_detokenizer(tokenizer) is first  # every generate asks: the table is not built again
    tokenizer.add_tokens(["<clause>"])
    grown = fast_detokenizer(tokenizer)
    assert grown is not first and grown.decode([len(tokenizer) - 1]) == "<clause>"
    assert TextAssembler(grown).add(len(tokenizer) - 1) == "<clause>"


def test_the_byte_table_holds_back_an_unfinished_character(offline_tokenizer) -> None:
    fast = fast_detokenizer(offline_tokenizer)
    euro = [offline_tokenizer.convert_tokens_to_ids(c) for c in "\u00e2\u0124\u00ac"]  # the bytes of U+20AC
    assembler = TextAssembler(fast)
    assert [assembler.add(i) for i in euro] == ["", "", "\u20ac"]


def test_fast_detokenizer_keeps_the_tokenizer_when_it_cleans_up_spaces(offline_tokenizer) -> None:
    import copy

    cleaning = copy.deepcopy(offline_tokenizer)
    cleaning.clean_up_tokenization_spaces = True
    assert fast_detokenizer(cleaning) is cleaning


@BYTE_LEVEL
@settings(max_examples=150, deadline=None)
@given(text=TEXT, stop=st.text(min_size=1, max_size=6))
def test_text_ends_just_before_the_first_stop_string_and_never_shows_it(
    offline_tokenizer, text: str, stop: str, byte_level: bool
) -> None:
    pieces, assembler = assemble(offline_tokenizer, text, (stop,), byte_level=byte_level)
    joined = "".join(pieces)
    index = text.find(stop)
    if index >= 0:
        assert joined == text[:index]
        assert assembler.stop_sequence == stop
    else:
        assert joined == text
        assert not assembler.stopped
    assert stop not in joined


def test_earliest_of_several_stop_strings_wins(offline_tokenizer) -> None:
    pieces, assembler = assemble(offline_tokenizer, "The appeal is allowed. ORDER: pay", ("ORDER", "allowed"))
    assert "".join(pieces) == "The appeal is "
    assert assembler.stop_sequence == "allowed"


@settings(max_examples=60, deadline=None)
@given(
    logits=st.lists(st.floats(-20, 20), min_size=2, max_size=40),
    k=st.integers(1, 5),
    seed=st.integers(0, 2**31),
)
def test_top_k_samples_only_among_the_k_best(logits: list[float], k: int, seed: int) -> None:
    scores = torch.tensor([logits])
    request = check_request("x", temperature=1.0, top_k=k, seed=seed)
    token = int(choose_next_tokens(scores, request, seed))
    kth_best = torch.topk(scores, min(k, len(logits))).values[0, -1]
    assert scores[0, token] >= kth_best


@settings(max_examples=60, deadline=None)
@given(logits=st.lists(st.floats(-10, 10), min_size=2, max_size=40), p=st.floats(0.01, 1.0), seed=st.integers(0, 2**31))
def test_top_p_samples_only_from_the_nucleus(logits: list[float], p: float, seed: int) -> None:
    scores = torch.tensor([logits])
    request = check_request("x", temperature=1.0, top_p=p, seed=seed)
    token = int(choose_next_tokens(scores, request, seed))
    probs = scores.softmax(-1)[0]
    mass_above = float(probs[probs > probs[token]].sum())
    assert mass_above < p + 1e-6, "a token is only eligible while the mass ranked above it is below top_p"


def test_greedy_is_argmax() -> None:
    scores = torch.tensor([[0.1, 3.0, -1.0], [5.0, 0.0, 4.9]])
    assert choose_next_tokens(scores, check_request("x"), None).tolist() == [1, 0]


@pytest.mark.parametrize("prompt", ["", "   \n", None, 123, b"bytes", ["a"]])
def test_bad_prompts_are_typed_errors(prompt: object) -> None:
    with pytest.raises(mr.InvalidRequestError, match="prompt"):
        check_request(prompt)


@given(st.one_of(st.integers(max_value=0), st.integers(min_value=MAX_NEW_TOKENS_LIMIT + 1)))
def test_max_new_tokens_out_of_range(value: int) -> None:
    with pytest.raises(mr.InvalidRequestError, match="max_new_tokens"):
        check_request("hello", max_new_tokens=value)


@pytest.mark.parametrize("value", [1.5, True, "10", None])
def test_max_new_tokens_wrong_type(value: object) -> None:
    with pytest.raises(mr.InvalidRequestError, match="max_new_tokens"):
        check_request("hello", max_new_tokens=value)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": math.nan}, "temperature"),
        ({"temperature": math.inf}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"stop": ""}, "stop"),
        ({"stop": ["ok", 3]}, "stop"),
        ({"stop": 7}, "stop"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**64}, "seed"),
    ],
)
def test_bad_sampling_settings_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(mr.InvalidRequestError, match=field):
        check_request("hello", **kwargs)


def test_context_comes_first_and_question_after() -> None:
    assert compose_context_prompt("Who won?", "The appeal is allowed.") == "The appeal is allowed.\n\nWho won?"
    assert compose_context_prompt("Who won?", None) == "Who won?"
    with pytest.raises(mr.InvalidRequestError, match="context"):
        compose_context_prompt("Who won?", 42)  # type: ignore[arg-type]


class TableModel:
    """A stand-in model whose next-token logits depend only on the last token: enough to test the loop."""

    def __init__(self, vocab: int, seed: int) -> None:
        self.table = torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(seed)) * 3
        self.steps = 0

    def prefill(self, prompts):
        return torch.stack([self.table[p[-1]] for p in prompts])

    def step(self, tokens):
        self.steps += 1
        return self.table[tokens]


def _run(offline_tokenizer, prompts, request, sync_every, seed=0):
    from mamba_router.generation.decoding import ModelIdentity, run_batch_generation

    vocab = len(offline_tokenizer)
    identity = ModelIdentity("fake", "cpu", "table")
    eos = [offline_tokenizer.eos_token_id]
    return run_batch_generation(
        TableModel(vocab, seed), prompts, request, offline_tokenizer, eos, identity, sync_every=sync_every
    )


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 1000),
    sync_every=st.integers(2, 9),
    max_new=st.integers(1, 40),
    temperature=st.sampled_from([0.0, 0.7, 1.5]),
    stop=st.sampled_from([None, "e", "th", "."]),
)
def test_reading_tokens_back_in_blocks_changes_nothing(
    offline_tokenizer, seed, sync_every, max_new, temperature, stop
) -> None:
    prompts = [torch.tensor([5, 9, seed % 300 + 1])]
    request = check_request("x", max_new_tokens=max_new, temperature=temperature, stop=stop, seed=seed)
    one = _run(offline_tokenizer, prompts, request, 1, seed)
    blocks = _run(offline_tokenizer, prompts, request, sync_every, seed)
    strip = lambda results: [r.model_dump(exclude={"timings"}) for r in results]  # noqa: E731
    assert strip(one) == strip(blocks)
    assert len(one[0].token_ids) <= max_new


def test_a_batch_gives_each_sequence_what_it_gets_alone(offline_tokenizer) -> None:
    prompts = [torch.tensor([3, 4]), torch.tensor([100]), torch.tensor([7, 8, 9, 250])]
    request = check_request("x", max_new_tokens=30, stop=["."])
    together = _run(offline_tokenizer, prompts, request, 4)
    alone = [_run(offline_tokenizer, [p], request, 1)[0] for p in prompts]
    assert [r.token_ids for r in together] == [r.token_ids for r in alone]
    assert [r.text for r in together] == [r.text for r in alone]
