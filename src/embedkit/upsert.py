"""Storing vectors made elsewhere: Collection.upsert_vectors, and the importers' write path.

Whether a stored vector may stand for its text is recorded in its row's content_hash. A
vector that the collection's model made from the row's text (embedded by embedkit, or
declared so by the caller naming the model) keeps the text's digest: a later embed of the
same text reuses it, and an unchanged item is not embedded again. Any other vector is
stored with a NULL content_hash, which equals no digest: embed_multi never reuses it, and
embeds the item again when it meets its id with text.
"""

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import bulkwrite, storage, vectors
from .errors import EmbedkitError
from .items import content_hash, metadata_json, same_json


@dataclass
class VectorStats:
    """What an upsert of vectors did."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0

    def summary(self) -> str:
        return f"{self.added} added, {self.updated} updated, {self.unchanged} unchanged"


@dataclass
class Batch:
    """Vectors to store: ids, vectors (see vectors.matrix), and per id optionally its text,
    its metadata (a dict) and the digest of the text its vector was made from."""

    ids: list
    vectors: Any
    content: Sequence | None = None
    metadata: Sequence | None = None
    hashes: Sequence | None = None


def upsert(collection, batches, model=None, progress=None) -> VectorStats:
    """Store batches in one transaction; rows whose vector, text and metadata are the same
    already are left as they are. model names the model that made the vectors from their
    text: it must be the collection's own, and their digests are then kept (see above).
    progress(n) is called as n more items are written."""
    if not collection.managed:
        raise EmbedkitError(f"collection {collection.name!r} is another program's, read in place: store vectors in a copy")
    if model is not None:
        if collection.model_id is None:
            raise EmbedkitError(
                f"collection {collection.name!r} has no model, so its vectors cannot come from {model!r}"
            )
        collection.check_model(model)
    stats = VectorStats()
    seen: set[str] = set()
    conn = collection.db.conn
    with storage.transaction(conn):
        writer = bulkwrite.Writer(conn, collection.name, collection.table)
        for batch in batches:
            ids = _checked_ids(batch.ids, seen)
            matrix = vectors.matrix(batch.vectors, ids, collection.dimensions)
            if collection.dimensions is None and len(ids):
                bulkwrite.record_dimensions(collection, matrix.shape[1])
            content = _column(batch.content, ids, "content")
            if not all(value is None or type(value) is str for value in content):
                value, id = next((v, id) for v, id in zip(content, ids) if v is not None and not isinstance(v, str))
                raise EmbedkitError(f"the content of {id!r} is not text ({type(value).__name__})")
            metadata = ([None] * len(ids) if batch.metadata is None else
                        [metadata_json(_metadata(m, id), f"item {id!r}: metadata") for m, id in zip(_column(batch.metadata, ids, "metadata"), ids)])
            if batch.hashes is not None:
                hashes = _column(batch.hashes, ids, "hashes")
            elif model is not None:
                hashes = [content_hash(text, collection.hash) if text and text.strip() else None for text in content]
            else:
                hashes = [None] * len(ids)
            now = storage.unix_time()
            # zip, in C, builds the rows of 100k items in a fraction of what a comprehension takes.
            rows = list(zip(ids, [row.tobytes() for row in matrix], content, metadata, hashes, itertools.repeat(now)))
            existing = _existing(conn, collection.table, ids)
            new = [row for row in rows if row[0] not in existing]
            changed = [row for row in rows if row[0] in existing and not _same(existing[row[0]], row)]
            writer.insert(new)
            writer.replace(changed)
            stats.added += len(new)
            stats.updated += len(changed)
            stats.unchanged += len(rows) - len(new) - len(changed)
            if progress is not None:
                progress(len(rows))
        writer.finish()
    return stats


def _checked_ids(ids, seen) -> list:
    ids = list(ids)
    # The usual case, checked at C speed: distinct non-empty strings not seen before.
    if all(type(id) is str for id in ids) and all(ids) and len(set(ids)) == len(ids) and seen.isdisjoint(ids):
        seen.update(ids)
        return ids
    checked = []
    for id in ids:
        if isinstance(id, int) and not isinstance(id, bool):
            id = str(id)
        if not isinstance(id, str) or not id:
            raise EmbedkitError(f"an id must be a non-empty string, not {id!r}")
        if id in seen:
            raise EmbedkitError(f"duplicate id {id!r} in the input")
        seen.add(id)
        checked.append(id)
    return checked


def _column(values, ids, what) -> list:
    if values is None:
        return [None] * len(ids)
    values = list(values)
    if len(values) != len(ids):
        raise EmbedkitError(f"{len(values)} {what} values for {len(ids)} ids")
    return values


def _metadata(value, id):
    if value is not None and not isinstance(value, dict):
        raise EmbedkitError(f"the metadata of {id!r} must be a dict, not {type(value).__name__}")
    return value


def _existing(conn, table, ids) -> dict:
    """id -> (embedding, content, metadata, content_hash) of the ids the table has."""
    if conn.execute(f"select not exists (select 1 from {storage.quote(table)})").fetchone()[0]:
        return {}
    rows = storage.select_in(conn, table, "id, embedding, content, metadata, content_hash", "id", ids)
    return {row[0]: row[1:] for row in rows}


def _same(old, row) -> bool:
    embedding, content, metadata, digest = old
    return embedding == row[1] and content == row[2] and digest == row[4] and same_json(metadata, row[3])
