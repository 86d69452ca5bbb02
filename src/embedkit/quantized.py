"""Quantised indexes: a sqlite-vec table of int8 or 1-bit codes of a collection's vectors.

The collection's float32 BLOBs stay the truth; the index is a derivative that can be dropped
and rebuilt at any time. A search with the index is two passes: sqlite-vec's KNN over the
codes picks `oversample x n` candidates, then those candidates' float32 vectors are scored
exactly, so the scores are true cosine similarities and only recall can suffer (an item
whose codes rank it outside the candidates is missed).

Objects, for a collection COLL (':' cannot occur in a collection name, so the names of two
collections' indexes never collide, whatever vec0 appends for its shadow tables):

- `_embedkit_index_COLL:vec`: the vec0 virtual table (id text primary key, embedding
  int8[D] or bit[D]) and its shadow tables `_embedkit_index_COLL:vec_*`. Keyed by item id,
  so VACUUM renumbering the collection's rowids changes nothing.
- `_embedkit_index_COLL:log` (seq, id): ids written since the index last caught up.
- triggers `_embedkit_index_COLL:insert`, `:update` (of id or embedding), `:delete` on the
  collection's table, which only append to the log: a client without sqlite-vec (the
  sqlite3 shell) can write to the collection, since nothing it runs touches the vec0 table.
- the settings, as `{"index": {...}}` in the registry's `settings` JSON column.

sync() applies the log (delete, then insert: vec0 has no INSERT OR REPLACE) in one
transaction; searches do it first, and answer from a snapshot in which the log is empty, so
the index is never behind the rows it is compared with. Where that cannot be done (no
sqlite-vec, a read-only connection with changes pending), search falls back to exact.
"""

import json
import math

import numpy as np

from . import jsondata, ranking, storage, vectors
from .errors import EmbedkitError

MODES = ("int8", "bit")
# Candidates per result wanted. Measured (benchmarks/quantized.py, docs/search.md): int8 at 4
# finds the exact top 10 (recall@10 1.0) on all-MiniLM-L6-v2 vectors and on random unit
# vectors; 1-bit codes are much coarser: at 10, recall@10 is 0.98 on MiniLM vectors of real
# text, lower on texts that are all alike, and poor on random vectors.
OVERSAMPLE = {"int8": 4, "bit": 10}
# sqlite-vec's KNN costs grow with k (0.1.9 keeps its top k by repeated selection in every
# chunk of 1,024 rows): past a few hundred candidates an exact scan is as fast, so larger
# requests are left to it. sqlite-vec itself refuses k > 4096.
MAX_CANDIDATES = 400
SQLITE_VEC_MAX_K = 4096
# Rows indexed, and log entries applied, per transaction (benchmarks/locks.py: well under a
# second of holding the write lock each).
BUILD_ROWS = 5_000
LOG_ROWS = 5_000
# How long a search waits for another writer's lock to bring the index up to date before it
# searches exactly instead, in milliseconds.
SEARCH_LOCK_WAIT_MS = 1000
SCALE_SAMPLE_ROWS = 20_000
# int8 codes are round(x / |x| * scale), clipped to +-127; scale maps this quantile of the
# absolute values of unit-length components to 127.
SCALE_QUANTILE = 0.9999
EVENTS = ("insert", "update", "delete")

_notices: set[tuple] = set()


# Names and settings


def names(collection_name: str) -> dict:
    prefix = f"_embedkit_index_{collection_name}:"
    return {
        "vec": prefix + "vec",
        "log": prefix + "log",
        **{event: prefix + event for event in EVENTS},
    }


def settings(collection):
    """The index's settings ({"quantize", "dimensions", "scale", "oversample", "built"}) or None."""
    if not collection.managed:  # read in place from another program's tables: no index of embedkit's
        return None
    row = collection.db.conn.execute(
        f"select settings from {storage.REGISTRY} where name = ?", [collection.name]
    ).fetchone()
    if row is None:
        raise EmbedkitError(f"collection {collection.name!r} no longer exists")
    try:
        found = json.loads(row[0] or "{}")
    except ValueError:
        return None
    index = found.get("index") if isinstance(found, dict) else None
    return index if isinstance(index, dict) and index.get("quantize") in MODES else None


