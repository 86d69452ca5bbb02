"""The vectors (and texts) of a collection's items, read once for a whole-collection job."""

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from .. import ranking, storage, vectors
from ..errors import EmbedkitError
from ..filters import Filter

READ_ROWS = 10_000


@dataclass
class Loaded:
    ids: list
    matrix: np.ndarray  # unit-length float32 rows, in id order
    texts: list  # stored text (or None), when asked for
    metadata: list  # dicts (or None), when asked for


def load(collection, filter: Filter | None = None, texts=False, metadata=False, ids=None) -> Loaded:
    """The items filter matches (all of them without one), or those of ids, in id order."""
    filter = filter or Filter()
    condition, params = filter.condition()
    columns = "id, embedding" + (", content" if texts else "") + (", metadata" if metadata else "")
    if ids is not None:
        condition = f"({condition}) and id in (select value from json_each(?))"
        params = [*params, json.dumps(list(ids))]
    source = f"from {storage.quote(collection.table)} where {condition}"
    conn = collection.db.conn
    began = not conn.in_transaction
    if began:
        conn.execute("begin")  # one snapshot for the count and the rows
    try:
        count = conn.execute(f"select count(*) {source}", params).fetchone()[0]
        matrix = np.empty((count, collection.dimensions or 0), dtype=np.float32)
        found_ids: list[str] = []
        found_texts: list[str | None] = []
        found_metadata: list[dict | None] = []
        cursor = conn.execute(f"select {columns} {source} order by id", params)
        unusable: list[tuple] = []
        while rows := cursor.fetchmany(READ_ROWS):
            kept, block, bad = ranking.decode_rows(rows, collection.dimensions or 0)
            unusable += bad  # left out, as every search leaves them out
            matrix[len(found_ids) : len(found_ids) + len(kept)] = block
            found_ids.extend(row[0] for row in kept)
            if texts:
                found_texts.extend(row[2] for row in kept)
            if metadata:
                found_metadata.extend(json.loads(row[-1]) if row[-1] else None for row in kept)
    except Exception as ex:
        if filter.where and type(ex).__module__.startswith(("sqlite3", "pysqlite3")):
            raise EmbedkitError(f"the condition {filter.where!r} is not valid SQL here: {ex}") from None
        raise
    finally:
        if began:
            conn.execute("commit")
    ranking.warn_unusable(collection, unusable)
    matrix = matrix[: len(found_ids)]
    vectors.normalize_rows(matrix)
    return Loaded(found_ids, matrix, found_texts, found_metadata)


def sample(ids, max_points) -> np.ndarray:
    """Positions of the items to read when not all can be (a map's points, the texts a name is
    made from): all of them up to max_points, else the max_points whose ids have the smallest
    SHA-256. The same items every run, and an item chosen stays chosen as the collection grows
    unless one with a smaller hash pushes it out."""
    if len(ids) <= max_points:
        return np.arange(len(ids))
    keys = [hashlib.sha256(id.encode("utf-8")).digest() for id in ids]
    return np.sort(np.array(sorted(range(len(ids)), key=keys.__getitem__)[:max_points], dtype=np.int64))
