"""The embedkit tables' schema, as numbered migrations applied on open.

sqlite-utils' Migrations runs them and records each in `_embedkit_migrations` (its own
table layout under embedkit's name, so Datasette hides it with the other bookkeeping
tables). Append new migrations to STEPS; never edit an old one.

Whether anything is pending is one query, so opening a current database costs no import of
sqlite-utils; it is loaded only to apply migrations.
"""

import json

from . import fulltext, storage

TABLE = "_embedkit_migrations"
SET = "embedkit"


def m001_registry(conn):
    conn.execute(
        f"""
        create table {storage.REGISTRY} (
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


def m002_sources(conn):
    # Inputs that are split into many items (PDFs, chunked files and rows): what they were
    # when last read, so an unchanged one is neither fetched again, extracted nor re-chunked.
    conn.execute(
        f"""
        create table {storage.SOURCES} (
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


def m003_related(conn):
    # What each collection's related lists were computed with and from, so a re-run redoes
    # only the lists that changed items can affect.
    conn.execute(
        f"""
        create table {storage.RELATED} (
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
        create table {storage.RELATED_ITEMS} (
            collection text not null,
            id text not null,
            -- the item's content hash and what --same groups it by, when its list was made
            signature text not null,
            primary key (collection, id)
        ) without rowid
        """
    )


def m004_fulltext(conn):
    # A keyword (BM25) index over each collection's stored text, kept in sync by triggers:
    # see fulltext.py. Filled from the rows already there.
    for name, table in conn.execute(f"select name, table_name from {storage.REGISTRY}").fetchall():
        if storage.table_exists(conn, table):
            fulltext.ensure(conn, name, table)


def m005_explore(conn):
    # What each collection's clusters and labels (explore/) were made with, so a re-run with the
    # same settings on unchanged items does nothing, and assigning new items knows the filter.
    conn.execute(
        f"""
        create table {storage.EXPLORE} (
            collection text not null,
            kind text not null,  -- clusters or labels
            settings text not null,
            -- the collection's version when computed
            version integer not null,
            computed text not null,
            primary key (collection, kind)
        )
        """
    )


def m006_chunking(conn):
    # Each collection records how it splits (settings' "chunking"), so that a later default
    # never re-splits it. One made before keeps the split most of its sources have, and splits
    # texts too if any of its chunks is a text's (PDF chunks have a page).
    collections = conn.execute(f"select name, table_name from {storage.REGISTRY}").fetchall()
    for name, table in collections:
        split = conn.execute(
            f"select split from {storage.SOURCES} where collection = ? group by split order by count(*) desc limit 1",
            [name],
        ).fetchone()
        if split is None or not storage.table_exists(conn, table):
            continue
        method, size, overlap = split[0].split(":")
        texts = conn.execute(
            f"""
            select 1 from {storage.quote(table)} where json_extract(metadata, '$.page') is null
            and json_extract(metadata, '$.source') in (select source from {storage.SOURCES} where collection = ?)
            limit 1
            """,
            [name],
        ).fetchone()
        chunking = {"method": method, "size": int(size), "overlap": int(overlap), "texts": texts is not None}
        conn.execute(
            f"update {storage.REGISTRY} set settings = json_set(settings, '$.chunking', json(?)) where name = ?",
            [json.dumps(chunking), name],
        )


def collection_table(table: str) -> str:
    """The CREATE TABLE statement of a collection's table."""
    return f"""
        create table {storage.quote(table)} (
            id text primary key,
            embedding blob not null,
            content text,
            metadata text,
            -- the 16-byte digest of the text the vector was made from (items.content_hash);
            -- NULL for a vector that did not come from the collection's model
            content_hash blob,
            -- when the row was last written: unix time, seconds
            updated integer not null
        )
        """


def hash_index(name: str, table: str) -> str:
    """The index that finds a stored vector by the digest of its text."""
    return (
        f"create index {storage.quote('_embedkit_' + name + '_hash')} on {storage.quote(table)} (content_hash) "
        "where content_hash is not null"
    )


def m007_compact_rows(conn):
    # Smaller rows: the content hash as its 16 bytes instead of 32 hex digits (NULL for a
    # vector not made by the collection's model), the time as unix seconds instead of 20
    # characters of ISO 8601; and the registry's model may be NULL (vectors brought without
    # one). Each table is copied with its rowids, so the keyword index stays valid, and its
    # triggers and indexes are made again as they were. migrate() then rewrites the file with
    # storage.PAGE_SIZE pages, which gives the space back.
    conn.create_function("_embedkit_unhex", 1, _unhex, deterministic=True)
    copy = "_embedkit_compacting"
    for name, table in conn.execute(f"select name, table_name from {storage.REGISTRY}").fetchall():
        if not storage.table_exists(conn, table):
            continue
        kept = conn.execute(
            "select name, sql from sqlite_master where tbl_name = ? and type in ('index', 'trigger') "
            "and sql is not null order by type",
            [table],
        ).fetchall()
        conn.execute(collection_table(copy))
        conn.execute(
            f"insert into {copy} (rowid, id, embedding, content, metadata, content_hash, updated) "
            "select rowid, id, embedding, content, metadata, _embedkit_unhex(content_hash), "
            f"coalesce(cast(strftime('%s', updated) as integer), 0) from {storage.quote(table)}"
        )
        conn.execute(f"drop table {storage.quote(table)}")
        # Legacy renaming leaves the rest of the schema alone: it need not parse the tables of
        # extensions this connection may lack (sqlite-vec's vec0).
        conn.execute("pragma legacy_alter_table = on")
        conn.execute(f"alter table {copy} rename to {storage.quote(table)}")
        conn.execute("pragma legacy_alter_table = off")
        for index_or_trigger, sql in kept:
            conn.execute(hash_index(name, table) if index_or_trigger == f"_embedkit_{name}_hash" else sql)
    conn.create_function("_embedkit_unhex", 1, None)
    import sqlite_utils

    sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)[storage.REGISTRY].transform(
        not_null={"model": False}
    )


def _unhex(value):
    if isinstance(value, str):
        try:
            return bytes.fromhex(value)
        except ValueError:
            return None  # not a digest embedkit wrote: the row will be embedded again, never reused
    return value


STEPS = [m001_registry, m002_sources, m003_related, m004_fulltext, m005_explore, m006_chunking, m007_compact_rows]


def applied(conn) -> list:
    """The names of the migrations this database has had, oldest first."""
    if not storage.table_exists(conn, TABLE):
        return []
    columns = {row[1] for row in conn.execute(f"pragma table_info({TABLE})")}
    if "migration_set" not in columns:  # the layout embedkit used before sqlite-utils' Migrations
        return [row[0] for row in conn.execute(f"select name from {TABLE} order by id")]
    return [row[0] for row in conn.execute(f"select name from {TABLE} where migration_set = ? order by id", [SET])]


def pending(conn) -> list:
    done = set(applied(conn))
    return [step.__name__ for step in STEPS if step.__name__ not in done]


def migrate(conn):
    """Bring the embedkit tables up to date; a no-op on a current database."""
    if not pending(conn):
        return
    import sqlite_utils
    from sqlite_utils.migrations import Migrations

    class EmbedkitMigrations(Migrations):
        migrations_table = TABLE

    migrations = EmbedkitMigrations(SET)
    for step in STEPS:
        migrations(name=step.__name__)(lambda db, step=step: step(db.conn))
    # recursive_triggers stays as embedkit's triggers expect (off); plugins are not sqlite-utils' business here.
    db = sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)
    compact = m007_compact_rows.__name__ in pending(conn)
    with storage.transaction(conn):  # one writer upgrades; the others wait, then find nothing to do
        _convert_old_table(conn)
        migrations.apply(db)
    if compact:
        storage.repage(conn)


def _convert_old_table(conn):
    """Give an _embedkit_migrations table of the old layout (id, name, applied) sqlite-utils' columns."""
    if not storage.table_exists(conn, TABLE):
        return
    columns = {row[1] for row in conn.execute(f"pragma table_info({TABLE})")}
    if "migration_set" in columns:
        return
    old = conn.execute(f"select name, applied from {TABLE} order by id").fetchall()
    conn.execute(f"drop table {TABLE}")
    conn.execute(
        f"create table {TABLE} (id integer primary key, migration_set text, name text, applied_at text)"
    )
    conn.execute(f"create unique index idx_{TABLE}_migration_set_name on {TABLE} (migration_set, name)")
    conn.executemany(
        f"insert into {TABLE} (migration_set, name, applied_at) values (?, ?, ?)",
        [(SET, name, applied) for name, applied in old],
    )