def _write_settings(conn, name, index):
    if index is None:
        conn.execute(
            f"update {storage.REGISTRY} set settings = json_remove(settings, '$.index') where name = ?", [name]
        )
    else:
        conn.execute(
            f"update {storage.REGISTRY} set settings = json_set(settings, '$.index', json(?)) where name = ?",
            [jsondata.dumps(index, "the index settings"), name],
        )


def default_oversample(index) -> int:
    return index.get("oversample") or OVERSAMPLE[index["quantize"]]


# Building, dropping, status


@storage.guarded
def build(collection, quantize, oversample=None, progress=None) -> dict:
    """Build (or rebuild) the collection's index of quantize ("int8" or "bit") codes; returns its
    status(). oversample, if given, is recorded as the index's default. progress(n, total) is
    called as n more items are indexed.

    The rows are indexed BUILD_ROWS to a transaction, so that other writers get in between;
    what they write meanwhile is in the log, which the first search applies. The index is
    used once the last transaction records its settings: until then searches are exact.
    Rows whose vectors cannot be used are left out, with a warning naming them.
    """
    if quantize not in MODES:
        raise EmbedkitError(f"unknown quantisation {quantize!r}: use one of {', '.join(MODES)}")
    if not collection.managed:
        raise EmbedkitError(f"collection {collection.name!r} is read in place: an index needs a copy in embedkit's tables")
    if oversample is not None and (not isinstance(oversample, int) or oversample < 1):
        raise EmbedkitError(f"oversample must be a whole number of at least 1, not {oversample!r}")
    collection.db.require_writable()
    conn = collection.db.conn
    collection.version()  # refreshes the dimensions; raises if the collection is gone
    dims = collection.dimensions
    if dims is None:
        raise EmbedkitError(
            f"collection {collection.name!r} has no vectors yet, so their dimensions are unknown: "
            "embed something first"
        )
    _require_sqlite_vec(conn)
    table = storage.quote(collection.table)
    found = names(collection.name)
    with storage.transaction(conn):
        drop_objects(conn, collection.name)  # the old index, or one a deleted namesake left behind
        _write_settings(conn, collection.name, None)
        index = {
            "quantize": quantize,
            "dimensions": dims,
            "scale": _sample_scale(conn, table, dims) if quantize == "int8" else None,
            "oversample": oversample,
            "built": storage.now(),
        }
        conn.execute(
            f"create virtual table {storage.quote(found['vec'])} "
            f"using vec0(id text primary key, embedding {_column_type(index)})"
        )
        conn.execute(f"create table {storage.quote(found['log'])} (seq integer primary key, id text not null)")
        log_table = storage.quote(found["log"])
        conn.execute(
            f"create trigger {storage.quote(found['insert'])} after insert on {table} begin "
            f"insert into {log_table} (id) values (new.id); end"
        )
        conn.execute(
            f"create trigger {storage.quote(found['update'])} after update of id, embedding on {table} begin "
            f"insert into {log_table} (id) values (old.id); "
            f"insert into {log_table} (id) select new.id where new.id is not old.id; end"
        )
        conn.execute(
            f"create trigger {storage.quote(found['delete'])} after delete on {table} begin "
            f"insert into {log_table} (id) values (old.id); end"
        )
    total = conn.execute(f"select count(*) from {table}").fetchone()[0]
    last, unusable = -(2**63), []
    while rows := conn.execute(
        f"select rowid, id, embedding from {table} where rowid > ? order by rowid limit ?", [last, BUILD_ROWS]
    ).fetchall():
        last = rows[-1][0]
        kept, matrix, bad = ranking.decode_rows([row[1:] for row in rows], dims)
        unusable += bad
        with storage.transaction(conn):
            _insert(conn, found["vec"], index, [row[0] for row in kept], matrix, replace=True)
        if progress is not None:
            progress(len(rows), total)
    with storage.transaction(conn):
        _write_settings(conn, collection.name, index)
    ranking.warn_unusable(collection, unusable)
    return status(collection)


