"""Token sampling for many rows at once, each with its own settings and its own reproducible random stream.

A sampled row's token is the argmax of its filtered, temperature-scaled scores plus Gumbel noise (the Gumbel-max
trick: an exact draw from the softmax of those scores). The noise is not taken from a stateful generator: it is a
pure function of the row's seed, the number of tokens the row has drawn before (its draw) and the vocabulary index
(SplitMix64: the seed and draw pick a stream, the index a value of it). So a batching engine samples every row of a
step in a few whole-batch kernels instead of a dozen launches per row, and a request's tokens do not depend on which
other requests share its batch or when it joined: a seeded request answers the same alone and batched. On the CPU a
row that samples without top-k or top-p draws in two levels instead (:func:`two_level_draw`: a block of the
vocabulary, then a token in it, each by Gumbel-max), which needs noise for a few hundred indices instead of all of
them; which way a row draws depends on its own settings and the device only.

Top-k keeps the k best of the model's scores (ties with the k-th kept); top-p then keeps the best tokens until the
mass ranked above the next one reaches p (ranked by score, ties by vocabulary index; the top token always stays).
Tokens are ranked on the scores as given (in float64); the draw and top-p's masses use the scores shifted so their
maximum is 0 and divided by the temperature (a tiny positive temperature sends every other score to -inf instead of
overflowing: greedy in the limit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mamba_router.generation.requests import GenerationRequest

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15  # SplitMix64's increment
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_BLOCK_STREAM = 0xD1B54A32D192ED03  # a row's block stream: its key with these bits flipped (see two_level_draw)
SEED_LIMIT = 1 << 63  # seeds are taken modulo this
DRAW_BLOCK = 256  # vocabulary indices per block of an unfiltered row's two-level draw


def _signed(value: int) -> int:
    """A 64-bit pattern as the int64 torch stores it."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


def _mix(value: int) -> int:
    """SplitMix64's output function on a Python int (exact, 64 bits)."""
    z = value & _MASK64
    z = ((z ^ (z >> 30)) * _MIX1) & _MASK64
    z = ((z ^ (z >> 27)) * _MIX2) & _MASK64
    return z ^ (z >> 31)


def stream_base(seed: int, row: int = 0) -> int:
    """The part of a row's stream keys that stays the same for all its draws (see :func:`draw_key`); ``row``: the
    prompt's index within one multi-prompt call, 0 for a request of its own."""
    return _mix(_mix(seed % SEED_LIMIT) ^ row)


def draw_key(base: int, draw: int) -> int:
    """The int64 key of the stream a row draws its ``draw``-th token from, given its :func:`stream_base`."""
    return _signed(_mix(base ^ draw))


def stream_key(seed: int, draw: int, row: int = 0) -> int:
    """The int64 key of the random stream a row draws its ``draw``-th token from."""
    return draw_key(stream_base(seed, row), draw)


def random_seed() -> int:
    """A seed for a request that gave none, from torch's global generator (``torch.manual_seed`` makes unseeded
    answers repeatable, as it did for the generator-based sampling)."""
    return int(torch.randint(0, 1 << 62, (1,)).item())


def seed_for(request: GenerationRequest) -> int | None:
    """The seed a sequence of ``request`` draws from: the request's, else one from :func:`random_seed`; None for a
    greedy request, which draws nothing (torch's global generator stays where it was)."""
    if request.seed is not None or request.greedy:
        return request.seed
    return random_seed()


_offsets: dict[tuple[int, str], torch.Tensor] = {}


def _stream_offsets(vocab: int, device: torch.device) -> torch.Tensor:
    """(index + 1) * the SplitMix64 increment, for every vocabulary index (int64, wrapping), kept per device."""
    key = (vocab, str(device))
    offsets = _offsets.get(key)
    if offsets is None:
        offsets = torch.arange(1, vocab + 1, dtype=torch.int64, device=device) * _signed(_GOLDEN)
        _offsets[key] = offsets
    return offsets


def _gumbel(z: torch.Tensor) -> torch.Tensor:
    """Gumbel noise from SplitMix64 states ``z`` (key + (index + 1) * increment, int64), which it overwrites: the
    mixed value made uniform in (0, 1) from its top 53 bits, then -log(-log(u)), in float64. In place, with one
    scratch tensor (1.7x faster than a new tensor per operation for 16 rows of 50,280 on the CPU). torch's ``>>`` is
    arithmetic on int64, so each shift is masked to be logical."""
    shifted = torch.empty_like(z)
    for bits, multiplier in ((30, _MIX1), (27, _MIX2), (31, None)):
        torch.bitwise_right_shift(z, bits, out=shifted).bitwise_and_((1 << (64 - bits)) - 1)
        z.bitwise_xor_(shifted)
        if multiplier is not None:
            z.mul_(_signed(multiplier))
    torch.bitwise_right_shift(z, 11, out=shifted).bitwise_and_((1 << 53) - 1)
    return shifted.double().add_(0.5).mul_(2.0**-53).log_().neg_().log_().neg_()


