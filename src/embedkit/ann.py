"""An approximate nearest-neighbour index of a collection's vectors (HNSW, by usearch), for
collections of millions of items.

The collection's float32 BLOBs stay the truth: the index is a file beside the database that can
be deleted and rebuilt at any time. A search asks the index for `oversample x n` candidates,
then scores those exactly from the table (cosine, float32, ties by id), so scores are true
cosine similarities and only recall can suffer.

For a collection COLL of the database DB:

- `DB-ann/COLL.TOKEN.usearch`: the index, read through a memory map, so a new process answers
  its first query without reading the whole file. TOKEN is new for every file written; a file
  is never changed once written.
- `_embedkit_ann_COLL:keys:BUILD`: (key, id), the usearch key of every id in the file (usearch
  keys are integers). One per build, so a new build fills its own while searches use the old.
- `_embedkit_ann_COLL:log` and the triggers `_embedkit_ann_COLL:insert`, `:update`, `:delete`
  (sideindex.py): the ids written since the file was made, whoever wrote them.
- `{"ann": {...}}` in the registry's settings: the file, its keys table, the last log entry it
  includes and how it was built.

Changes logged since the file was made are not lost: a search leaves the logged ids out of the
index's candidates and scores their current rows exactly with the others. While few are logged
that costs little, and works on read-only connections (Datasette). Past MAX_PENDING, a search
on a connection that can write first folds them into a new file (sync()); one that cannot says
so once and searches exactly.

A build reads one snapshot of the table, writes the file and the keys, and only then, in one
short transaction, records them: a build that fails or is interrupted changes nothing a search
uses, and the exact search goes on working.
"""

import contextlib
import ctypes
import math
import os
import secrets
import sys
import threading
from dataclasses import dataclass

import numpy as np

from . import extras, jsondata, ranking, sideindex, storage, vectors
from .errors import EmbedkitError

LIBRARY = "usearch"
# Stored per vector in the file. Candidates are rescored from the float32 rows, so the index
# only has to rank them roughly: int8 measured as good as float32 at a quarter of the size
# (benchmarks/ann_libraries.py).
DTYPE = "i8"
CONNECTIVITY = 16
EXPANSION_ADD = 128
# Search width and candidates per result, measured (benchmarks/ann.py) on MiniLM vectors of
# real text at 1M: recall@10 0.95 at width 64, 0.97 at 128 (twice the time, still a few ms),
# 0.98 at 256; more candidates per result add little.
EXPANSION_SEARCH = 128
OVERSAMPLE = 4
# Most candidates asked for while looking for n items that a filter matches, before giving up
# and searching exactly (the exact scan of the matching rows).
MAX_CANDIDATES = 20_000
# Changes a search scores beside the index before they must be folded into a new file.
MIN_PENDING = 1_000
PENDING_SHARE = 0.01
BUILD_ROWS = 50_000
# Keys written per transaction while building: about 0.06 s of holding the write lock each.
KEYS_ROWS = 50_000
SUFFIX = ".usearch"

_lock = threading.Lock()
_views: dict[str, object] = {}  # absolute file path -> the memory-mapped usearch Index


# Names and settings


def names(collection_name: str) -> dict:
    prefix = f"_embedkit_ann_{collection_name}:"
    return {"log": prefix + "log", "keys": prefix + "keys", **{e: prefix + e for e in sideindex.EVENTS}}


def directory(db) -> str:
    if db.path == ":memory:" or not db.path:
        raise EmbedkitError("an approximate index is a file beside the database: an in-memory database cannot have one")
    return os.path.abspath(os.fspath(db.path)) + "-ann"


def settings(collection):
    """The index's settings, or None without one."""
    index = sideindex.read_settings(collection, "ann")
    return index if index is not None and index.get("file") else None


def _write_settings(conn, name, index):
    sideindex.write_settings(conn, name, "ann", index)


def _usearch():
    _system_libstdcxx()
    return extras.require("usearch.index", "ann", "the approximate index").Index