@storage.guarded
def drop(collection) -> bool:
    """Drop the collection's index; False if it had none."""
    conn = collection.db.conn
    had = settings(collection) is not None or storage.table_exists(conn, names(collection.name)["vec"])
    if not had:
        return False
    collection.db.require_writable()
    _require_sqlite_vec(conn)
    with storage.transaction(conn):
        drop_objects(conn, collection.name)
        _write_settings(conn, collection.name, None)
    return True


def drop_objects(conn, collection_name):
    """Drop the index tables and triggers of a collection (name), if there are any.

    Without sqlite-vec on conn the vec0 table cannot be dropped: it is left (with a warning)
    for the next build of a collection of that name, which drops it first.
    """
    found = names(collection_name)
    for event in EVENTS:
        conn.execute(f"drop trigger if exists {storage.quote(found[event])}")
    conn.execute(f"drop table if exists {storage.quote(found['log'])}")
    if storage.table_exists(conn, found["vec"]):
        if storage.load_sqlite_vec(conn):
            conn.execute(f"drop table if exists {storage.quote(found['vec'])}")
        else:
            storage.log.warning(
                "embedkit: sqlite-vec is not available, so the quantised index table %s stays in the "
                "database (harmless; building an index for a collection of that name drops it)",
                found["vec"],
            )


@storage.guarded
def status(collection) -> dict:
    """{"collection", "quantize": None} without an index; with one, also its dimensions, rows
    (None where sqlite-vec is missing), items, pending (changes not yet applied), oversample,
    built and whether it is usable."""
    index = settings(collection)
    result = {"collection": collection.name, "quantize": None}
    if index is None:
        return result
    conn = collection.db.conn
    found = names(collection.name)
    complete = storage.table_exists(conn, found["vec"]) and storage.table_exists(conn, found["log"])
    vec = storage.load_sqlite_vec(conn)
    rows = pending = None
    if complete:
        pending = conn.execute(f"select count(*) from {storage.quote(found['log'])}").fetchone()[0]
        if vec:
            rows = conn.execute(f"select count(*) from {storage.quote(found['vec'])}").fetchone()[0]
    collection.version()  # refreshes the dimensions
    result.update(
        quantize=index["quantize"],
        dimensions=index["dimensions"],
        rows=rows,
        items=collection.count(),
        pending=pending,
        oversample=default_oversample(index),
        built=index.get("built"),
        usable=bool(complete and vec and index["dimensions"] == collection.dimensions),
    )
    return result


# Keeping it in sync


@storage.guarded
def sync(collection):
    """Apply the changes logged since the index was last current, LOG_ROWS to a transaction.

    Returns how many ids were updated: 0 without an index, None when this connection cannot
    apply them (no sqlite-vec, read-only, locked by a writer for longer than the lock
    timeout), which leaves them for a later search or sync. Searches do this themselves;
    calling it after a batch of writes only moves the work out of the next search, and is
    safe anywhere.
    """
    index = settings(collection)
    conn = collection.db.conn
    if index is None or not _tables_present(conn, collection.name):
        return 0
    if collection.db.read_only or not storage.load_sqlite_vec(conn):
        return None
    try:
        return _catch_up(collection, index)
    except collection.db.sqlite_error:
        return None


def _catch_up(collection, index) -> int:
    """Apply the whole log, a transaction per LOG_ROWS entries (one, in the caller's own)."""
    done = 0
    while True:
        with storage.transaction(collection.db.conn):
            applied = _apply_log(collection, index, LOG_ROWS)
        if applied is None:
            return done
        done += applied


def _apply_log(collection, index, limit=None):
    """Apply the first limit entries of the log (all of them: None); how many ids that updated,
    or None if the log was empty."""
    conn = collection.db.conn
    found = names(collection.name)
    log_table = storage.quote(found["log"])
    last = conn.execute(
        f"select max(seq) from (select seq from {log_table} order by seq limit ?)", [-1 if limit is None else limit]
    ).fetchone()[0]
    if last is None:
        return None
    ids = [row[0] for row in conn.execute(f"select distinct id from {log_table} where seq <= ?", [last])]
    vec_table = storage.quote(found["vec"])
    unusable = []
    for chunk in storage.chunked(ids, storage.IN_CHUNK):
        conn.executemany(f"delete from {vec_table} where id = ?", [[id] for id in chunk])
        rows = conn.execute(
            f"select id, embedding from {storage.quote(collection.table)} where id in ({','.join('?' * len(chunk))})",
            chunk,
        ).fetchall()
        kept, matrix, bad = ranking.decode_rows(rows, index["dimensions"])
        unusable += bad
        _insert(conn, found["vec"], index, [row[0] for row in kept], matrix)
    conn.execute(f"delete from {log_table} where seq <= ?", [last])
    ranking.warn_unusable(collection, unusable)
    return len(ids)


