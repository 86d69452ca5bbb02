"""SQLite connections, the sqlite-vec extension and the schema migrations."""

import contextlib
import logging
import os
from datetime import datetime, timezone

try:  # pysqlite3 can load extensions where the stdlib module cannot
    import pysqlite3.dbapi2 as sqlite3
except ImportError:  # pragma: no cover - depends on the platform
    import sqlite3

log = logging.getLogger("embedkit")

BUSY_TIMEOUT_MS = 5000
# Rows of a float32 vector plus a text chunk are 2-3 KB: 8 KiB pages hold three or four of
# them with little left over, where the default 4 KiB pages fit one and waste almost half.
PAGE_SIZE = 8192
REGISTRY = "_embedkit_collections"
SOURCES = "_embedkit_sources"
RELATED = "_embedkit_related"
RELATED_ITEMS = "_embedkit_related_items"
MIGRATIONS_TABLE = "_embedkit_migrations"

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


def table_exists(conn, name) -> bool:
    return (
        conn.execute(
            "select 1 from sqlite_master where type in ('table', 'view') and name = ?", [name]
        ).fetchone()
        is not None
    )


# Numbered migrations: each runs once, in order, inside one transaction, and is
# recorded in _embedkit_migrations. Append new ones; never edit an old one.
MIGRATIONS = []


def migration(fn):
    MIGRATIONS.append(fn)
    return fn


@migration
def m001_registry(conn):
    conn.execute(
        f"""
        create table {REGISTRY} (
            name text primary key,
            table_name text not null unique,
            model text not null,
            -- NULL until the first vector arrives, for models that learn it on loading
            dimensions integer,
            query_prefix text not null default '',
            document_prefix text not null default '',
            settings text not null default '{{}}',
            created text not null,
            -- bumped by triggers on every write to the collection's table, so cached
            -- matrices know when they are stale whoever wrote (embedkit, sqlite3, Datasette)
            version integer not null default 0
        )
        """
    )


@migration
def m002_sources(conn):
    # Inputs that are split into many items (PDFs, chunked files and rows): what they were
    # when last read, so an unchanged one is neither fetched again, extracted nor re-chunked.
    conn.execute(
        f"""
        create table {SOURCES} (
            collection text not null,
            source text not null,
            -- of the raw content, and how it was split into items (the chunker's settings)
            digest text not null,
            split text not null,
            etag text,
            last_modified text,
            items integer not null,
            updated text not null,
            primary key (collection, source)
        )
        """
    )


@migration
def m003_related(conn):
    # What each collection's related lists were computed with and from, so a re-run redoes
    # only the lists that changed items can affect.
    conn.execute(
        f"""
        create table {RELATED} (
            collection text primary key,
            settings text not null,
            -- the collection's version when computed: unchanged means nothing to do
            version integer not null,
            computed text not null
        )
        """
    )
    conn.execute(
        f"""
        create table {RELATED_ITEMS} (
            collection text not null,
            id text not null,
            -- the item's content hash and what --same groups it by, when its list was made
            signature text not null,
            primary key (collection, id)
        ) without rowid
        """
    )


@migration
def m004_fulltext(conn):
    # A keyword (BM25) index over each collection's stored text, kept in sync by triggers:
    # see fulltext.py. Filled from the rows already there.
    from . import fulltext

    for name, table in conn.execute(f"select name, table_name from {REGISTRY}").fetchall():
        if table_exists(conn, table):
            fulltext.ensure(conn, name, table)


def schema_version(conn) -> int:
    if not table_exists(conn, MIGRATIONS_TABLE):
        return 0
    return conn.execute(f"select coalesce(max(id), 0) from {MIGRATIONS_TABLE}").fetchone()[0]


def migrate(conn):
    """Bring the embedkit tables up to date; a no-op on a current database."""
    if schema_version(conn) == len(MIGRATIONS):
        return
    with transaction(conn):
        conn.execute(
            f"create table if not exists {MIGRATIONS_TABLE} "
            "(id integer primary key, name text not null, applied text not null)"
        )
        done = schema_version(conn)
        for number, fn in enumerate(MIGRATIONS, 1):
            if number > done:
                fn(conn)
                conn.execute(
                    f"insert into {MIGRATIONS_TABLE} (id, name, applied) values (?, ?, ?)",
                    [number, fn.__name__, now()],
                )