def _system_libstdcxx():
    """usearch's compiled module carries its own C++ runtime: loaded into a process before the
    system's, it makes a later `import onnxruntime` (the int8 model) crash the process (usearch
    2.26, onnxruntime 1.32: a segmentation fault). With the system's loaded first, both work."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            ctypes.CDLL("libstdc++.so.6", mode=ctypes.RTLD_GLOBAL)


# Building, dropping, status


@storage.guarded
def build(collection, progress=None) -> dict:
    """Build (or rebuild) the collection's approximate index; returns its status().

    progress(n, total) is called as n more items are indexed. Other clients can read and
    write meanwhile: what they write while the file is made is logged, and caught up with.
    Rows whose vectors cannot be used are left out, with a warning naming them.
    """
    Index = _usearch()
    conn, db = collection.db.conn, collection.db
    db.require_writable()
    folder = directory(db)
    collection.version()  # refreshes the dimensions; raises if the collection is gone
    dims = collection.dimensions
    if dims is None:
        raise EmbedkitError(
            f"collection {collection.name!r} has no vectors yet, so their dimensions are unknown: embed something first"
        )
    found = names(collection.name)
    token = secrets.token_hex(4)
    keys_table = f"{found['keys']}:{token}"
    with storage.transaction(conn):  # from here on every write is logged
        sideindex.create(conn, collection.table, found)
        conn.execute(f"create table {storage.quote(keys_table)} (key integer primary key, id text not null unique)")
    os.makedirs(folder, exist_ok=True)
    file = f"{collection.name}.{token}{SUFFIX}"
    path = os.path.join(folder, file)
    try:
        index = Index(ndim=dims, metric="cos", dtype=DTYPE, connectivity=CONNECTIVITY, expansion_add=EXPANSION_ADD)
        every: list[str] = []  # the ids, in key order
        unusable: list[tuple] = []
        with storage.snapshot(conn):  # one snapshot: the rows, and the log entries they include
            last = conn.execute(f"select coalesce(max(seq), 0) from {storage.quote(found['log'])}").fetchone()[0]
            total = collection.count()
            cursor = conn.execute(f"select id, embedding from {storage.quote(collection.table)} order by rowid")
            while rows := cursor.fetchmany(BUILD_ROWS):
                kept, matrix, bad = ranking.decode_rows(rows, dims)
                unusable += bad
                if kept:
                    index.add(np.arange(len(every), len(every) + len(kept), dtype=np.uint64), matrix,
                              threads=os.cpu_count() or 1)
                every += [row[0] for row in kept]
                if progress is not None:
                    progress(len(rows), total)
        # Not in the snapshot, which would keep writers waiting; KEYS_ROWS to a transaction, so
        # that other writers get in between (no search reads this table before it is recorded).
        for chunk in storage.chunked(list(enumerate(every)), KEYS_ROWS):
            with storage.transaction(conn):
                conn.executemany(f"insert into {storage.quote(keys_table)} (key, id) values (?, ?)", chunk)
        index.save(path + ".tmp")
        os.replace(path + ".tmp", path)
        with storage.transaction(conn):
            old = settings(collection)
            conn.execute(f"delete from {storage.quote(found['log'])} where seq <= ?", [last])
            _write_settings(conn, collection.name, {
                "library": LIBRARY, "dtype": DTYPE, "connectivity": CONNECTIVITY, "dimensions": dims,
                "file": file, "keys": keys_table, "seq": last, "built": storage.now(),
            })
            if old:
                conn.execute(f"drop table if exists {storage.quote(old['keys'])}")
    except BaseException:
        for leftover in (path, path + ".tmp"):
            if os.path.exists(leftover):
                os.remove(leftover)
        with storage.transaction(conn):
            conn.execute(f"drop table if exists {storage.quote(keys_table)}")
        raise
    _remove_unused(collection)
    ranking.warn_unusable(collection, unusable)
    return status(collection)


@storage.guarded
def drop(collection) -> bool:
    """Drop the collection's approximate index (its file, tables and triggers); False if it had none."""
    conn = collection.db.conn
    found = names(collection.name)
    had = settings(collection) is not None or storage.table_exists(conn, found["log"])
    if not had:
        return False
    collection.db.require_writable()
    with storage.transaction(conn):
        drop_objects(conn, collection.name)
        _write_settings(conn, collection.name, None)
    _remove_unused(collection)
    return True


def drop_objects(conn, collection_name):
    """Drop the index's tables and triggers of a collection (name); remove_files() its files."""
    sideindex.drop(conn, names(collection_name))
    for table in _keys_tables(conn, collection_name):
        conn.execute(f"drop table {storage.quote(table)}")