# Searching


def candidates(collection, query, k, exclude=None):
    """The ids of the k items whose codes are nearest the query's (best first, exclude left
    out), from an index brought up to date first; None when there is no usable index (see
    top_n)."""
    query = _unit(query)
    return _search(collection, query, k, exclude, lambda ids: [id for id in ids if id != exclude][:k])


def top_n(collection, query, n, exclude=None, oversample=None):
    """[(id, score)] best first, as search.top_n: the n best of oversample x n candidates from
    the index, scored exactly (cosine in float32, ties by id). exclude is an id left out.

    None when the index cannot answer, and the caller should search exactly: the collection
    has no index, sqlite-vec is not loaded, the index is behind and this connection cannot
    write (a read-only Datasette), it no longer matches the collection's dimensions, or
    oversample x n is more than MAX_CANDIDATES (an exact scan is as fast then).
    """
    if n <= 0:
        return []
    query = _unit(query)
    index = settings(collection)
    if index is None:
        return None
    oversample = default_oversample(index) if oversample is None else oversample
    if oversample < 1:
        raise EmbedkitError(f"oversample must be at least 1, not {oversample}")
    k = n * oversample
    if k > MAX_CANDIDATES:
        return None
    return _search(collection, query, k, exclude, lambda ids: _rescore(collection, query, ids, n, exclude), index)


def _search(collection, query, k, exclude, then, index=None):
    conn = collection.db.conn
    index = index if index is not None else settings(collection)
    if index is None or k + (exclude is not None) > SQLITE_VEC_MAX_K:
        return None
    if not storage.load_sqlite_vec(conn):
        storage.notice_vec_unavailable()
        return None
    if not _tables_present(conn, collection.name):
        _notice(collection, "its tables are missing; rebuild it with `embedkit index` or drop it")
        return None
    collection.version()  # refreshes the dimensions
    if index["dimensions"] != collection.dimensions or len(query) != index["dimensions"]:
        _notice(collection, f"it was built for {index['dimensions']} dimensions; rebuild it")
        return None
    k += exclude is not None
    return _in_current_snapshot(collection, index, lambda: then(_knn(collection, index, query, k)))


def _in_current_snapshot(collection, index, fn, attempts=3):
    """fn() in a read transaction whose snapshot has an empty log (the index matches the
    rows), applying the log first; None if that cannot be done."""
    conn = collection.db.conn
    log_table = storage.quote(names(collection.name)["log"])
    if conn.in_transaction:  # the caller's transaction: work inside it
        try:
            _apply_log(collection, index)
        except collection.db.sqlite_error as ex:
            return _cannot_apply(collection, ex)
        return fn()
    for _ in range(attempts):
        with storage.snapshot(conn):
            if not conn.execute(f"select exists (select 1 from {log_table})").fetchone()[0]:
                return fn()
        if collection.db.read_only:
            return _cannot_apply(collection, "the database is read-only here")
        try:
            # A search does not queue behind a long write to catch up: searching exactly is as right.
            with storage.busy_timeout(conn, SEARCH_LOCK_WAIT_MS):
                _catch_up(collection, index)
        except collection.db.sqlite_error as ex:
            return _cannot_apply(collection, ex)
    return None  # others keep writing faster than this catches up: exact search it is


def _cannot_apply(collection, ex):
    _notice(collection, f"it has changes not yet applied and this connection cannot apply them ({ex})")
    return None


