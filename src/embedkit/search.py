"""Cosine top-n over a collection's float32 BLOBs: which path answers each query.

Exact paths:
- a cached, row-normalised numpy matrix: the fastest exact path once built;
- sqlite-vec's vec_distance_cosine scanning the table in C: the fastest one-off query (the
  CLI), since it never materialises the matrix in Python;
- numpy over the table in bounded chunks, when sqlite-vec is not available and the
  matrix is too large to cache.
Side indexes, which the caller can bypass with exact=True: the approximate index (ann.py),
and the quantised indexes (quantized.py) for one-off queries.

The rule (docs/search.md, with the numbers): a cached matrix answers whenever one is in memory,
except that the approximate index answers unfiltered queries over collections large enough
that it is faster. Without a matrix, the cheapest cold path answers: the approximate index,
else a quantised index (unfiltered queries), else the sqlite-vec scan. From the second query
on a collection at one version, the matrix is built in a background thread meanwhile, so no
query waits for it; where no other connection can read the file (an in-memory database), or
sqlite-vec is missing, it is built in the query itself, as the chunked numpy scan costs as much.
Cached matrices are invalidated by the collection's version counter, which triggers bump on
every write from any client.
"""

import contextlib
import os
import threading
from dataclasses import dataclass, field

import numpy as np

from . import ann, quantized, ranking, storage, vectors
from .filters import alternatives, json_path

# Total memory the cached matrices may use, in MiB.
CACHE_MB = int(os.environ.get("EMBEDKIT_CACHE_MB", "4096"))
CHUNK_ROWS = 50_000
# Above this many vector components (rows x dimensions), a query over a cached matrix is
# slower than one through the approximate index (benchmarks/routing.py at 100k x 384: 28 ms
# against 5.4 ms on 2 busy CPUs, so about 0.7 ns per component against a few milliseconds
# that grow only with the logarithm of the size).
ANN_BEATS_MATRIX = 6_000_000

_lock = threading.Lock()
_cache: dict[tuple, "_Matrix"] = {}  # (database key, collection) -> _Matrix, least recently used first
_searched: dict[tuple, int] = {}  # (database key, collection) -> version searched once without a cache
_loading: dict[tuple, threading.Thread] = {}  # (database key, collection) -> the thread building its matrix


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
    filters.Filter) limits the search to the items it matches, before ranking. exact keeps
    the side indexes out of it."""
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
    if not exact and (cached is None or (not filter and cached.matrix.size > ANN_BEATS_MATRIX)):
        hits = ann.top_n(collection, query, n, exclude, filter)
        if hits is not None:
            return hits
    if cached is not None:
        return _cached_top(collection, cached, query, n, exclude, filter)
    vec = storage.has_sqlite_vec(collection.db.conn)
    count = collection.count()
    if count == 0:
        return []
    fits = shared and count * collection.dimensions * 4 <= CACHE_MB * 2**20
    if vec and fits and _searched.get(key) == version:
        _load_in_background(collection, key, version)  # not waited for: this query goes on cold
    _searched[key] = version
    if not exact and not filter:
        hits = quantized.top_n(collection, query, n, exclude)
        if hits is not None:
            return hits
    if vec:
        return _sqlite_vec_top(collection, query, n, exclude, filter)
    storage.notice_vec_unavailable()
    if not fits:
        return _chunked_top(collection, query, n, exclude, filter)
    cached = _load(collection.db.conn, collection, version)
    _keep(key, cached)
    return _cached_top(collection, cached, query, n, exclude, filter)


def _keep(key, cached):
    with _lock:
        _cache[key] = cached
        _evict()


def _load_in_background(collection, key, version):
    """Build the collection's matrix in a thread of its own, on a connection of its own;
    built in this thread where no other connection can open the database."""
    path = collection.db.path
    if not path or path == ":memory:":
        _keep(key, _load(collection.db.conn, collection, version))
        return
    with _lock:
        running = _loading.get(key)
        if running is not None and running.is_alive():
            return

        def load():
            _yield_to_queries()
            try:
                conn = storage.connect(path, collection.db.lock_timeout, read_only=True)
                try:
                    cached = _load(conn, collection)
                finally:
                    conn.close()
                _keep(key, cached)
            except Exception as ex:  # the query path goes on cold; say why once
                storage.log.warning("embedkit: could not cache collection %r in memory: %s", collection.name, ex)

        thread = _loading[key] = threading.Thread(target=load, name=f"embedkit-cache-{collection.name}", daemon=True)
    thread.start()


def _yield_to_queries():
    """Lower this thread's scheduling priority (Linux), so that the queries answered meanwhile
    get the CPU first: measured at 100k on 2 busy CPUs, the query that starts the load took 1.8x
    the first query's time beside a loader of equal priority, and no longer than it beside this."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def wait_for_cache(timeout=None):
    """Wait for the matrices being built in the background (for tests, benchmarks, and
    services that want to be warm before they serve)."""
    with _lock:
        threads = list(_loading.values())
    for thread in threads:
        thread.join(timeout)


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


def _rows(conn, collection, chunk_rows, filter=None, unusable=None):
    """(ids, matrix) chunks of the collection's raw vectors (read-only arrays), read on conn; rows
    whose vectors cannot be used are left out, and added to unusable."""
    condition, params = filter.condition() if filter else ("1", [])
    cursor = conn.execute(
        f"select id, embedding from {storage.quote(collection.table)} where {condition} order by rowid", params
    )
    while rows := cursor.fetchmany(chunk_rows):
        kept, matrix, bad = ranking.decode_rows(rows, collection.dimensions)
        if unusable is not None:
            unusable += bad
        yield [row[0] for row in kept], matrix


def _load(conn, collection, version=None) -> _Matrix:
    """The collection's matrix, read on conn in one snapshot (with its version, if not given)."""
    with storage.snapshot(conn):  # one snapshot for the version, the count and the rows
        if version is None:
            version = conn.execute(f"select version from {storage.REGISTRY} where name = ?", [collection.name]).fetchone()[0]
        count = conn.execute(f"select count(*) from {storage.quote(collection.table)}").fetchone()[0]
        # Filled in place: no second copy of a matrix that may take gigabytes.
        matrix = np.empty((count, collection.dimensions), dtype=np.float32)
        ids: list[str] = []
        unusable: list[tuple] = []
        for chunk_ids, chunk in _rows(conn, collection, CHUNK_ROWS, unusable=unusable):
            matrix[len(ids) : len(ids) + len(chunk_ids)] = chunk
            ids.extend(chunk_ids)
    ranking.warn_unusable(collection, unusable)
    matrix = matrix[: len(ids)]
    vectors.normalize_rows(matrix)
    return _Matrix(version, ids, {id: i for i, id in enumerate(ids)}, matrix, len(unusable))


def _chunked_top(collection, query, n, exclude, filter=None):
    best = []
    unusable: list[tuple] = []
    for ids, matrix in _rows(collection.db.conn, collection, CHUNK_ROWS, filter, unusable):
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
