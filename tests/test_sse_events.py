"""A streamed piece's server-sent event is rendered from a per-answer template: the same text as rendering the whole
chunk, for any piece text and any model name (including one that contains the template's placeholder)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mamba_router.routing.decisions import RouteDecision
from mamba_router.serve.app import _PLACEHOLDER, _Answer, _sse


@given(
    kind=st.sampled_from(["chat.completion", "text_completion"]),
    model=st.one_of(st.text(max_size=20), st.just(_PLACEHOLDER)),
    pieces=st.lists(st.text(max_size=30), min_size=1, max_size=5),
)
def test_a_piece_event_is_the_whole_chunk_rendered(kind: str, model: str, pieces: list[str]) -> None:
    answer = _Answer(kind, model, include_usage=False, arrived=0.0)
    decision = RouteDecision.model_construct(decision_id="d-1")
    for piece in pieces:
        assert answer.piece_event(decision, piece) == _sse(answer.chunk(decision, piece))