def _knn(collection, index, query, k) -> list:
    vec_table = storage.quote(names(collection.name)["vec"])
    code = _encode(index, query[None, :])[0].tobytes()
    rows = collection.db.conn.execute(
        f"select id from {vec_table} where embedding match {_sql_type(index)}(?) and k = ?", [code, k]
    ).fetchall()
    return [row[0] for row in rows]


def _rescore(collection, query, ids, n, exclude):
    kept, matrix = ranking.stored_vectors(collection, [id for id in ids if id != exclude])
    if not kept:
        return []
    scores = vectors.normalize_rows(matrix.copy()) @ query  # as search.py scores: float32, unit rows
    return ranking.best(scores, [row[0] for row in kept], n)


# Codes


def _unit(query) -> np.ndarray:
    query = np.asarray(query, dtype=np.float32)
    return query / np.float32(np.linalg.norm(query))


def _column_type(index) -> str:
    dims = index["dimensions"]
    return f"int8[{dims}]" if index["quantize"] == "int8" else f"bit[{math.ceil(dims / 8) * 8}]"


def _sql_type(index) -> str:
    return "vec_int8" if index["quantize"] == "int8" else "vec_bit"


def _encode(index, matrix: np.ndarray) -> np.ndarray:
    """Codes of the rows of a float32 matrix: one byte per dimension (int8) or per 8 (bit)."""
    if index["quantize"] == "bit":
        # The sign of each component, least significant bit first: what vec_quantize_binary() gives.
        return np.packbits(matrix > 0, axis=1, bitorder="little")
    norms = np.sqrt(np.einsum("ij,ij->i", matrix, matrix, dtype=np.float64))
    norms[norms == 0] = 1
    scaled = matrix / norms[:, None] * index["scale"]
    return np.clip(np.rint(scaled), -127, 127).astype(np.int8)


def _sample_scale(conn, table, dims) -> float:
    """int8 scale from up to SCALE_SAMPLE_ROWS rows spread over the table."""
    last = conn.execute(f"select max(rowid) from {table}").fetchone()[0] or 0
    step = max(1, last // SCALE_SAMPLE_ROWS)
    rows = conn.execute(f"select rowid, embedding from {table} where rowid % ? = 0 limit ?", [step, SCALE_SAMPLE_ROWS])
    _, matrix, _ = ranking.decode_rows(rows.fetchall(), dims)  # the unusable are warned of as the build meets them
    if len(matrix):
        sample = vectors.normalize_rows(matrix.copy())
        top = float(np.quantile(np.abs(sample), SCALE_QUANTILE))
        if top > 0:
            return 127.0 / top
    # Nothing to learn from: unit vectors with independent components, clipped beyond 4.5 sigma.
    return 127.0 * math.sqrt(dims) / 4.5


def _insert(conn, vec_name, index, ids, matrix, replace=False):
    """Insert the codes of the rows of matrix; with replace, an id the table has already (a row
    that another client moved while an index was being built, met twice) is replaced."""
    if not ids:
        return
    rows = list(zip(ids, (code.tobytes() for code in _encode(index, matrix))))
    sql = f"insert into {storage.quote(vec_name)} (id, embedding) values (?, {_sql_type(index)}(?))"
    try:
        conn.executemany(sql, rows)
    except Exception as ex:
        if not replace or "UNIQUE constraint" not in str(ex):
            raise
        # vec0 has no INSERT OR REPLACE, and looks ids up one at a time.
        conn.executemany(f"delete from {storage.quote(vec_name)} where id = ?", [[id] for id in ids])
        conn.executemany(sql, rows)


# Checks


def _require_sqlite_vec(conn):
    if not storage.load_sqlite_vec(conn):
        raise EmbedkitError(
            "quantised indexes need sqlite-vec, which is not available here "
            f"({storage._vec_unavailable_reason or 'not loaded on this connection'})"
        )


def _tables_present(conn, collection_name) -> bool:
    found = names(collection_name)
    return storage.table_exists(conn, found["vec"]) and storage.table_exists(conn, found["log"])


def _notice(collection, why):
    key = (collection.db.key, collection.name, why.split(" (")[0])
    if key not in _notices:
        _notices.add(key)
        storage.log.warning(
            "embedkit: the quantised index of collection %r cannot be used: %s; searching exactly instead",
            collection.name,
            why,
        )