def gumbel_noise(keys: torch.Tensor, vocab: int) -> torch.Tensor:
    """(rows, vocab) float64 Gumbel noise: value i of the SplitMix64 stream of each row's key."""
    return _gumbel(keys.view(-1, 1) + _stream_offsets(vocab, keys.device).view(1, -1))


def gumbel_noise_at(keys: torch.Tensor, index: torch.Tensor, vocab: int) -> torch.Tensor:
    """The values of :func:`gumbel_noise` at the vocabulary indices ``index`` (rows, n) only."""
    return _gumbel(keys.view(-1, 1) + _stream_offsets(vocab, keys.device)[index])


@dataclass(frozen=True)
class RowSampling:
    """One row's settings: temperature (0: the row takes its argmax, a greedy row in a batch that samples), top-k
    (None: all), top-p (None: 1), and its stream key."""

    temperature: float
    top_k: int | None
    top_p: float | None
    key: int


GREEDY_ROW = RowSampling(0.0, None, None, 0)


SHORTLIST = 1024  # a filtering row's kept tokens are looked for among its best this many first (see sample_rows)
GPU_SHORTLIST_ROWS = 64  # on a GPU, fewer rows rank the whole vocabulary (see sample_rows)


def sample_rows(
    logits: torch.Tensor,
    rows: Sequence[RowSampling],
    shortlist: int | None = None,
    two_level: bool | None = None,
) -> torch.Tensor:
    """One token per row of ``logits`` (rows, vocab), each drawn with its own settings and stream (see the module);
    rows of temperature 0 take their argmax (one argmax and nothing else when every row does). The settings cross to
    the device in one copy through pinned memory, so steps already queued there go on.

    Rows with top-k or top-p are filtered on their ``shortlist`` best tokens (one top-k instead of sorting the whole
    vocabulary) when that is exact: when every such row's kept tokens all score above its shortlist's last one (a
    peaked distribution, as a trained model's mostly is), which one check (a sync) decides. Otherwise, or with
    ``shortlist`` 0, the whole vocabulary is ranked; the noise is drawn at the shortlisted tokens only. Rows that sample
    without a filter draw in two levels with ``two_level`` (:func:`two_level_draw`), else with noise for every token.

    The defaults follow where the time goes (``benchmarks/bench_sampling.py``, 50,280 tokens). On the CPU, arithmetic:
    the shortlist (:data:`SHORTLIST` tokens) and the two-level draw, 16 rows of top-k 50 in 6.7 ms against 50 ranked
    whole, of temperature alone in 6.6 against 13-16. On a GPU, kernel launches: a draw of up to 16 rows takes 0.5-0.8
    ms whichever way, and the shortlist's extra launches and sync lose (H100: 0.9-1.4 against 0.5-0.8 ms); at 64 rows
    (:data:`GPU_SHORTLIST_ROWS`) ranking the whole vocabulary takes 1.6 ms, and a shortlist that holds 1.0; so on a
    GPU the shortlist from 64 rows on, and one level (fewer launches) for unfiltered rows. Whichever way, a row's
    draw depends on its own settings and the device only."""
    count, vocab = logits.shape
    if count != len(rows):
        raise ValueError(f"{count} rows of logits, {len(rows)} rows of settings")
    if all(r.temperature == 0 for r in rows):
        return logits.argmax(dim=-1)
    # a row without top-p keeps every token (2: above any cumulative mass, however it rounds), one without top-k
    # keeps all of them, so filtering some rows of a batch leaves the others' scores exactly as alone
    floats = torch.tensor(
        [[r.temperature, 2.0 if r.top_p is None or r.top_p >= 1.0 else r.top_p] for r in rows],
        dtype=torch.float64,
    )
    integers = torch.tensor([[r.key, min(r.top_k or vocab, vocab)] for r in rows], dtype=torch.int64)
    settings = _to_device(torch.cat([integers, floats.view(torch.int64)], dim=1), logits.device)
    keys, top_k = settings[:, 0], settings[:, 1:2]
    temperature, top_p = settings[:, 2:3].view(torch.float64), settings[:, 3:4].view(torch.float64)
    greedy_rows = not all(r.temperature > 0 for r in rows)
    sampled = temperature > 0
    if greedy_rows:
        temperature = torch.where(sampled, temperature, 1.0)  # their draw is replaced by the argmax below
    on_cpu = logits.device.type == "cpu"
    two_level = on_cpu if two_level is None else two_level
    if shortlist is None:
        shortlist = SHORTLIST if on_cpu or count >= GPU_SHORTLIST_ROWS else 0
    filtering = [r.temperature > 0 and _filters(r, vocab) for r in rows]
    free = [r.temperature > 0 and not f for r, f in zip(rows, filtering, strict=True)]
    scores = None
    drawn = None  # the filtering rows' draws (per-index noise over their kept tokens)
    if any(filtering):
        filtered_rows = sampled & ((top_k < vocab) | (top_p < 1.0))  # ``filtering`` on the device
        width = _shortlist_width(rows, filtering, vocab, shortlist)
        every_row_has_k = all(r.top_k is not None and r.top_k < vocab for r, f in zip(rows, filtering) if f)
        kept = _shortlisted(logits, temperature, top_k, top_p, filtered_rows, width, every_row_has_k) if width else None
        if kept is not None:
            drawn = kept.draw(keys, vocab)
        else:
            raw, scores = _scores(logits, temperature)
            drawn = gumbel_noise(keys, vocab).add_(_filtered(raw, scores, top_k, top_p)).argmax(dim=-1)
            if not two_level:
                free = []  # that draw was theirs too: nothing filters their scores
    if any(free):
        scores = _scores(logits, temperature)[1] if scores is None else scores
        if two_level:
            drawn_free = two_level_draw(scores, keys)
        else:
            drawn_free = gumbel_noise(keys, vocab).add_(scores).argmax(dim=-1)
        drawn = drawn_free if drawn is None else torch.where(filtered_rows[:, 0], drawn, drawn_free)
    assert drawn is not None
    if not greedy_rows:
        return drawn
    return torch.where(sampled[:, 0], drawn, logits.argmax(dim=-1))


