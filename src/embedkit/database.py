"""The Database: a SQLite file holding any number of collections."""

import os
from typing import Any, Literal

from . import (
    ann,
    errors,
    fulltext,
    jsondata,
    llmdb,
    migrations,
    models,
    quantized,
    search,
    sqlfunctions,
    storage,
    windows,
)
from .collection import Collection, validate_name
from .errors import EmbedkitError, ReadOnlyDatabase
from .llmdb import LlmCollection

DEFAULT_PATH = storage.DEFAULT_PATH


class Database:
    """Open (or create) an embeddings database.

    path may be a file path, ":memory:", an open sqlite3/pysqlite3 connection or a
    sqlite_utils.Database.

    read_only: True opens the file for reading only: embedkit then never writes to it, not
    even to upgrade its tables or switch its journal mode, and every write raises
    ReadOnlyDatabase; an older embedkit schema is read as it is (pending_migrations() lists
    what `embedkit migrate` would do). False requires a writable file (ReadOnlyDatabase at once if it is not).
    None (the default) opens it writable if this process may write it and its folder, else
    read-only. With a connection, True promises it is never written through this object.

    lock_timeout: seconds a write waits for another connection's write to finish (default
    EMBEDKIT_LOCK_TIMEOUT, else 60), after which DatabaseLocked is raised. Not used with a
    connection passed in, which keeps its own busy timeout.

    Close it (or use it as a context manager) when done: closing copies the write-ahead log
    into the main file, so that the .db file alone holds everything.
    """

    def __init__(self, path: str | os.PathLike | Any = DEFAULT_PATH, read_only: bool | None = None,
                 lock_timeout: float | None = None):
        # close() closes only a connection this object opened, never the caller's.
        self._owns_connection = isinstance(path, (str, os.PathLike))
        self._closed = False
        # A fault of the file was raised: closing does not report failing to checkpoint as well.
        self.faulted = False
        self.lock_timeout = storage.lock_timeout(lock_timeout)
        # Why writes are refused, for the message that says so.
        self._read_only_why = "opened read-only"
        if self._owns_connection:
            name = os.fspath(path)
            cannot_write = name != ":memory:" and not storage.writable(name)
            if read_only is False and cannot_write:
                raise errors.cannot_write(name)
            if read_only is None and cannot_write and os.path.exists(name):
                read_only, self._read_only_why = True, "read-only here"
            with storage.faults(name, self.lock_timeout):
                self.conn = storage.connect(name, self.lock_timeout, bool(read_only))
        else:
            self.conn = getattr(path, "conn", path)
            storage.load_sqlite_vec(self.conn)
        self.read_only = bool(read_only)
        # The file as the caller named it, for messages; a connection's own file otherwise.
        self.path = os.fspath(path) if self._owns_connection else storage.database_file(self.conn) or ":memory:"
        # Identifies this database for the search cache: the file, or this connection.
        self.key = os.path.realpath(self.path) if self.path != ":memory:" else f"memory:{id(self.conn)}"
        try:
            with storage.faults(self.path, self.lock_timeout):
                # The sqlite3 module behind the connection: its errors are what SQL raises.
                self.sqlite_error = _module_error(self.conn)
                if storage.table_exists(self.conn, storage.REGISTRY) and not self.read_only:
                    migrations.migrate(self.conn)  # upgrade an older embedkit schema in place
                # --sql inputs and Python users can call embedkit_* functions on this connection. A
                # connection that has them already keeps its own (Datasette's are bounded).
                if not sqlfunctions.registered(self.conn):
                    self.register_functions()
        except BaseException:
            if self._owns_connection:
                self.conn.close()
            raise

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Forget cached search matrices and, for a database this object opened, move what the
        write-ahead log holds into the main file and close the connection."""
        if self._closed:
            return
        self._closed = True
        search.forget(self.key)
        if not self._owns_connection:
            return
        try:
            if not self.read_only and self.path != ":memory:":
                storage.checkpoint(self.conn)
        except Exception as ex:  # the changes are safe in the log: say so, and never hide an earlier error
            if not self.faulted:
                fault = errors.from_sqlite(ex, self.path, self.lock_timeout) or ex
                storage.log.warning("embedkit: the changes are kept in %s-wal, but copying them into the file "
                                    "failed: %s", self.path, errors.first_line(fault))
        finally:
            self.conn.close()

    def require_writable(self) -> None:
        """Raise ReadOnlyDatabase, before any work, if this database may not be written."""
        if self.read_only and self._read_only_why == "read-only here":
            raise errors.cannot_write(self.path)
        if self.read_only:
            raise ReadOnlyDatabase(self.path, "the database was opened read-only, so nothing was changed",
                                   "open it without read_only=True to change it")

    def pending_migrations(self) -> list[str]:
        """The schema upgrades this database lacks (only a read_only one can lack any)."""
        if not storage.table_exists(self.conn, storage.REGISTRY):
            return []
        return migrations.pending(self.conn)

    def _registry_rows(self, name=None):
        if not storage.table_exists(self.conn, storage.REGISTRY):
            return []
        cursor = self.conn.execute(
            f"select * from {storage.REGISTRY}" + (" where name = ?" if name is not None else " order by name"),
            [name] if name is not None else [],
        )
        columns = [d[0] for d in cursor.description]
        return [dict(zip(columns, row)) for row in cursor]

    def _all(self, name=None) -> list[Collection]:
        """The collections (or the one named): embedkit's, then those of llm's tables that no
        collection of embedkit's has the name of (see llmdb)."""
        own: list[Collection] = [Collection(self, row) for row in self._registry_rows(name)]
        taken = {c.name for c in own} if name is None else {name} if own else set()
        found: list[Collection] = [LlmCollection(self, row) for row in llmdb.registry_rows(self.conn, taken)
                 if name is None or row["name"] == name]
        return sorted(own + found, key=lambda c: c.name) if name is None else own + found

    @storage.guarded
    def collections(self) -> list[Collection]:
        return self._all()

    @storage.guarded
    def collection_names(self) -> list[str]:
        return [c.name for c in self._all()]

    @storage.guarded
    def has_collection(self, name: str) -> bool:
        return bool(self._all(name))

    @storage.guarded
    def collection(self, name: str) -> Collection:
        """An existing collection."""
        found = self._all(name)
        if not found:
            known = ", ".join(self.collection_names()) or "none"
            raise EmbedkitError(f"no collection named {name!r} in {self.path} (collections: {known})")
        return found[0]

    @storage.guarded
    def create_collection(self, name: str, model: str | None | Literal[False] = None, query_prefix: str = "",
                          document_prefix: str = "", dimensions: int | None = None) -> Collection:
        """A new, empty collection; model is an id, alias, local path or Hugging Face name
        (default all-MiniLM-L6-v2-int8).

        dimensions keeps only the first that many of each vector, renormalised: for
        Matryoshka-trained models, a smaller collection and faster search for a little quality.

        model=False makes a collection without a model, for vectors made elsewhere
        (Collection.upsert_vectors): it is searched by vector, by item or by keyword, not by
        text, and nothing is embedded into it.
        """
        validate_name(name)
        self.require_writable()
        if model is False:
            if dimensions is not None or query_prefix or document_prefix:
                raise EmbedkitError("a collection without a model takes no dimensions or prefixes: nothing embeds its text")
            return self._new_collection(name, None, None)
        embedder = models.get_model(model)
        if dimensions is not None:
            embedder = embedder.truncated(dimensions)
        return self._new_collection(name, embedder.model_id, embedder.dimensions, query_prefix, document_prefix,
                                    {"dimensions": dimensions} if dimensions else {})

    def _new_collection(self, name, model_id, dimensions, query_prefix="", document_prefix="", settings=None):
        """Create a collection recording model_id as it is (None for none): the importers give
        models embedkit may not know, such as the llm model a copied collection came from."""
        validate_name(name)
        self.require_writable()
        # One transaction from the checks on: a name taken leaves the file as it was, with
        # not even embedkit's tables added to it.
        with storage.transaction(self.conn):
            # SQLite names ignore case, and tables, views and indexes share one namespace.
            taken = self.conn.execute(
                "select type, name from sqlite_master where type in ('table', 'view', 'index') "
                "and name = ? collate nocase",
                [name],
            ).fetchone()
            clash = storage.table_exists(self.conn, storage.REGISTRY) and self.conn.execute(
                f"select name from {storage.REGISTRY} where name = ? collate nocase", [name]
            ).fetchone()
            if clash:
                raise EmbedkitError(f"collection {clash[0]!r} already exists")
            if taken:
                raise EmbedkitError(
                    f"{taken[1]!r} is already the name of an existing {taken[0]} in {self.path}, not a collection"
                )
            migrations.migrate(self.conn)
            self.conn.execute(migrations.collection_table(name))
            self.conn.execute(migrations.hash_index(name, name))
            # A random starting version: a collection deleted and created again never
            # matches a matrix cached for the old one.
            self.conn.execute(
                f"""
                insert into {storage.REGISTRY}
                (name, table_name, model, dimensions, query_prefix, document_prefix, settings, created, version)
                values (?, ?, ?, ?, ?, ?, ?, ?, abs(random() % 9007199254740991))
                """,
                [name, name, model_id, dimensions, query_prefix, document_prefix,
                 jsondata.dumps({**(settings or {}), "stemming": fulltext.DEFAULT_STEMMING}), storage.now()],
            )
            create_version_triggers(self.conn, name, name)
            fulltext.ensure(self.conn, name, name)  # the keyword (BM25) index and its triggers
        if not self.conn.in_transaction:
            storage.use_wal(self.conn)  # the first collection in a file another program made
        return self.collection(name)

    def get_or_create_collection(self, name: str, model: str | None = None, dimensions: int | None = None,
                                 **prefixes: str) -> Collection:
        """The collection, created with model if it does not exist; an error if its model,
        prefixes or dimensions differ from those given."""
        if self.has_collection(name):
            collection = self.collection(name)
            collection.check_model(model)
            for kind, prefix in prefixes.items():
                if prefix and prefix != getattr(collection, kind):
                    raise EmbedkitError(
                        f"collection {name!r} was created with {kind.replace('_', ' ')} "
                        f"{getattr(collection, kind)!r}, not {prefix!r}"
                    )
            if dimensions is not None and dimensions != collection.model_dimensions:
                raise EmbedkitError(
                    f"collection {name!r} was created with {collection.model_dimensions or 'all'} "
                    f"of its model's dimensions, not {dimensions}"
                )
            return collection
        return self.create_collection(name, model, dimensions=dimensions, **prefixes)

    @storage.guarded
    def delete_collection(self, name: str) -> None:
        self.require_writable()
        collection = self.collection(name)
        if not collection.managed:
            raise EmbedkitError(f"collection {name!r} is another program's (llm's), read in place: embedkit leaves it be")
        with storage.transaction(self.conn):
            self.conn.execute(f"drop table {storage.quote(collection.table)}")  # and its triggers
            fulltext.drop(self.conn, name)
            windows.drop(self.conn, name)
            quantized.drop_objects(self.conn, name)  # the index's tables (its triggers went with the table)
            ann.drop_objects(self.conn, name)
            self.conn.execute(f"delete from {storage.REGISTRY} where name = ?", [name])
            self.conn.execute(f"delete from {storage.SOURCES} where collection = ?", [name])
            if self.conn.execute(f"select 1 from {storage.RELATED} where collection = ?", [name]).fetchone():
                self.conn.execute(f"drop table if exists {storage.quote(name + '_related')}")
            for table in (storage.RELATED, storage.RELATED_ITEMS):
                self.conn.execute(f"delete from {table} where collection = ?", [name])
            from .explore import tables as explore_tables  # here: exploring is imported when used

            explore_tables.drop(self.conn, name)
        search.forget(self.key, name)
        fulltext.forget(self.key, name)
        ann.remove_files(self, name)

    def register_functions(self) -> None:
        """Make the embedkit_* SQL functions available on this connection."""
        sqlfunctions.register(self.conn)


VERSION_EVENTS = ("insert", "update", "delete")


def version_triggers(name: str) -> list[str]:
    """The triggers that bump a collection's version on every write to its table."""
    return [f"_embedkit_{name}_{event}" for event in VERSION_EVENTS]


def create_version_triggers(conn, name: str, table: str) -> None:
    """Create those of a collection's version triggers that are missing."""
    registry_name = name.replace("'", "''")
    for event, trigger in zip(VERSION_EVENTS, version_triggers(name)):
        conn.execute(
            f"""
            create trigger if not exists {storage.quote(trigger)} after {event} on {storage.quote(table)}
            begin
                update {storage.REGISTRY} set version = version + 1 where name = '{registry_name}';
            end
            """
        )


def _module_error(conn):
    import importlib

    return importlib.import_module(type(conn).__module__.rsplit(".", 1)[0]).Error
