"""Items scored by their best part, without the user chunking them.

With a collection's windows setting on, each stored text longer than the model reads is cut
into windows of what the model reads (overlapping by a quarter), and each window is embedded
into a side table, `_embedkit_COLLECTION_windows` (id, content_hash, part, start_char,
end_char, embedding). Dense search then scores an item by the best of its own vector and its windows'
vectors (MaxP), scanning every vector exactly, and says which part matched.

The side table is made from the stored text, so it can always be rebuilt: a row belongs to
an item as long as the item's content hash is the one it was cut from; rows of changed or
deleted items are left out of searches and replaced or removed by the next update(). A text
that fits the model gets one row with part 0 and no vector: checked, nothing to add.
"""

import json
from collections.abc import Callable

import numpy as np

from . import storage, vectors
from .chunking import for_model
from .errors import EmbedkitError
from .filters import Filter
from .items import Part

# Windows overlap by this fraction of their size.
OVERLAP = 4
# Items cut and embedded per transaction.
BATCH = 50


def table_name(name: str) -> str:
    return f"_embedkit_{name}_windows"


def check(model) -> None:
    """Raise, in one line, unless model can have windows."""
    if model.max_tokens is None:
        raise EmbedkitError(
            f"windows need a model that counts tokens, to know which texts are longer than it reads: "
            f"{model.model_id} does not"
        )


def enable(collection) -> None:
    """Record that collection scores items by their best window (and make its side table)."""
    model = collection.model
    check(model)
    size = model.max_tokens
    settings = {"size": size, "overlap": size // OVERLAP}
    conn = collection.db.conn
    with storage.transaction(conn):
        conn.execute(
            f"create table if not exists {storage.quote(table_name(collection.name))} "
            "(id text not null, content_hash blob not null, part integer not null, "
            "start_char integer, end_char integer, embedding blob, primary key (id, part))"
        )
        if collection.windows != settings:
            conn.execute(
                f"update {storage.REGISTRY} set settings = json_set(settings, '$.windows', json(?)) where name = ?",
                [json.dumps(settings), collection.name],
            )
    collection.windows = settings


def disable(collection) -> None:
    """Forget the windows setting and drop the side table."""
    conn = collection.db.conn
    with storage.transaction(conn):
        drop(conn, collection.name)
        conn.execute(f"update {storage.REGISTRY} set settings = json_remove(settings, '$.windows') where name = ?",
                     [collection.name])
    collection.windows = None


def drop(conn, name) -> None:
    conn.execute(f"drop table if exists {storage.quote(table_name(name))}")


def update(collection, progress: Callable[[int, int], None] | None = None) -> int:
    """Cut and embed the windows of every stored text that has none for its current content,
    and remove the rows of items changed or deleted since; returns how many windows were
    embedded. Items are done BATCH at a time, each batch in one transaction."""
    conn, table, side = collection.db.conn, storage.quote(collection.table), storage.quote(table_name(collection.name))
    with storage.transaction(conn):
        conn.execute(
            f"delete from {side} where not exists "
            f"(select 1 from {table} as item where item.id = {side}.id and item.content_hash = {side}.content_hash)"
        )
    todo = conn.execute(
        f"select id, content_hash, content from {table} as item where content is not null and content_hash is not null and not exists "
        f"(select 1 from {side} where {side}.id = item.id and {side}.content_hash = item.content_hash) order by id"
    ).fetchall()
    model, prefix = collection.model, collection.document_prefix
    window = collection.windows["size"]
    chunker = for_model(model, prefix, None, "tokens", window, collection.windows["overlap"])
    embedded = 0
    for batch in storage.chunked(todo, BATCH):
        counts = model.count_tokens([prefix + content for _, _, content in batch])
        rows: list[tuple] = []
        texts: list[str] = []
        for (id, digest, content), count in zip(batch, counts):
            if count <= window:
                rows.append((id, digest, 0, None, None, None))
                continue
            for number, (start, end) in enumerate(chunker.spans(content), 1):
                rows.append((id, digest, number, start, end, len(texts)))
                texts.append(prefix + content[start:end])
        found = collection._embed_checked(texts) if texts else []
        with storage.transaction(conn):
            conn.executemany(
                f"insert or replace into {side} (id, content_hash, part, start_char, end_char, embedding) values (?, ?, ?, ?, ?, ?)",
                [(*row[:5], None if row[5] is None else vectors.encode(found[row[5]])) for row in rows],
            )
        embedded += len(texts)
        if progress is not None:
            progress(len(batch), len(todo))
    return embedded


def top_n(collection, query: np.ndarray, n: int, exclude, filter: Filter, item_hits) -> list:
    """[(id, score)] best first: each item scored by the best of its own vector (item_hits,
    the exact top n of the items' own vectors) and its windows' vectors."""
    query = _unit(query)
    best = dict(item_hits)
    for id, (own, part) in _best_parts(collection, query, _parts(collection, filter, exclude)).items():
        best[id] = max(own, part[1])
    return sorted(best.items(), key=lambda item: (-item[1], item[0]))[:n]


def matching_parts(collection, query: np.ndarray, entries) -> None:
    """Set entry.part for each entry whose best window scores above its own vector."""
    parts = _parts(collection, Filter({}), None, [entry.id for entry in entries])
    best = _best_parts(collection, _unit(query), parts)
    for entry in entries:
        if entry.id in best:
            own, ((number, start, end), score) = best[entry.id]
            if score > own:
                text = entry.content[start:end] if entry.content is not None else None
                entry.part = Part(number, start, end, text, score)


def _best_parts(collection, query, parts) -> dict:
    """id -> (score of its own vector, ((number, start, end), score) of its best window).

    Scores are row by row (einsum), so an item and its windows score the same in a search
    and when its matching part is looked up afterwards, whatever else is scored with them."""
    if not parts:
        return {}
    ids = sorted({part[0] for part in parts})
    own = dict(storage.select_in(collection.db.conn, collection.table, "id, embedding", "id", ids))
    own_scores = dict(zip(own, _scores([vectors.decode(blob) for blob in own.values()], query)))
    best: dict = {}
    for (id, number, start, end, _), score in zip(parts, _scores([part[4] for part in parts], query)):
        if id in own_scores and score > best.get(id, (None, (None, -2.0)))[1][1]:
            best[id] = (own_scores[id], ((number, start, end), float(score)))
    return best


def _parts(collection, filter, exclude, ids=None) -> list:
    """(id, part, start, end, vector) of the windows of the current items filter matches."""
    table, side = storage.quote(collection.table), storage.quote(table_name(collection.name))
    condition, params = filter.condition()
    sql = (
        f"select id, part, start_char, end_char, embedding from {side} where embedding is not null "
        f"and content_hash = (select item.content_hash from {table} as item where item.id = {side}.id) "
        f"and id in (select id from {table} where {condition})"
    )
    if exclude is not None:
        sql, params = sql + " and id != ?", [*params, exclude]
    if ids is not None:
        sql, params = sql + " and id in (select value from json_each(?))", [*params, json.dumps(ids)]
    return [(id, part, start, end, vectors.decode(blob))
            for id, part, start, end, blob in collection.db.conn.execute(sql + " order by id, part", params)]


def _unit(query):
    return query.astype(np.float32) / np.float32(np.linalg.norm(query))


def _scores(rows, query) -> list:
    matrix = vectors.normalize_rows(np.stack(rows).astype(np.float32))
    return [float(score) for score in np.einsum("ij,j->i", matrix, query)]