def _keys_tables(conn, collection_name) -> list:
    """The keys tables of every build of the collection's index, the current one included."""
    prefix = names(collection_name)["keys"] + ":"
    found = conn.execute("select name from sqlite_master where type = 'table' and substr(name, 1, ?) = ?",
                         [len(prefix), prefix]).fetchall()
    return [name for (name,) in found]


def _remove_unused(collection):
    """Delete the collection's files and keys tables that the settings no longer name: those of
    earlier builds, and of builds that failed."""
    conn = collection.db.conn
    index = settings(collection)
    remove_files(collection.db, collection.name, keep=index and index["file"])
    stale = [table for table in _keys_tables(conn, collection.name) if index is None or table != index["keys"]]
    if stale:
        with storage.transaction(conn):
            for table in stale:
                conn.execute(f"drop table if exists {storage.quote(table)}")


def remove_files(db, collection_name, keep=None):
    """Delete the index files of a collection (name) but keep, and the folder once empty."""
    try:
        folder = directory(db)
    except EmbedkitError:
        return
    if not os.path.isdir(folder):
        return
    for file in os.listdir(folder):
        # NAME.TOKEN.usearch, and NAME.TOKEN.usearch.tmp of a build that died ('.' is not in names)
        if file.split(".", 1)[0] == collection_name and file != keep:
            _forget_view(os.path.join(folder, file))
            os.remove(os.path.join(folder, file))
    if not os.listdir(folder):
        os.rmdir(folder)


@storage.guarded
def status(collection) -> dict:
    """{"collection", "library": None} without an index; with one, the library and also its file, size in bytes,
    items (in the collection), indexed (in the file; None if it cannot be opened), pending (changes
    not yet in the file), the most that searches score beside it, built, and whether it is usable."""
    index = settings(collection)
    result = {"collection": collection.name, "library": None}
    if index is None:
        return result
    conn = collection.db.conn
    path = os.path.join(directory(collection.db), index["file"])
    pending = conn.execute(f"select count(distinct id) from {storage.quote(names(collection.name)['log'])}").fetchone()[0]
    view = _view(path)
    collection.version()
    items = collection.count()
    result.update(
        library=index["library"],
        dtype=index["dtype"],
        dimensions=index["dimensions"],
        file=path,
        bytes=os.path.getsize(path) if os.path.exists(path) else None,
        items=items,
        indexed=None if view is None else len(view),
        pending=pending,
        max_pending=max_pending(items),
        built=index["built"],
        usable=bool(view is not None and index["dimensions"] == collection.dimensions),
    )
    return result


def max_pending(items: int) -> int:
    return max(MIN_PENDING, int(items * PENDING_SHARE))


# Opening


def _view(path):
    """The index file, memory-mapped (shared by the process's connections); None if missing."""
    with _lock:
        found = _views.get(path)
        if found is None:
            if not os.path.exists(path):
                return None
            try:
                Index = _usearch()
            except extras.MissingExtra:
                return None
            found = _views[path] = Index.restore(path, view=True)
        return found


def _forget_view(path):
    with _lock:
        _views.pop(path, None)


# Keeping it in step


@storage.guarded
def sync(collection) -> int:
    """Fold the changes logged since the file was made into a new file; returns how many ids
    were folded in (0 without an index or changes). Searches do this themselves past
    max_pending() changes; calling it after a large batch of writes moves that work out of a
    search. Raises where it cannot (no usearch, a read-only database)."""
    return _fold(collection)


