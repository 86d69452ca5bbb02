"""The ordinary tables explore writes (COLLECTION_clusters, ...), and what each was made with."""

import json
from dataclasses import dataclass

from .. import storage
from ..errors import EmbedkitError

EXPLORE = "_embedkit_explore"


def _ensure(conn):  # TEMPORARY until the migration lands
    conn.execute(f"create table if not exists {EXPLORE} (collection text not null, kind text not null, "
                 "settings text not null, version integer not null, computed text not null, "
                 "primary key (collection, kind))")


@dataclass
class Record:
    settings: dict
    version: int  # the collection's version when computed
    computed: str


def record(collection, kind) -> "Record | None":
    """What the collection's tables of kind ("clusters", "labels") were last made with."""
    conn = collection.db.conn
    if not storage.table_exists(conn, EXPLORE):
        return None
    row = conn.execute(
        f"select settings, version, computed from {EXPLORE} where collection = ? and kind = ?",
        [collection.name, kind],
    ).fetchone()
    return None if row is None else Record(json.loads(row[0]), row[1], row[2])


def check_free(collection, kind, names):
    """Raise unless each table of names is absent or one embedkit made for kind."""
    conn = collection.db.conn
    ours = record(collection, kind) is not None
    for name in names:
        collection_table = conn.execute(f"select 1 from {storage.REGISTRY} where table_name = ?", [name]).fetchone()
        if collection_table or (storage.table_exists(conn, name) and not ours):
            raise EmbedkitError(f"{name} is already a table that embedkit did not make; "
                                f"rename it to store the {kind} of {collection.name!r}")


def replace(collection, kind, tables, settings, version):
    """Write tables ({name: (create statement, rows)}) afresh and record settings, in one transaction."""
    check_free(collection, kind, tables)
    conn = collection.db.conn
    storage.migrate(conn)
    _ensure(conn)
    with storage.transaction(conn):
        for name, (create, rows) in tables.items():
            conn.execute(f"drop table if exists {storage.quote(name)}")
            for statement in create:
                conn.execute(statement.format(table=storage.quote(name), name=name))
            if rows:
                marks = ", ".join("?" * len(rows[0]))
                conn.executemany(f"insert into {storage.quote(name)} values ({marks})", rows)
        save(collection, kind, settings, version)


def save(collection, kind, settings, version):
    collection.db.conn.execute(
        f"insert or replace into {EXPLORE} (collection, kind, settings, version, computed) "
        "values (?, ?, ?, ?, ?)",
        [collection.name, kind, json.dumps(settings, sort_keys=True), version, storage.now()],
    )
