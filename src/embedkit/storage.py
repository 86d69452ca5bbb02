"""SQLite connections, the sqlite-vec extension and small SQL helpers every module shares."""

import contextlib
import functools
import inspect
import logging
import os
import time
import urllib.parse
from datetime import datetime, timezone

from . import errors

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

# How long a write waits for another connection's write to finish before it gives up, in
# seconds (Database(lock_timeout=...), --lock-timeout, EMBEDKIT_LOCK_TIMEOUT). embedkit's own
# transactions hold the lock for well under a second each (benchmarks/locks.py); the default
# leaves room for a queue of other writers, a checkpoint and a person's sqlite3 session.
LOCK_TIMEOUT = 60.0
# After this long a writer says that it is waiting, and for what.
WAIT_NOTICE_MS = 1000
# How long closing a database keeps trying to copy the write-ahead log into the main file
# while other connections read from it.
CHECKPOINT_SECONDS = 2.0
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


def lock_timeout(seconds=None) -> float:
    """The lock timeout in seconds: seconds if given, else EMBEDKIT_LOCK_TIMEOUT, else LOCK_TIMEOUT."""
    if seconds is None:
        value = os.environ.get("EMBEDKIT_LOCK_TIMEOUT", "")
        try:
            seconds = float(value) if value.strip() else LOCK_TIMEOUT
        except ValueError:
            raise errors.EmbedkitError(f"EMBEDKIT_LOCK_TIMEOUT must be a number of seconds, not {value!r}") from None
    if not seconds >= 0:  # also NaN
        raise errors.EmbedkitError(f"the lock timeout must be a number of seconds from 0 up, not {seconds!r}")
    return float(seconds)


def writable(path) -> bool:
    """Whether this process may write the database at path: the file (if it exists) and its
    folder, where SQLite keeps its journal or write-ahead log beside it."""
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return False
    return os.access(os.path.dirname(path), os.W_OK)


def connect(path, timeout=None, read_only=False) -> "sqlite3.Connection":
    """Open a database the way embedkit wants it: WAL, a lock timeout (seconds, see
    lock_timeout()), sqlite-vec if it loads.

    read_only opens it without ever writing: not the journal mode, not a file beside it.
    """
    path = os.fspath(path)
    timeout = lock_timeout(timeout)
    if read_only and path != ":memory:":
        conn = sqlite3.connect(_read_only_uri(path), uri=True, isolation_level=None, timeout=timeout)
    else:
        conn = sqlite3.connect(path, isolation_level=None, timeout=timeout)
    try:
        if not read_only:
            # Only takes effect on a database with nothing in it yet, so it must come before WAL.
            conn.execute(f"pragma page_size = {PAGE_SIZE}")
            # Another program's file (an llm database searched in place) keeps its journal mode.
            ours = conn.execute(
                "select not exists (select 1 from sqlite_master) "
                f"or exists (select 1 from sqlite_master where name = '{REGISTRY}')"
            ).fetchone()[0]
            if path != ":memory:" and ours:
                use_wal(conn)
        load_sqlite_vec(conn)
    except BaseException:
        conn.close()  # not a database, locked...: the caller gets the error, not a connection
        raise
    return conn


def use_wal(conn):
    """WAL mode (a setting the file keeps): readers (another CLI, Datasette) keep answering
    while a writer commits."""
    if conn.execute("pragma journal_mode").fetchone()[0] not in ("wal", "memory"):
        conn.execute("pragma journal_mode = wal")


def _read_only_uri(path) -> str:
    """A URI that opens path for reading only.

    mode=ro follows writers through the write-ahead log, but in WAL mode SQLite then creates
    the -wal and -shm files, with the database's permissions, and leaves them: beside a file
    nobody may write they would stop its owner's writes even after a chmod. So where nobody
    can be writing (no -wal, and this process may not write the file or its folder), the
    file is opened immutable: read as it is, with no locks and no files made.
    """
    absolute = os.path.abspath(path)
    query = "mode=ro"
    if not os.path.exists(absolute + "-wal") and not writable(absolute):
        query = "immutable=1"
    return "file:" + urllib.parse.quote(absolute) + "?" + query


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
    """BEGIN IMMEDIATE … COMMIT, rolled back on any exception (Ctrl-C included).

    BEGIN waits for another connection's write to finish (up to the connection's busy
    timeout), and says so once it has waited WAIT_NOTICE_MS.
    """
    if conn.in_transaction:  # nested: the outer transaction decides
        yield conn
        return
    _begin(conn)
    try:
        yield conn
        conn.execute("commit")
    except BaseException:
        # SQLite rolls back by itself after some errors (a full disk): then there is nothing to do.
        if conn.in_transaction:
            with contextlib.suppress(Exception):
                conn.execute("rollback")
        raise


