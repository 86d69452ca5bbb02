"""Copying collections out of an llm embeddings database (embedkit import-llm).

Each llm collection becomes an embedkit collection of the same name with llm's model (as
embedkit names it, see llmdb.model_for), its vectors byte for byte, stored text, metadata
and content hashes. llm hashes text with MD5, so the copy records that scheme: embed-multi
then hashes its input the same way, and a re-run over the input llm embedded embeds nothing.

llm's quirks: a row embedded from binary content (content_blob, e.g. an image for CLIP) is
copied without its bytes and without its hash, since its vector is no text's; a row stored
without text (no --store) keeps its hash and NULL content; metadata is JSON text, copied
compactly.
"""

import json
import os
from dataclasses import dataclass

from .. import llmdb, storage
from ..errors import EmbedkitError
from ..upsert import Batch, VectorStats, upsert
from . import chosen

BATCH_ROWS = 5000


@dataclass
class LlmCollectionInfo:
    id: int
    name: str
    model: str  # as llm recorded it
    count: int


def open_database(path):
    """A read-only connection to an llm embeddings database."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise EmbedkitError(f"{path}: no such file")
    from urllib.parse import quote

    conn = storage.sqlite3.connect(f"file:{quote(os.path.abspath(path))}?mode=ro", uri=True)
    try:
        if not llmdb.is_llm_database(conn):
            raise EmbedkitError(f"{path}: not an llm embeddings database (no collections and embeddings tables)")
    except storage.sqlite3.DatabaseError as ex:
        conn.close()
        raise EmbedkitError(f"{path}: not an SQLite database ({ex})") from None
    except EmbedkitError:
        conn.close()
        raise
    return conn


def collections(conn) -> list:
    return [
        LlmCollectionInfo(*row)
        for row in conn.execute(
            f"select c.id, c.name, c.model, (select count(*) from {llmdb.EMBEDDINGS} e where e.collection_id = c.id) "
            f"from {llmdb.COLLECTIONS} c order by c.name"
        )
    ]


def batches(conn, collection: LlmCollectionInfo, skipped: list, batch_rows=BATCH_ROWS):
    """The collection's rows as Batches (hashes included); the ids of rows whose binary
    content was not copied are appended to skipped."""
    blob = "content_blob" if "content_blob" in _columns(conn) else "null"
    cursor = conn.execute(
        f"select id, embedding, content, {blob}, content_hash, metadata from {llmdb.EMBEDDINGS} "
        "where collection_id = ? order by rowid",
        [collection.id],
    )
    while rows := cursor.fetchmany(batch_rows):
        ids, vectors, content, hashes, metadata = [], [], [], [], []
        for id, embedding, text, binary, digest, meta in rows:
            ids.append(id)
            vectors.append(embedding)
            content.append(text)
            if binary is not None:
                skipped.append(id)
                digest = None
            hashes.append(digest if isinstance(digest, bytes) else None)
            metadata.append(_metadata(meta, id, collection.name))
        yield Batch(ids, vectors, content, metadata, hashes)


def _columns(conn) -> set:
    return {row[1] for row in conn.execute(f"pragma table_info({llmdb.EMBEDDINGS})")}


def _metadata(text, id, collection):
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        raise EmbedkitError(f"llm collection {collection!r}, item {id!r}: its metadata is not JSON") from None
    if value is None:
        return None
    if not isinstance(value, dict):
        raise EmbedkitError(f"llm collection {collection!r}, item {id!r}: its metadata is not a JSON object")
    return value or None


@dataclass
class Copied:
    """What import-llm did with one collection."""

    name: str  # of the embedkit collection
    model: str  # as embedkit records it
    stats: VectorStats
    binary: list  # ids whose binary content was not copied


def copy(db, path, names=None, into=None, progress=None) -> list:
    """Copy the llm collections named (all of them by default) from the llm database at path
    into db, each in one transaction; a collection copied before is brought up to date.
    progress(n, total) is called as n more items of a collection of total are copied."""
    conn = open_database(path)
    try:
        found = {info.name: info for info in collections(conn)}
        copied = []
        for name, target_name in chosen(found, names, into, path).items():
            info = found[name]
            collection = _target(db, target_name, info)
            skipped: list = []
            tick = (lambda n, total=info.count: progress(n, total)) if progress else None
            stats = upsert(collection, batches(conn, info, skipped), progress=tick)
            copied.append(Copied(target_name, collection.model_id, stats, skipped))
        return copied
    finally:
        conn.close()


def _target(db, name, info):
    """The collection an llm collection is copied into: llm's model and MD5 content hashes."""
    model_id, kept = llmdb.model_for(info.model)
    if db.has_collection(name):
        collection = db.collection(name)
        if (collection.model_id, collection.hash) != (model_id, llmdb.HASH) or not collection.managed:
            raise EmbedkitError(
                f"collection {name!r} exists and is not a copy of llm's {info.name!r} (model {info.model}): "
                "give another name with --into"
            )
        return collection
    settings = {"hash": llmdb.HASH, **({"dimensions": kept} if kept else {})}
    return db._new_collection(name, model_id, None, settings=settings)
