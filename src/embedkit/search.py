"""Exact cosine top-n over a collection's float32 BLOBs.

Three paths, chosen per query:
- a cached, row-normalised numpy matrix: the fastest once built, so used from the
  second query on a collection whose contents have not changed since;
- sqlite-vec's vec_distance_cosine scanning the table in C: the fastest for a
  one-off query (the CLI), since it never materialises the matrix in Python;
- numpy over the table in bounded chunks, when sqlite-vec is not available and the
  matrix is too large to cache.
Cached matrices are invalidated by the collection's version counter, which triggers
bump on every write from any client.
"""

import os
import threading
from dataclasses import dataclass, field

import numpy as np

from . import quantized, ranking, storage, vectors
from .filters import alternatives, json_path

# Total memory the cached matrices may use, in MiB.
CACHE_MB = int(os.environ.get("EMBEDKIT_CACHE_MB", "4096"))
CHUNK_ROWS = 50_000

_lock = threading.Lock()
_cache: dict[tuple, "_Matrix"] = {}  # (database key, collection) -> _Matrix, least recently used first
_searched: dict[tuple, int] = {}  # (database key, collection) -> version searched once without a cache


@dataclass
class _Matrix:
    version: int
    ids: list
    positions: dict
    matrix: np.ndarray  # unit-length float32 rows
    skipped: int  # rows whose vectors cannot be used (ranking.decode_rows), not in the matrix
    # metadata key -> {value: positions of the rows with it}, made by the first filter on it
    values: dict = field(default_factory=dict)


def top_n(collection, query: np.ndarray, n: int, exclude=None, filter=None, exact=False):
    """[(id, score)] best first; ties broken by id so results never flicker. filter (a
    filters.Filter) limits the search to the items it matches, before ranking. A quantised
    index (quantized.py), when there is one, answers unless exact or filtered."""
    if n <= 0:
        return []
    query = query.astype(np.float32) / np.float32(np.linalg.norm(query))
    key = (collection.db.key, collection.name)
    version = collection.version()
    if collection.dimensions is None:  # nothing embedded yet
        return []
    # Inside a transaction rows may be uncommitted, and once rolled back their version
    # number is reused by the next write: a matrix of them must never be cached or served.
    shared = not collection.db.conn.in_transaction
    with _lock:
        cached = _cache.pop(key, None) if shared else None
        if cached is not None and cached.version == version:
            _cache[key] = cached  # most recently used last
        else:
            cached = None
    if cached is not None:
        return _cached_top(collection, cached, query, n, exclude, filter)
    if not exact and not filter:
        hits = quantized.top_n(collection, query, n, exclude)
        if hits is not None:
            return hits
    vec = storage.has_sqlite_vec(collection.db.conn)
    if vec and _searched.get(key) != version:
        _searched[key] = version
        return _sqlite_vec_top(collection, query, n, exclude, filter)
    count = collection.count()
    if count == 0:
        return []
    fits = shared and count * collection.dimensions * 4 <= CACHE_MB * 2**20
    if vec and not fits:
        return _sqlite_vec_top(collection, query, n, exclude, filter)
    if not vec:
        storage.notice_vec_unavailable()
    if not fits:
        return _chunked_top(collection, query, n, exclude, filter)
    cached = _load(collection, version)
    with _lock:
        _cache[key] = cached
        _evict()
    return _cached_top(collection, cached, query, n, exclude, filter)


def _cached_top(collection, cached, query, n, exclude, filter):
    if not filter:
        return ranking.best(cached.matrix @ query, cached.ids, n, cached.positions.get(exclude))
    rows = _matching_rows(collection, cached, filter)
    if rows is None:  # the table changed under the cached matrix: ask SQLite instead
        return _chunked_top(collection, query, n, exclude, filter)
    position = cached.positions.get(exclude)
    excluded = None
    if position is not None:
        at = int(np.searchsorted(rows, position))
        excluded = at if at < len(rows) and rows[at] == position else None
    return ranking.best(cached.matrix[rows] @ query, [cached.ids[i] for i in rows], n, excluded)


