"""SQLite connections, the sqlite-vec extension and small SQL helpers every module shares."""

import contextlib
import logging
import os
from datetime import datetime, timezone

# A SQLite that can load extensions (sqlite-vec): pysqlite3 where it has wheels (sqlite-utils and
# Datasette pick it up too), sqlean.py where it does not (Linux aarch64, Intel macOS); else the
# stdlib module, which often cannot, and searches take numpy's slower path.
try:
    import pysqlite3.dbapi2 as sqlite3
except ImportError:  # pragma: no cover - depends on the platform
    try:
        import sqlean.dbapi2 as sqlite3  # type: ignore[no-redef]
    except ImportError:
        import sqlite3  # type: ignore[no-redef]

log = logging.getLogger("embedkit")

BUSY_TIMEOUT_MS = 5000
# Rows of a float32 vector plus a text chunk are 2-3 KB: 8 KiB pages hold three or four of
# them with little left over, where the default 4 KiB pages fit one and waste almost half.
PAGE_SIZE = 8192
REGISTRY = "_embedkit_collections"
SOURCES = "_embedkit_sources"
RELATED = "_embedkit_related"
RELATED_ITEMS = "_embedkit_related_items"

_vec_unavailable_reason = None
_vec_notice_given = False


def connect(path) -> "sqlite3.Connection":
    """Open a database the way embedkit wants it: WAL, a busy timeout, sqlite-vec if it loads."""
    path = os.fspath(path)
    conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
    conn.execute(f"pragma busy_timeout = {BUSY_TIMEOUT_MS}")
    # Only takes effect on a database with nothing in it yet, so it must come before WAL.
    conn.execute(f"pragma page_size = {PAGE_SIZE}")
    if path != ":memory:" and conn.execute("pragma journal_mode").fetchone()[0] != "wal":
        # Readers (another CLI, Datasette) keep answering while a writer commits.
        conn.execute("pragma journal_mode = wal")
    load_sqlite_vec(conn)
    return conn


def load_sqlite_vec(conn) -> bool:
    """Load sqlite-vec into conn; True when its functions are available."""
    global _vec_unavailable_reason
    if has_sqlite_vec(conn):
        return True
    try:
        import sqlite_vec

        conn.enable_load_extension(True)
        sqlite_vec.load(conn)
        conn.enable_load_extension(False)
        return True
    except Exception as ex:  # AttributeError: a sqlite3 built without extension loading
        _vec_unavailable_reason = (
            "this Python's sqlite3 cannot load extensions; install pysqlite3"
            if isinstance(ex, AttributeError)
            else str(ex)
        )
        return False


def has_sqlite_vec(conn) -> bool:
    try:
        conn.execute("select vec_version()")
        return True
    except Exception:
        return False


def notice_vec_unavailable():
    """Say once per process that searches take the slower path."""
    global _vec_notice_given
    if not _vec_notice_given:
        _vec_notice_given = True
        log.warning(
            "embedkit: sqlite-vec is not available (%s); searching with numpy instead, "
            "which is slower for one-off queries",
            _vec_unavailable_reason or "not loaded on this connection",
        )


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


@contextlib.contextmanager
def transaction(conn):
    """BEGIN IMMEDIATE … COMMIT, rolled back on any exception (Ctrl-C included)."""
    if conn.in_transaction:  # nested: the outer transaction decides
        yield conn
        return
    conn.execute("begin immediate")
    try:
        yield conn
    except BaseException:
        conn.execute("rollback")
        raise
    conn.execute("commit")


# SQLite allows 32766 host parameters; stay well below for old builds.
IN_CHUNK = 500


def chunked(sequence, size):
    """Consecutive slices of sequence, each of at most size items."""
    for start in range(0, len(sequence), size):
        yield sequence[start : start + size]


def select_in(conn, table, columns, key, values):
    """Rows of columns of table whose key column is one of values, asked in chunks SQLite accepts."""
    for chunk in chunked(list(values), IN_CHUNK):
        yield from conn.execute(
            f"select {columns} from {quote(table)} where {key} in ({','.join('?' * len(chunk))})", chunk
        )


def table_exists(conn, name) -> bool:
    return (
        conn.execute(
            "select 1 from sqlite_master where type in ('table', 'view') and name = ?", [name]
        ).fetchone()
        is not None
    )
