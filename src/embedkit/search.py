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
from dataclasses import dataclass

import numpy as np

from . import storage, vectors

# Total memory the cached matrices may use, in MiB.
CACHE_MB = int(os.environ.get("EMBEDKIT_CACHE_MB", "4096"))
CHUNK_ROWS = 50_000

_lock = threading.Lock()
_cache = {}  # (database key, collection) -> _Matrix, least recently used first
_searched = {}  # (database key, collection) -> version searched once without a cache


@dataclass
class _Matrix:
    version: int
    ids: list
    positions: dict
    matrix: np.ndarray  # unit-length float32 rows


def top_n(collection, query: np.ndarray, n: int, exclude=None):
    """[(id, score)] best first; ties broken by id so results never flicker."""
    if n <= 0:
        return []
    query = query.astype(np.float32) / np.float32(np.linalg.norm(query))
    key = (collection.db.key, collection.name)
    version = collection.version()
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
        return _best(cached.matrix @ query, cached.ids, n, cached.positions.get(exclude))
    conn = collection.db.conn
    vec = storage.has_sqlite_vec(conn)
    count = collection.count()
    if count == 0:
        return []
    fits = shared and count * (collection.dimensions or 0) * 4 <= CACHE_MB * 2**20
    if vec and (_searched.get(key) != version or not fits):
        _searched[key] = version
        return _sqlite_vec_top(collection, query, n, exclude)
    if not vec:
        storage.notice_vec_unavailable()
    if not fits:
        return _chunked_top(collection, query, n, exclude)
    cached = _load(collection, version)
    with _lock:
        _cache[key] = cached
        _evict()
    return _best(cached.matrix @ query, cached.ids, n, cached.positions.get(exclude))


def forget(db_key, name=None):
    """Drop cached matrices of a database (or one collection of it)."""
    with _lock:
        for key in [k for k in _cache if k[0] == db_key and name in (None, k[1])]:
            del _cache[key]


def _evict():
    budget = CACHE_MB * 2**20
    while sum(m.matrix.nbytes for m in _cache.values()) > budget and len(_cache) > 1:
        del _cache[next(iter(_cache))]


def _rows(collection, chunk_rows):
    """(ids, matrix) chunks of the collection, unit-normalised rows."""
    cursor = collection.db.conn.execute(
        f"select id, embedding from {storage.quote(collection.table)} order by rowid"
    )
    while True:
        rows = cursor.fetchmany(chunk_rows)
        if not rows:
            return
        ids = [row[0] for row in rows]
        matrix = np.frombuffer(b"".join(row[1] for row in rows), dtype=vectors.DTYPE)
        yield ids, vectors.normalize_rows(matrix.reshape(len(ids), -1).copy())


def _load(collection, version) -> _Matrix:
    ids, parts = [], []
    for chunk_ids, matrix in _rows(collection, CHUNK_ROWS):
        ids.extend(chunk_ids)
        parts.append(matrix)
    dims = collection.dimensions or 0
    matrix = np.concatenate(parts) if parts else np.zeros((0, dims), dtype=np.float32)
    return _Matrix(version, ids, {id: i for i, id in enumerate(ids)}, matrix)


def _best(scores: np.ndarray, ids, n, exclude_position=None):
    if exclude_position is not None:
        scores[exclude_position] = -np.inf
    available = len(ids) - (exclude_position is not None)
    k = min(n, available)
    if k <= 0:
        return []
    if k < len(scores):
        kth = scores[np.argpartition(scores, len(scores) - k)[len(scores) - k]]
        candidates = np.flatnonzero(scores >= kth)  # every row tied with the k-th
    else:
        candidates = np.flatnonzero(scores > -np.inf)
    ranked = sorted(((-float(scores[i]), ids[i]) for i in candidates))[:k]
    return [(id, -negative) for negative, id in ranked]


def _chunked_top(collection, query, n, exclude):
    best = []
    for ids, matrix in _rows(collection, CHUNK_ROWS):
        position = ids.index(exclude) if exclude in ids else None
        best = sorted(best + _best(matrix @ query, ids, n, position), key=lambda hit: (-hit[1], hit[0]))[:n]
    return best


def _sqlite_vec_top(collection, query, n, exclude):
    rows = collection.db.conn.execute(
        f"""
        -- NULL for an all-zero row (written by another client): score 0, as with numpy
        select id, coalesce(vec_distance_cosine(embedding, :query), 1.0) as distance
        from {storage.quote(collection.table)}
        where :exclude is null or id != :exclude
        order by distance, id
        limit :n
        """,
        {"query": query.tobytes(), "exclude": exclude, "n": n},
    ).fetchall()
    return [(id, 1.0 - distance) for id, distance in rows]