def _scores(logits: torch.Tensor, temperature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits in float64, and the scores the draws use: shifted to a maximum of 0, over the temperature."""
    raw = logits.double()
    return raw, (raw - raw.amax(dim=-1, keepdim=True)) / temperature


def two_level_draw(scores: torch.Tensor, keys: torch.Tensor, block: int = DRAW_BLOCK) -> torch.Tensor:
    """Each row's draw from the softmax of its ``scores`` (float64, at most 0) in two levels: a block of ``block``
    vocabulary indices by Gumbel-max over the blocks' log masses (noise from the row's block stream), then an index
    within it by Gumbel-max over its scores (noise at those indices, as :func:`gumbel_noise` gives it). Exact: index
    i is drawn with its block's share of the mass times its share of the block's. It sums the scores' exponentials by
    block where one level needs noise for every index: on the CPU, 16 rows of 50,280 draw in 6.6 ms against 13-16;
    on a GPU, where the launches are the cost, it launches about twice as many kernels (H100: 0.68-0.75 ms at 1 to 64
    rows; one level not yet timed there), so a GPU draws in one level (see :func:`sample_rows`)."""
    rows, vocab = scores.shape
    whole = vocab // block * block
    weights = scores.exp()
    masses = weights[:, :whole].unflatten(-1, (whole // block, block)).sum(dim=-1)
    if whole < vocab:
        masses = torch.cat([masses, weights[:, whole:].sum(dim=-1, keepdim=True)], dim=1)
    block_keys = keys ^ _signed(_BLOCK_STREAM)
    chosen = gumbel_noise(block_keys, masses.shape[1]).add_(masses.log_()).argmax(dim=-1, keepdim=True)
    index = chosen * block + torch.arange(block, device=scores.device)
    past_end = index >= vocab  # the last block's places beyond the vocabulary
    index = index.clamp_(max=vocab - 1)
    within = scores.gather(-1, index).masked_fill_(past_end, float("-inf"))
    best = gumbel_noise_at(keys, index, vocab).add_(within).argmax(dim=-1, keepdim=True)
    return index.gather(-1, best)[:, 0]


def _filters(row: RowSampling, vocab: int) -> bool:
    return row.top_k is not None and row.top_k < vocab or row.top_p is not None and row.top_p < 1.0


def _shortlist_width(rows: Sequence[RowSampling], filtering: Sequence[bool], vocab: int, shortlist: int) -> int:
    """How many best tokens a step's filtering rows are shortlisted on: ``shortlist``, or more for a larger top-k;
    0 where that is over half the vocabulary (ranking it all is then cheaper: on the CPU, 16 rows of 512 tokens
    took 0.8 ms ranked whole against 1.5 shortlisted whole)."""
    largest_k = max((r.top_k or 0) for r, f in zip(rows, filtering, strict=True) if f)
    width = max(shortlist, largest_k if largest_k < vocab else 0)
    return width if 0 < shortlist and width <= vocab // 2 else 0


@dataclass(frozen=True)
class _Shortlist:
    """Each row's best tokens in rank order (``index``) and their scores, with the tokens a filter drops at -inf."""

    index: torch.Tensor
    scores: torch.Tensor

    def draw(self, keys: torch.Tensor, vocab: int) -> torch.Tensor:
        """Each row's Gumbel-max draw among its kept tokens (the noise drawn at them alone)."""
        best = gumbel_noise_at(keys, self.index, vocab).add_(self.scores).argmax(dim=-1, keepdim=True)
        return self.index.gather(-1, best)[:, 0]


