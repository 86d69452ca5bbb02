"""What the side indexes built from a collection's vectors (quantized.py, ann.py) share: the
change log that keeps them in step with the table, and the notice when one cannot answer.

The float32 vectors in the collection's table are the truth; an index is a derivative that can
be dropped and rebuilt at any time. Triggers append the id of every row inserted, deleted, or whose id or vector changes, to a
plain table (seq, id). They only write to that table, so any client can go on writing to the
collection, including ones that cannot load the extensions or libraries an index needs (the
sqlite3 shell); the index catches up from the log before it answers.
"""

import json

from . import jsondata, storage
from .errors import EmbedkitError

EVENTS = ("insert", "update", "delete")
# How long a search waits for another writer's lock to bring an index up to date before it
# searches exactly instead, in milliseconds.
SEARCH_LOCK_WAIT_MS = 1000


def create(conn, table: str, names: dict):
    """The log table names["log"] and the triggers names[event] on table (both if missing)."""
    log_table = storage.quote(names["log"])
    table = storage.quote(table)
    conn.execute(f"create table if not exists {log_table} (seq integer primary key, id text not null)")
    conn.execute(
        f"create trigger if not exists {storage.quote(names['insert'])} after insert on {table} begin "
        f"insert into {log_table} (id) values (new.id); end"
    )
    conn.execute(
        f"create trigger if not exists {storage.quote(names['update'])} after update of id, embedding on {table} "
        f"begin insert into {log_table} (id) values (old.id); "
        f"insert into {log_table} (id) select new.id where new.id is not old.id; end"
    )
    conn.execute(
        f"create trigger if not exists {storage.quote(names['delete'])} after delete on {table} begin "
        f"insert into {log_table} (id) values (old.id); end"
    )


def drop(conn, names: dict):
    for event in EVENTS:
        conn.execute(f"drop trigger if exists {storage.quote(names[event])}")
    conn.execute(f"drop table if exists {storage.quote(names['log'])}")


def read_settings(collection, key: str):
    """The dict under key in the collection's registry settings, or None."""
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
    value = found.get(key) if isinstance(found, dict) else None
    return value if isinstance(value, dict) else None


def write_settings(conn, collection_name: str, key: str, value):
    """Set (or, with None, remove) key in a collection's registry settings."""
    if value is None:
        conn.execute(
            f"update {storage.REGISTRY} set settings = json_remove(settings, '$.{key}') where name = ?",
            [collection_name],
        )
    else:
        conn.execute(
            f"update {storage.REGISTRY} set settings = json_set(settings, '$.{key}', json(?)) where name = ?",
            [jsondata.dumps(value, f"the {key} settings"), collection_name],
        )


_notices: set[tuple] = set()


def notice(collection, index: str, why: str):
    """Say once per process, collection and reason, that index cannot answer and the search is
    exact instead (a warning on the embedkit logger)."""
    key = (collection.db.key, collection.name, index, why.split(" (")[0])
    if key not in _notices:
        _notices.add(key)
        storage.log.warning(
            "embedkit: the %s of collection %r cannot be used: %s; searching exactly instead",
            index, collection.name, why,
        )
