"""The vectors (and texts) of a collection's items, read once for a whole-collection job."""

import json
from dataclasses import dataclass

import numpy as np

from .. import storage, vectors
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
        while rows := cursor.fetchmany(READ_ROWS):
            for row in rows:
                matrix[len(found_ids)] = vectors.check(vectors.decode(row[1]), collection.dimensions,
                                                       f"the vector of {row[0]!r}")
                found_ids.append(row[0])
                if texts:
                    found_texts.append(row[2])
                if metadata:
                    found_metadata.append(json.loads(row[-1]) if row[-1] else None)
    except Exception as ex:
        if filter.where and type(ex).__module__.startswith(("sqlite3", "pysqlite3")):
            raise EmbedkitError(f"the condition {filter.where!r} is not valid SQL here: {ex}") from None
        raise
    finally:
        if began:
            conn.execute("commit")
    vectors.normalize_rows(matrix)
    return Loaded(found_ids, matrix, found_texts, found_metadata)
