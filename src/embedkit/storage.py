"""SQLite connections, the sqlite-vec extension and small SQL helpers every module shares."""

import contextlib
import logging
import os
import time
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
# Rows of a float32 vector plus a text chunk are 2-3 KB, and the space a page has left
# when the next row does not fit is lost: on average half a row per page. 64 KiB pages (the
# largest SQLite has) lose 2% of a collection's table, 8 KiB pages 8-15%, the default
# 4 KiB ones almost half (benchmarks/size.py). Each table and index takes at least a page,
# 64 KiB, which a few thousand rows make up for.
PAGE_SIZE = 65536
# The database commands use unless told otherwise (-d, EMBEDKIT_DATABASE).
DEFAULT_PATH = "embeddings.db"
REGISTRY = "_embedkit_collections"
SOURCES = "_embedkit_sources"
RELATED = "_embedkit_related"
RELATED_ITEMS = "_embedkit_related_items"
EXPLORE = "_embedkit_explore"

_vec_unavailable_reason = None
_vec_notice_given = False


def connect(path) -> "sqlite3.Connection":
    """Open a database the way embedkit wants it: WAL, a busy timeout, sqlite-vec if it loads."""
    path = os.fspath(path)
    conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
    conn.execute(f"pragma busy_timeout = {BUSY_TIMEOUT_MS}")
    # Only takes effect on a database with nothing in it yet, so it must come before WAL.
    conn.execute(f"pragma page_size = {PAGE_SIZE}")
    # Another program's file (an llm database searched in place) keeps its journal mode.
    ours = conn.execute(
        f"select not exists (select 1 from sqlite_master) or exists (select 1 from sqlite_master where name = '{REGISTRY}')"
    ).fetchone()[0]
    if path != ":memory:" and ours:
        use_wal(conn)
    load_sqlite_vec(conn)
    return conn


def use_wal(conn):
    """WAL mode (a setting the file keeps): readers (another CLI, Datasette) keep answering
    while a writer commits."""
    if conn.execute("pragma journal_mode").fetchone()[0] not in ("wal", "memory"):
        conn.execute("pragma journal_mode = wal")


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


def repage(conn) -> bool:
    """Rewrite a database file with PAGE_SIZE pages and no free ones (VACUUM); False, with a
    warning, when another connection is using it. The page size cannot change in WAL mode,
    so the file leaves it for the VACUUM."""
    main = next(row for row in conn.execute("pragma database_list") if row[1] == "main")
    if not main[2] or conn.in_transaction:
        return False
    wal = conn.execute("pragma journal_mode").fetchone()[0] == "wal"
    try:
        if wal:
            conn.execute("pragma journal_mode = delete")
        conn.execute(f"pragma page_size = {PAGE_SIZE}")
        conn.execute("vacuum")
        return True
    except Exception as ex:  # the connection's own module's error: "database is locked"
        log.warning(
            "embedkit: %s was upgraded but not compacted (%s); to give the space back, when nothing else has it "
            "open, run: sqlite3 %s 'pragma journal_mode = delete; pragma page_size = %d; vacuum; pragma journal_mode = wal'",
            main[2], ex, main[2], PAGE_SIZE,
        )
        return False
    finally:
        if wal:
            conn.execute("pragma journal_mode = wal")


def unix_time() -> int:
    """When a row is written, as collection tables record it: unix time, seconds."""
    return int(time.time())


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