def _fold(collection) -> int:
    Index = _usearch()
    conn = collection.db.conn
    collection.db.require_writable()
    index = settings(collection)
    if index is None:
        return 0
    collection.version()  # refreshes the dimensions
    if index["dimensions"] != collection.dimensions:
        raise EmbedkitError(f"the approximate index of {collection.name!r} was built for {index['dimensions']} "
                            "dimensions: rebuild it with `embedkit index --ann`")
    found = names(collection.name)
    folder = directory(collection.db)
    old_path = os.path.join(folder, index["file"])
    log_table = storage.quote(found["log"])
    keys_table = storage.quote(index["keys"])
    with storage.snapshot(conn):
        last = conn.execute(f"select coalesce(max(seq), 0) from {log_table}").fetchone()[0]
        ids = [row[0] for row in conn.execute(f"select distinct id from {log_table} where seq <= ?", [last])]
        if not ids:
            return 0
        known = dict(conn.execute(f"select id, key from {keys_table} where id in (select value from json_each(?))",
                                  [jsondata.dumps(ids)]))
        kept, matrix = ranking.stored_vectors(collection, ids)  # the unusable are removed from the file
        next_key = conn.execute(f"select coalesce(max(key), -1) + 1 from {keys_table}").fetchone()[0]
    if not os.path.exists(old_path):
        raise EmbedkitError(f"the approximate index file {old_path} is missing: rebuild it with `embedkit index --ann`")
    file = f"{collection.name}.{secrets.token_hex(4)}{SUFFIX}"
    path = os.path.join(folder, file)
    current = Index.restore(old_path, view=False)
    gone = np.array([known[id] for id in ids if id in known], dtype=np.uint64)
    if len(gone):
        current.remove(gone)
    added = {}  # id -> its key: the one it had, or a new one
    if kept:
        found_ids = [row[0] for row in kept]
        for id in found_ids:
            if id in known:
                added[id] = known[id]
            else:
                added[id], next_key = next_key, next_key + 1
        current.add(np.array([added[id] for id in found_ids], dtype=np.uint64), matrix)
    current.save(path + ".tmp")
    del current
    os.replace(path + ".tmp", path)
    try:
        with storage.transaction(conn):
            now = settings(collection)
            if now is None or now["file"] != index["file"]:  # another process folded or rebuilt first
                os.remove(path)
                return 0
            removed = [id for id in ids if id in known and id not in added]
            conn.execute(f"delete from {keys_table} where id in (select value from json_each(?))",
                         [jsondata.dumps(removed)])
            conn.executemany(
                f"insert into {keys_table} (key, id) values (?, ?)",
                [(key, id) for id, key in added.items() if id not in known],
            )
            conn.execute(f"delete from {log_table} where seq <= ?", [last])
            _write_settings(conn, collection.name, {**index, "file": file, "seq": last})
    except BaseException:
        if os.path.exists(path):
            os.remove(path)
        raise
    _remove_unused(collection)
    return len(ids)


# Searching


def top_n(collection, query, n, exclude=None, filter=None, oversample=None):
    """[(id, score)] best first, as search.top_n: the n best of the index's candidates and
    the changes not yet in it, scored exactly. With a filter (a filters.Filter), candidates
    are asked for in growing numbers until n match.

    None when the index cannot answer and the caller should search exactly: no index, usearch
    missing, the file missing or built for other dimensions, more changes pending than a
    search takes on a connection that cannot fold them, or a filter matching too few of the
    nearest MAX_CANDIDATES items.
    """
    if n <= 0:
        return []
    index = settings(collection)
    if index is None:
        return None
    query = np.asarray(query, dtype=np.float32)
    query = query / np.float32(np.linalg.norm(query))
    try:
        _usearch()
    except extras.MissingExtra as ex:
        sideindex.notice(collection, "approximate index", str(ex))
        return None
    collection.version()
    if index["dimensions"] != collection.dimensions or len(query) != index["dimensions"]:
        sideindex.notice(collection, "approximate index", f"it was built for {index['dimensions']} dimensions; rebuild it")
        return None
    oversample = OVERSAMPLE if oversample is None else oversample
    conn = collection.db.conn
    for attempt in range(2):
        own = not conn.in_transaction
        if own:
            conn.execute("begin")  # one snapshot: settings, log, keys and rows agree
        try:
            return _search_snapshot(collection, query, n, exclude, filter, oversample, own)
        except _Behind:
            pass
        finally:
            if own:
                conn.execute("commit")
        if attempt or conn.in_transaction:
            break
        if collection.db.read_only:
            sideindex.notice(collection, "approximate index",
                             "it has more changes not yet in it than a search takes, and the database is read-only here")
            return None
        try:
            # A search does not queue behind a long write to fold them in: searching exactly is as right.
            with storage.busy_timeout(conn, sideindex.SEARCH_LOCK_WAIT_MS):
                _fold(collection)
        except (EmbedkitError, collection.db.sqlite_error, OSError) as ex:
            sideindex.notice(collection, "approximate index",
                             f"it has more changes not yet in it than a search takes, and they cannot be folded in here ({ex})")
            return None
    return None


