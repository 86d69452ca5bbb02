"""The databases Datasette was given, looked at once when it starts: one that cannot be served
is reported in the log and set aside, so that it does not stop the others."""

import asyncio
import logging

from .. import storage

log = logging.getLogger("embedkit")

# What SQLite says when a WAL database cannot be read without writing its -shm file beside it.
_NEEDS_WRITING = ("attempt to write a readonly database", "unable to open database file", "readonly database")


def _probe(conn):
    conn.execute("select count(*) from sqlite_master").fetchone()


def _problem(db):
    """Why Datasette cannot read db, or None. Asked on a connection of its own, opened as
    Datasette opens them: Datasette keeps one per thread and database name, and a broken one
    would stay."""
    try:
        conn = db.connect()
    except Exception as ex:  # the driver's Error: pysqlite3's or the stdlib's
        return str(ex)
    try:
        _probe(conn)
        return None
    except Exception as ex:
        return str(ex)
    finally:
        conn.close()


async def check(datasette):
    """Serve every file database that can be read: one in WAL mode in a folder this process
    cannot write to is served immutable; one that is not a database at all is removed."""
    from datasette.database import Database as DatasetteDatabase

    for name, db in list(datasette.databases.items()):
        if db.is_memory or not db.path:
            continue
        problem = await asyncio.to_thread(_problem, db)
        if problem is None:
            continue
        if db.is_mutable and any(text in problem for text in _NEEDS_WRITING) and _readable_immutable(db.path):
            log.warning(
                "embedkit: %s is in WAL mode in a folder this server cannot write to (%s); serving it as "
                "immutable: restart Datasette to see later changes, or serve it with `datasette -i`",
                db.path, problem,
            )
            datasette.remove_database(name)
            datasette.add_database(DatasetteDatabase(datasette, path=db.path, is_mutable=False), name=name,
                                   route=db.route)
            continue
        log.warning("embedkit: not serving %s: %s", db.path, problem)
        datasette.remove_database(name)


def _readable_immutable(path) -> bool:
    try:
        conn = storage.sqlite3.connect(f"file:{path}?immutable=1", uri=True)
        try:
            _probe(conn)
        finally:
            conn.close()
    except storage.sqlite3.Error:
        return False
    return True