@contextlib.contextmanager
def snapshot(conn):
    """A read transaction: every query inside it sees the database as of its first read, while
    writers go on (WAL). Inside the caller's own transaction, that one."""
    if conn.in_transaction:
        yield conn
        return
    conn.execute("begin")
    try:
        yield conn
    finally:
        if conn.in_transaction:
            conn.execute("commit")


@contextlib.contextmanager
def busy_timeout(conn, ms):
    """Wait at most ms milliseconds for a lock, inside the block."""
    before = conn.execute("pragma busy_timeout").fetchone()[0]
    conn.execute(f"pragma busy_timeout = {int(ms)}")
    try:
        yield
    finally:
        conn.execute(f"pragma busy_timeout = {before}")


def _begin(conn):
    total = conn.execute("pragma busy_timeout").fetchone()[0]
    if total <= WAIT_NOTICE_MS:
        conn.execute("begin immediate")
        return
    started = time.monotonic()
    conn.execute(f"pragma busy_timeout = {WAIT_NOTICE_MS}")
    try:
        try:
            conn.execute("begin immediate")
            return
        except Exception as ex:
            if errors.sqlite_code(ex) not in (errors.BUSY, errors.LOCKED):
                raise
        log.warning(
            "embedkit: waiting for %s: another program is writing to it (giving up after %g s; "
            "--lock-timeout or EMBEDKIT_LOCK_TIMEOUT change that)",
            database_file(conn), total / 1000,
        )
        waited = round((time.monotonic() - started) * 1000)
        conn.execute(f"pragma busy_timeout = {max(total - waited, 1)}")
        conn.execute("begin immediate")
    finally:
        conn.execute(f"pragma busy_timeout = {total}")


def checkpoint(conn, seconds=CHECKPOINT_SECONDS) -> bool:
    """Copy what the write-ahead log holds into the main database file, so that the file alone
    (a copy, a backup, an upload) has every committed change; True once it does.

    Never takes a lock or waits for one: a reader still using an older snapshot keeps the
    pages it needs in the log, and this retries for up to seconds while it finishes. What
    it cannot copy stays safe in the log for the next checkpoint (SQLite makes one when the
    last connection closes).
    """
    deadline = time.monotonic() + seconds
    while True:
        try:
            busy, frames, copied = conn.execute("pragma wal_checkpoint(passive)").fetchone()
            if frames == copied or frames == -1:  # everything copied, or not in WAL mode
                return True
        except Exception as ex:  # another connection is checkpointing (or recovering the log)
            if errors.sqlite_code(ex) not in (errors.BUSY, errors.LOCKED):
                raise
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def database_file(conn) -> str:
    """The file of conn's main database ("" for an in-memory one)."""
    return next(row[2] for row in conn.execute("pragma database_list") if row[1] == "main")


@contextlib.contextmanager
def faults(path, timeout=None):
    """Turn a sqlite3 error that is a fault of the file at path (locked, full, damaged...) into
    the errors.DatabaseError that says so, in one line."""
    try:
        yield
    except Exception as ex:
        error = errors.from_sqlite(ex, path, timeout)
        if error is None:
            raise
        raise error from ex


def guarded(fn):
    """For functions and methods whose first argument is a Database or has one (.db): SQLite
    faults come out of them as errors.DatabaseError, generators included."""

    @contextlib.contextmanager
    def faults_of(target):
        db = getattr(target, "db", target)
        try:
            with faults(db.path, db.lock_timeout):
                yield
        except errors.DatabaseError:
            db.faulted = True  # said once: closing it does not say it again
            raise

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator(target, *args, **kwargs):
            with faults_of(target):
                yield from fn(target, *args, **kwargs)

        return generator

    @functools.wraps(fn)
    def wrapper(target, *args, **kwargs):
        with faults_of(target):
            return fn(target, *args, **kwargs)

    return wrapper


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
