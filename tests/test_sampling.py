"""Batched sampling: each row's draw follows its softmax, its filters and its own stream, whatever rows it shares a
batch with."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mamba_router.generation.sampling import (
    SHORTLIST,
    RowSampling,
    _shortlisted,
    gumbel_noise,
    gumbel_noise_at,
    sample_rows,
    stream_key,
    two_level_draw,
)

DRAWS = 40_000


def _frequencies(
    logits: list[float],
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    shortlist: int = SHORTLIST,
    two_level: bool | None = None,
) -> torch.Tensor:
    """How often each token is drawn in DRAWS rows of the same scores, each row its own stream."""
    scores = torch.tensor([logits], dtype=torch.float32).expand(DRAWS, -1)
    rows = [RowSampling(temperature, top_k, top_p, stream_key(7, draw)) for draw in range(DRAWS)]
    tokens = sample_rows(scores, rows, shortlist=shortlist, two_level=two_level)
    return torch.bincount(tokens, minlength=len(logits)).double() / DRAWS


def _within_sampling_error(observed: torch.Tensor, expected: torch.Tensor) -> None:
    """Every token's frequency within 5 standard errors of its probability (a fixed stream: no flakiness)."""
    for token, (seen, p) in enumerate(zip(observed.tolist(), expected.tolist(), strict=True)):
        bound = 5 * math.sqrt(max(p * (1 - p), 1e-12) / DRAWS) + 1e-12
        assert abs(seen - p) <= bound, f"token {token}: drawn {seen:.4f} of the time, probability {p:.4f}"


LOGITS = [2.0, 1.0, 0.5, 0.0, -1.0, -3.0]


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_draws_follow_the_softmax_at_the_temperature(temperature: float) -> None:
    expected = (torch.tensor(LOGITS, dtype=torch.float64) / temperature).softmax(-1)
    _within_sampling_error(_frequencies(LOGITS, temperature, None, None), expected)


def test_a_one_level_draw_over_several_blocks_follows_the_softmax() -> None:
    """As a GPU draws unfiltered rows: noise for every token (here 300: two blocks for the two-level draw)."""
    logits = LOGITS + [-40.0] * 294
    expected = torch.tensor(logits, dtype=torch.float64).softmax(-1)
    _within_sampling_error(_frequencies(logits, 1.0, None, None, two_level=False), expected)


@pytest.mark.parametrize("block", [1, 2, 4, 6], ids=lambda b: f"blocks-of-{b}")
def test_a_two_level_draw_follows_the_softmax_whatever_the_blocks(block: int) -> None:
    """Blocks of 4 over 6 tokens leave a short last block; blocks of 1 make the first level the whole draw."""
    scores = (torch.tensor([LOGITS], dtype=torch.float64) / 1.5).expand(DRAWS, -1)
    scores = scores - scores.amax(dim=-1, keepdim=True)
    keys = torch.tensor([stream_key(9, draw) for draw in range(DRAWS)])
    tokens = two_level_draw(scores, keys, block=block)
    expected = (torch.tensor(LOGITS, dtype=torch.float64) / 1.5).softmax(-1)
    _within_sampling_error(torch.bincount(tokens, minlength=6).double() / DRAWS, expected)


def test_a_two_level_draw_never_picks_a_token_without_mass() -> None:
    scores = torch.full((64, 600), float("-inf"), dtype=torch.float64)
    scores[:, 517] = 0.0  # in the third of three blocks of 256 (and the last, short one, is empty)
    keys = torch.tensor([stream_key(2, draw) for draw in range(64)])
    assert two_level_draw(scores, keys).tolist() == [517] * 64


def test_top_k_and_top_p_draw_from_the_renormalized_survivors() -> None:
    probs = torch.tensor(LOGITS, dtype=torch.float64).softmax(-1)  # 0.56 0.21 0.13 0.08 0.03 0.004
    top3 = torch.where(torch.arange(6) < 3, probs, 0.0)
    _within_sampling_error(_frequencies(LOGITS, 1.0, 3, None), top3 / top3.sum())
    nucleus = torch.where(torch.arange(6) < 2, probs, 0.0)  # mass above token 2 is 0.77 >= 0.7: it is dropped
    _within_sampling_error(_frequencies(LOGITS, 1.0, None, 0.7), nucleus / nucleus.sum())
    _within_sampling_error(_frequencies(LOGITS, 1.0, 5, 0.7), nucleus / nucleus.sum())