def _shortlisted(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    filtering: torch.Tensor,
    width: int,
    every_row_has_k: bool = False,
) -> _Shortlist | None:
    """The filters of :func:`_filtered` applied to each row's ``width`` best tokens; None when that is not exact for
    some ``filtering`` row (a sampled row with top-k or top-p: then the whole vocabulary must be ranked). Scores as :func:`sample_rows` makes
    them (float64, shifted to a maximum of 0, over the temperature), computed for the shortlist alone; only rows
    without top-k need one pass over the whole row (their top-p mass is normalized over every token).

    Exact means the row's kept tokens all score above the shortlist's last score, so every token ranked above any of
    them is in the shortlist: top-k's k-th best scores above it, or (without top-k) the mass above the first token
    tied with it already reaches top-p. The one check costs a sync."""
    vocab = logits.shape[-1]
    values, index = logits.topk(width, dim=-1)  # ties in no particular order: put them in vocabulary order
    index, by_index = index.sort(dim=-1)
    values, order = values.gather(-1, by_index).double().sort(dim=-1, descending=True, stable=True)
    index = index.gather(-1, order)
    best = values[:, :1]
    scores = (values - best) / temperature
    kth = values.gather(-1, (top_k - 1).clamp(max=width - 1))
    outside_k = values < kth
    ranked = scores.masked_fill(outside_k, float("-inf"))
    has_k = top_k < vocab
    exp = ranked.exp()  # scores are shifted to a maximum of 0: no overflow
    total = exp.sum(dim=-1, keepdim=True)
    if not every_row_has_k:
        whole = ((logits.double() - best) / temperature).exp().sum(dim=-1, keepdim=True)
        total = torch.where(has_k, total, whole)
    probs = exp / total
    before = probs.cumsum(dim=-1) - probs  # mass of the tokens ranked above each one
    drop = outside_k | (before >= top_p)
    if width < vocab:
        last = values[:, -1:]
        above = (values > last).sum(dim=-1, keepdim=True)  # the position of the first token tied with the last
        cut_by_k = has_k & (kth > last)
        cut_by_p = ~has_k & (before.gather(-1, above.clamp(max=width - 1)) >= top_p)
        if not bool((cut_by_k | cut_by_p | ~filtering).all()):
            return None
    return _Shortlist(index, ranked.masked_fill(drop, float("-inf")))


def _filtered(raw: torch.Tensor, scores: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """``scores`` (the shifted, temperature-scaled ``raw``) with the tokens outside each row's top-k, then outside its
    top-p nucleus, at -inf. Tokens are ranked and the k-th best found on ``raw``: shifting can round scores a hair
    apart to one value (1e-22 - 1 is -1), which must not pull a token below the k-th into the top-k."""
    ranked_raw, order = torch.sort(raw, dim=-1, descending=True, stable=True)
    outside_k = ranked_raw < ranked_raw.gather(-1, top_k - 1)
    ranked = scores.gather(-1, order).masked_fill(outside_k, float("-inf"))
    probs = ranked.softmax(dim=-1)
    before = probs.cumsum(dim=-1) - probs  # mass of the tokens ranked above each one
    drop_ranked = outside_k | (before >= top_p)  # outside the top-k, or the nucleus (never the top)
    drop = drop_ranked.scatter(-1, order, drop_ranked)
    return scores.masked_fill(drop, float("-inf"))


def _to_device(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type != "cuda":
        return values.to(device)
    return values.pin_memory().to(device, non_blocking=True)


__all__ = [
    "GPU_SHORTLIST_ROWS",
    "GREEDY_ROW",
    "SHORTLIST",
    "SEED_LIMIT",
    "RowSampling",
    "draw_key",
    "gumbel_noise",
    "gumbel_noise_at",
    "two_level_draw",
    "random_seed",
    "sample_rows",
    "seed_for",
    "stream_base",
    "stream_key",
]