class _Behind(Exception):
    """More changes are pending than a search scores beside the index."""


def _search_snapshot(collection, query, n, exclude, filter, oversample, shared):
    conn = collection.db.conn
    index = settings(collection)
    if index is None:
        return None
    path = os.path.join(directory(collection.db), index["file"])
    view = _view(path)
    if view is None:
        sideindex.notice(collection, "approximate index", f"its file {path} is missing; rebuild it with `embedkit index --ann`")
        return None
    changes = _changes(collection, index, max_pending(len(view)), shared)
    wanted = n + (exclude is not None)
    k = min(len(view), wanted * oversample)
    condition, params = filter.condition() if filter else ("1", [])
    # The changed rows are scored from their current vectors, whatever the file holds for them.
    keep = [i for i, id in enumerate(changes.ids) if id != exclude]
    if filter and keep:
        matching = {row[0] for row in conn.execute(
            f"select id from {storage.quote(collection.table)} where id in (select value from json_each(?)) "
            f"and ({condition})", [jsondata.dumps([changes.ids[i] for i in keep]), *params])}
        keep = [i for i in keep if changes.ids[i] in matching]
    rows: list = []
    seen = 0  # candidates from the file looked at so far
    while True:
        view.expansion_search = max(EXPANSION_SEARCH, k)
        keys = view.search(query, k).keys[seen:].tolist() if k else []
        # The candidates' rows that the filter matches, in one statement, through the file's keys
        # (the condition names the table's columns as they are).
        found = conn.execute(
            f"select id, embedding from {storage.quote(collection.table)} where id in "
            f"(select known.id from json_each(?) join {storage.quote(index['keys'])} as known on known.key = value) "
            f"and ({condition})",
            [jsondata.dumps(keys), *params],
        ).fetchall() if keys else []
        rows += [row for row in found if row[0] not in changes.pending and row[0] != exclude]
        seen += len(keys)
        if not filter or len(rows) + len(keep) >= n or seen < k or k >= len(view):
            break
        if k >= MAX_CANDIDATES:
            return None  # the filter matches too few nearby items: the exact scan of them is better
        # Ask for enough candidates that n should match, at the share matched so far.
        share = max(len(rows), 1) / seen
        k = min(len(view), MAX_CANDIDATES, max(k * 4, math.ceil(2 * n / share)))
    kept, matrix, unusable = ranking.decode_rows(rows, index["dimensions"])
    ranking.warn_unusable(collection, unusable)
    ids = [row[0] for row in kept] + [changes.ids[i] for i in keep]
    parts = ([vectors.normalize_rows(matrix.copy())] if kept else []) + ([changes.matrix[keep]] if keep else [])
    if not parts:
        return []
    return ranking.best(np.concatenate(parts) @ query, ids, n)


@dataclass
class _Changes:
    """The rows changed since the index file was written: what the log holds, read once per
    state of the log (a process searching again does not read them again)."""

    file: str
    log: tuple  # (last seq, entries): changes only when the log does
    pending: set  # every id logged: the file's vectors for them are not to be used
    ids: list  # those of them still in the table
    matrix: np.ndarray  # their unit rows


_held: dict[tuple, _Changes] = {}


def _changes(collection, index, most, shared) -> _Changes:
    conn = collection.db.conn
    log_table = storage.quote(names(collection.name)["log"])
    log = tuple(conn.execute(f"select coalesce(max(seq), 0), count(*) from {log_table}").fetchone())
    key = (collection.db.key, collection.name)
    held = _held.get(key)
    if held is not None and held.file == index["file"] and held.log == log:
        return held
    pending = {row[0] for row in conn.execute(f"select distinct id from {log_table}")}
    if len(pending) > most:
        raise _Behind
    kept, matrix = ranking.stored_vectors(collection, pending)  # changed to unusable vectors: left out
    changes = _Changes(index["file"], log, pending, [row[0] for row in kept], vectors.normalize_rows(matrix.copy()))
    if shared:  # read in a snapshot of committed rows: the next search can use it
        _held[key] = changes
    return changes


