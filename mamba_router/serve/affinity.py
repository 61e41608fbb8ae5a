"""Which replica answers a question about a document: the one that holds the document's state, unless it is busy.

Every replica ranks the same way for a given document (rendezvous, or highest-random-weight, hashing: each replica
scores ``hash(document, replica)`` and the highest score owns the document), so a document's questions meet its
state on one replica without any shared table, and when a replica joins or leaves only the documents it owned move.
When the owner has ``max_queue`` or more requests waiting, the request goes to the least busy replica instead (it
reads the document there); a request without a document goes to the least busy replica.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

Replica = TypeVar("Replica")


def rendezvous_order(document_key: str, replica_ids: Sequence[str]) -> list[str]:
    """``replica_ids`` from the document's owner to its last choice (highest score first; ties by id)."""

    def score(replica_id: str) -> bytes:
        return hashlib.blake2b(f"{document_key}\0{replica_id}".encode(), digest_size=8).digest()

    return sorted(replica_ids, key=lambda rid: (score(rid), rid), reverse=True)


def rank_replicas(
    document_key: str | None,
    replicas: Sequence[Replica],
    *,
    replica_id: Callable[[Replica], Hashable],
    queue_length: Callable[[Replica], int],
    max_queue: int,
) -> list[list[Replica]]:
    """The replicas in ranks of preference: ``[[owner], [the others, least busy first]]`` for a document whose
    owner has fewer than ``max_queue`` requests waiting, else ``[[all, least busy first]]``."""
    by_load = sorted(replicas, key=lambda r: (queue_length(r), str(replica_id(r))))
    if document_key is None or not replicas:
        return [by_load] if by_load else []
    ids = {str(replica_id(r)): r for r in replicas}
    owner = ids[rendezvous_order(document_key, list(ids))[0]]
    if queue_length(owner) >= max_queue:
        return [by_load]
    return [[owner], [r for r in by_load if r is not owner]]
