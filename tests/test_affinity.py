"""Document affinity: a document's questions go to one replica (its owner) while it is not overloaded; when a replica
leaves, only the documents it owned move; an overloaded owner sends the request to the least busy replica."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mamba_router.serve.affinity import rank_replicas, rendezvous_order

REPLICA_IDS = st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=8, unique=True)


@settings(max_examples=200, deadline=None)
@given(document=st.text(max_size=40), ids=REPLICA_IDS)
def test_every_replica_ranks_a_document_the_same_way_whatever_the_order_it_sees(document, ids) -> None:
    assert rendezvous_order(document, ids) == rendezvous_order(document, list(reversed(ids)))
    assert sorted(rendezvous_order(document, ids)) == sorted(ids)


@settings(max_examples=200, deadline=None)
@given(documents=st.lists(st.text(max_size=20), min_size=1, max_size=30), ids=REPLICA_IDS, data=st.data())
def test_when_a_replica_leaves_only_the_documents_it_owned_move(documents, ids, data) -> None:
    gone = data.draw(st.sampled_from(ids))
    left = [i for i in ids if i != gone]
    for document in documents:
        before = rendezvous_order(document, ids)[0]
        if before != gone and left:
            assert rendezvous_order(document, left)[0] == before


def test_documents_spread_over_the_replicas() -> None:
    owners = [rendezvous_order(f"document {i}", ["a", "b", "c", "d"])[0] for i in range(400)]
    assert all(60 <= owners.count(r) <= 140 for r in "abcd")


@settings(max_examples=200, deadline=None)
@given(
    document=st.one_of(st.none(), st.text(max_size=20)),
    queues=st.dictionaries(st.text(min_size=1, max_size=6), st.integers(0, 50), min_size=1, max_size=6),
    max_queue=st.integers(1, 40),
)
def test_the_owner_answers_unless_busy_then_the_least_busy_does(document, queues, max_queue) -> None:
    replicas = list(queues)
    ranks = rank_replicas(document, replicas, replica_id=lambda r: r, queue_length=queues.get, max_queue=max_queue)
    assert sorted(r for rank in ranks for r in rank) == sorted(replicas)  # every replica, once
    first = ranks[0][0]
    owner = rendezvous_order(document, replicas)[0] if document is not None else None
    if owner is not None and queues[owner] < max_queue:
        assert ranks[0] == [owner]
    else:
        assert queues[first] == min(queues.values())