def _matching_rows(collection, cached, filter):
    """Sorted positions in the cached matrix of the rows filter matches; None if the table no
    longer has the rows the matrix was made from.

    A metadata key's values are read once per version of the collection, so later filters
    on it cost a dictionary lookup: a filter narrows a search down instead of slowing it.
    """
    rows = None
    for key, value in filter.metadata.items():
        if key not in cached.values:
            read = collection.db.conn.execute(
                f"select id, json_extract(metadata, ?) from {storage.quote(collection.table)} order by rowid",
                [json_path(key)],
            ).fetchall()
            if len(read) != len(cached.ids) + cached.skipped:
                return None
            index = {}
            if cached.skipped:  # the matrix has the other rows, in the same order
                read = [(id, found) for id, found in read if id in cached.positions]
            for position, (_, found) in enumerate(read):
                index.setdefault(found, []).append(position)
            cached.values[key] = {found: np.array(positions) for found, positions in index.items()}
        index = cached.values[key]
        match = np.unique(np.concatenate([index.get(v, np.empty(0, dtype=np.int64)) for v in alternatives(value)]))
        rows = match if rows is None else np.intersect1d(rows, match)
    if filter.where:
        ids = collection.db.conn.execute(
            f"select id from {storage.quote(collection.table)} where ({filter.where})"
        ).fetchall()
        match = np.array(sorted(cached.positions[id] for (id,) in ids if id in cached.positions), dtype=np.int64)
        rows = match if rows is None else np.intersect1d(rows, match)
    return rows.astype(np.int64)


def forget(db_key, name=None):
    """Drop cached matrices of a database (or one collection of it)."""
    with _lock:
        for key in [k for k in _cache if k[0] == db_key and name in (None, k[1])]:
            del _cache[key]


def _evict():
    budget = CACHE_MB * 2**20
    while sum(m.matrix.nbytes for m in _cache.values()) > budget and len(_cache) > 1:
        del _cache[next(iter(_cache))]


def _rows(collection, chunk_rows, filter=None, unusable=None):
    """(ids, matrix) chunks of the collection's raw vectors (read-only arrays); rows whose
    vectors cannot be used are left out, and added to unusable."""
    condition, params = filter.condition() if filter else ("1", [])
    cursor = collection.db.conn.execute(
        f"select id, embedding from {storage.quote(collection.table)} where {condition} order by rowid", params
    )
    while rows := cursor.fetchmany(chunk_rows):
        kept, matrix, bad = ranking.decode_rows(rows, collection.dimensions)
        if unusable is not None:
            unusable += bad
        yield [row[0] for row in kept], matrix


def _load(collection, version) -> _Matrix:
    with storage.snapshot(collection.db.conn):  # one snapshot for the count and the rows
        # Filled in place: no second copy of a matrix that may take gigabytes.
        matrix = np.empty((collection.count(), collection.dimensions), dtype=np.float32)
        ids: list[str] = []
        unusable: list[tuple] = []
        for chunk_ids, chunk in _rows(collection, CHUNK_ROWS, unusable=unusable):
            matrix[len(ids) : len(ids) + len(chunk_ids)] = chunk
            ids.extend(chunk_ids)
    ranking.warn_unusable(collection, unusable)
    matrix = matrix[: len(ids)]
    vectors.normalize_rows(matrix)
    return _Matrix(version, ids, {id: i for i, id in enumerate(ids)}, matrix, len(unusable))


def _chunked_top(collection, query, n, exclude, filter=None):
    best = []
    unusable: list[tuple] = []
    for ids, matrix in _rows(collection, CHUNK_ROWS, filter, unusable):
        position = ids.index(exclude) if exclude in ids else None
        scores = vectors.normalize_rows(matrix.copy()) @ query
        best = sorted(best + ranking.best(scores, ids, n, position), key=lambda hit: (-hit[1], hit[0]))[:n]
    ranking.warn_unusable(collection, unusable)
    return best


def _sqlite_vec_top(collection, query, n, exclude, filter=None):
    condition, params = filter.condition() if filter else ("1", [])
    conn, dims = collection.db.conn, collection.dimensions
    unusable: list[tuple] = []
    # Called only for rows without a distance, which another program wrote: NULL, not a BLOB
    # of the right length (vec_distance_cosine would fail on it), or NaN, infinite or all
    # zeros (it gives NULL). They sort last, and are left out.
    conn.create_function("embedkit_unusable", 2, lambda id, value: unusable.append((id, vectors.problem(value, dims))))
    rows = conn.execute(
        f"""
        select id, coalesce(
            case when typeof(embedding) = 'blob' and length(embedding) = ? then vec_distance_cosine(embedding, ?) end,
            embedkit_unusable(id, embedding)
        ) as distance
        from {storage.quote(collection.table)}
        where (? is null or id != ?) and {condition}
        order by distance nulls last, id
        limit ?
        """,
        [dims * 4, query.tobytes(), exclude, exclude, *params, n],
    ).fetchall()
    ranking.warn_unusable(collection, unusable)
    return [(id, 1.0 - distance) for id, distance in rows if distance is not None]