def test_a_shortlist_draws_from_the_same_survivors_in_a_large_vocabulary() -> None:
    peaked = LOGITS + [-30.0] * 194  # 200 tokens, the six of LOGITS far above the rest: a shortlist of 8 is exact
    probs = torch.tensor(peaked, dtype=torch.float64).softmax(-1)
    nucleus = torch.where(torch.arange(200) < 2, probs, 0.0)
    _within_sampling_error(_frequencies(peaked, 1.0, None, 0.7, shortlist=8), nucleus / nucleus.sum())
    top3 = torch.where(torch.arange(200) < 3, probs, 0.0)
    _within_sampling_error(_frequencies(peaked, 1.0, 3, None, shortlist=8), top3 / top3.sum())


def _shortlist(logits: torch.Tensor, top_k: int, top_p: float, width: int = 8):
    """``_shortlisted`` for one row at temperature 1."""
    settings_ = (torch.full((1, 1), top_k), torch.full((1, 1), top_p, dtype=torch.float64))
    return _shortlisted(
        logits, torch.ones((1, 1), dtype=torch.float64), *settings_, torch.ones((1, 1), dtype=bool), width
    )


def test_a_shortlist_is_used_only_where_it_holds_every_kept_token() -> None:
    peaked = torch.tensor([[9.0, 8.0, 7.5] + [0.0] * 97])
    flat = torch.zeros((1, 100))
    assert _shortlist(peaked, 100, 0.9) is not None
    assert _shortlist(flat, 100, 0.9) is None  # the nucleus spans 90 tokens
    assert _shortlist(flat, 100, 0.05) is None  # 8 of 100 equal tokens shortlisted: which 5 are the nucleus?
    assert _shortlist(peaked, 3, 2.0) is not None  # the top 3 of 8
    assert _shortlist(peaked, 8, 2.0) is None  # the 8th best is tied with tokens beyond the shortlist


def test_noise_at_indices_is_the_full_noise_there() -> None:
    keys = torch.tensor([stream_key(5, d) for d in range(3)])
    index = torch.tensor([[7, 0, 99], [3, 3, 50], [98, 1, 2]])
    assert torch.equal(gumbel_noise_at(keys, index, 100), gumbel_noise(keys, 100).gather(-1, index))


TIED_ROW = st.tuples(
    st.lists(st.sampled_from([-40.0, -3.0, -1.0, 0.0, 0.5, 2.0, 6.0, 12.0]), min_size=24, max_size=24),
    st.one_of(st.just(0.0), st.floats(0.05, 3.0)),
    st.one_of(st.none(), st.integers(1, 30)),
    st.one_of(st.none(), st.floats(0.01, 1.0)),
    st.integers(0, 2**63 - 1),
)


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(TIED_ROW, min_size=1, max_size=6), width=st.integers(1, 24))
def test_any_shortlist_draws_what_ranking_the_whole_vocabulary_draws(rows, width) -> None:
    """Tied scores (as bf16 logits have) at every place, so a shortlist often cuts through a tie or a nucleus."""
    logits = torch.tensor([r[0] for r in rows], dtype=torch.float32)
    settings_ = [RowSampling(t, k, p, stream_key(seed, 0)) for _, t, k, p, seed in rows]
    assert sample_rows(logits, settings_, shortlist=width).tolist() == sample_rows(logits, settings_, 0).tolist()


WIDE_ROW = st.tuples(
    st.integers(0, 2**31 - 1),  # the seed of its 600 scores
    st.one_of(st.just(0.0), st.floats(0.05, 3.0)),
    st.one_of(st.none(), st.integers(1, 700)),
    st.one_of(st.none(), st.floats(0.01, 1.0)),
    st.integers(0, 2**63 - 1),
)


def _wide_scores(seed: int) -> torch.Tensor:
    """600 scores over three blocks of 256 tokens and a short fourth, from few values (ties), some far above."""
    generator = torch.Generator().manual_seed(seed)
    values = torch.tensor([-30.0, -2.0, 0.0, 1.0, 4.0, 9.0])
    return values[torch.randint(0, 6, (600,), generator=generator)] * torch.rand(1, generator=generator).item() * 2


@pytest.mark.parametrize("two_level", [True, False], ids=["two-level", "one-level"])
@settings(max_examples=60, deadline=None)
@given(rows=st.lists(WIDE_ROW, min_size=1, max_size=6), shortlist=st.sampled_from([0, 8, 100, 300]))
def test_every_way_of_drawing_gives_a_row_the_same_token_in_any_batch(rows, shortlist: int, two_level: bool) -> None:
    """The shortlist and the draw for unfiltered rows chosen either way, a row's token is the same alone and in a
    batch with rows that filter differently (or not at all), across several blocks of the two-level draw."""
    logits = torch.stack([_wide_scores(r[0]) for r in rows])
    settings_ = [RowSampling(t, k, p, stream_key(seed, 3)) for _, t, k, p, seed in rows]
    together = sample_rows(logits, settings_, shortlist, two_level).tolist()
    alone = [int(sample_rows(logits[i : i + 1], [r], shortlist, two_level)[0]) for i, r in enumerate(settings_)]
    assert together == alone


