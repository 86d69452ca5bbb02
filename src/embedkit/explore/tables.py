"""The ordinary tables explore writes (COLLECTION_clusters, ...), and what each was made with."""

import json
from dataclasses import dataclass

from .. import jsondata, migrations, storage
from ..errors import EmbedkitError

# kind -> the tables it writes, by collection name
TABLES = {"clusters": ("{}_clusters", "{}_cluster_info"), "labels": ("{}_labels",)}


def names(collection_name, kind) -> tuple:
    return tuple(pattern.format(collection_name) for pattern in TABLES[kind])


@dataclass
class Record:
    settings: dict
    version: int  # the collection's version when computed
    computed: str


def record(collection, kind) -> "Record | None":
    """What the collection's tables of kind ("clusters", "labels") were last made with."""
    conn = collection.db.conn
    if not storage.table_exists(conn, storage.EXPLORE):
        return None
    row = conn.execute(
        f"select settings, version, computed from {storage.EXPLORE} where collection = ? and kind = ?",
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
    migrations.migrate(conn)
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
        f"insert or replace into {storage.EXPLORE} (collection, kind, settings, version, computed) "
        "values (?, ?, ?, ?, ?)",
        [collection.name, kind, jsondata.dumps(settings, "the settings", sort_keys=True), version, storage.now()],
    )


def drop(conn, collection_name):
    """Drop the tables explore made for a collection (being deleted) and forget them."""
    if not storage.table_exists(conn, storage.EXPLORE):
        return
    kinds = conn.execute(f"select kind from {storage.EXPLORE} where collection = ?", [collection_name]).fetchall()
    for (kind,) in kinds:
        for name in names(collection_name, kind):
            conn.execute(f"drop table if exists {storage.quote(name)}")
    conn.execute(f"delete from {storage.EXPLORE} where collection = ?", [collection_name])