ROW = st.tuples(
    st.lists(st.floats(-30, 30, allow_nan=False), min_size=12, max_size=12),
    st.one_of(st.just(0.0), st.floats(0.05, 3.0)),  # 0: a greedy row in a batch that samples
    st.one_of(st.none(), st.integers(1, 14)),
    st.one_of(st.none(), st.floats(0.01, 1.0)),
    st.integers(0, 2**63 - 1),
    st.integers(0, 5000),
)


@settings(max_examples=80, deadline=None)
@given(rows=st.lists(ROW, min_size=1, max_size=9))
@example(  # shifted by the maximum, 1.9e-22 and 0.0 both round to -1: the k-th best is still 1.9e-22 alone
    rows=[([0.0] * 12, 0.0, None, None, 0, 0), ([0.0] * 10 + [1.0, 1.8551943104068643e-22], 1.0, 2, None, 0, 0)]
)
def test_a_row_draws_the_same_token_in_any_batch_as_alone(rows) -> None:
    logits = torch.tensor([r[0] for r in rows], dtype=torch.float32)
    settings_ = [RowSampling(t, k, p, stream_key(seed, draw)) for _, t, k, p, seed, draw in rows]
    together = sample_rows(logits, settings_).tolist()
    alone = [int(sample_rows(logits[i : i + 1], [s])[0]) for i, s in enumerate(settings_)]
    assert together == alone
    for (_, temperature, k, _, _, _), token, row in zip(rows, together, logits, strict=True):
        if temperature == 0:  # a greedy row takes its argmax, as logits.argmax gives it
            assert token == int(row.argmax())
        elif k is not None:  # a filter is never overstepped, whatever the batch (on the float32 logits it was given)
            assert row[token] >= row.sort(descending=True).values[min(k, 12) - 1]


def test_streams_differ_by_seed_draw_and_row_and_repeat_exactly() -> None:
    keys = {stream_key(seed, draw, row) for seed in range(4) for draw in range(4) for row in range(4)}
    assert len(keys) == 64
    key = torch.tensor([stream_key(11, 3)])
    assert torch.equal(gumbel_noise(key, 50), gumbel_noise(key, 50))
    assert stream_key(11, 3) == stream_key(11 + 2**63, 3)  # seeds are taken modulo 2**63


def test_the_noise_is_uniform_underneath() -> None:
    keys = torch.tensor([stream_key(3, draw) for draw in range(64)])
    noise = gumbel_noise(keys, 4096)
    assert torch.isfinite(noise).all()
    uniform = torch.exp(-torch.exp(-noise)).flatten().sort().values  # back to u in (0, 1)
    ideal = (torch.arange(uniform.numel(), dtype=torch.float64) + 0.5) / uniform.numel()
    assert float((uniform - ideal).abs().max()) < 0.01  # Kolmogorov-Smirnov distance of 262,144 draws


def test_a_tiny_temperature_is_greedy_and_settings_must_match_rows() -> None:
    logits = torch.tensor([[0.1, 3.0, 2.999, -1.0]])
    for draw in range(20):
        assert int(sample_rows(logits, [RowSampling(1e-300, None, None, stream_key(1, draw))])[0]) == 1
    with pytest.raises(ValueError, match="rows of settings"):
        sample_rows(logits, [])


def test_greedy_answers_leave_torch_global_generator_alone_and_unseeded_ones_follow_it(mamba_dir) -> None:
    from mamba_router_mps.backend import Mamba2Backend

    model = Mamba2Backend().load(str(mamba_dir), device="cpu", dtype="float32")
    torch.manual_seed(123)
    model.generate("The court", max_new_tokens=3)
    after_greedy = torch.rand(1)
    torch.manual_seed(123)
    assert torch.equal(after_greedy, torch.rand(1))  # a greedy answer draws no seed
    answers = []
    for _ in range(2):
        torch.manual_seed(5)  # an unseeded sampled answer takes its seed from torch's global generator
        answers.append(model.generate("The court", max_new_tokens=6, temperature=1.0).token_ids)
    assert answers[0] == answers[1]
