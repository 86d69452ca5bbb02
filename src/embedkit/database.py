"""The Database: a SQLite file holding any number of collections."""

import json
import os
from typing import Any

from . import fulltext, migrations, models, quantized, search, sqlfunctions, storage, windows
from .collection import Collection, validate_name
from .errors import EmbedkitError
from .explore import tables as explore_tables

DEFAULT_PATH = storage.DEFAULT_PATH


class Database:
    """Open (or create) an embeddings database.

    path may be a file path, ":memory:", an open sqlite3/pysqlite3 connection or a
    sqlite_utils.Database. read_only never writes: an older embedkit schema is read as it is
    (pending_migrations() lists what `embedkit migrate` would do) and a file is opened
    read-only, its journal mode untouched.
    """

    def __init__(self, path: str | os.PathLike | Any = DEFAULT_PATH, read_only: bool = False):
        # close() closes only a connection this object opened, never the caller's.
        self._owns_connection = isinstance(path, (str, os.PathLike))
        self.read_only = read_only
        if self._owns_connection:
            self.conn = storage.connect(path, read_only=read_only)
        else:
            self.conn = getattr(path, "conn", path)
            storage.load_sqlite_vec(self.conn)
        main = next(row for row in self.conn.execute("pragma database_list") if row[1] == "main")
        self.path = main[2] or ":memory:"
        # The sqlite3 module behind the connection: its errors are what SQL raises.
        self.sqlite_error = _module_error(self.conn)
        # Identifies this database for the search cache: the file, or this connection.
        self.key = os.path.realpath(main[2]) if main[2] else f"memory:{id(self.conn)}"
        if storage.table_exists(self.conn, storage.REGISTRY) and not read_only:
            migrations.migrate(self.conn)  # upgrade an older embedkit schema in place
        # --sql inputs and Python users can call embedkit_* functions on this connection. A
        # connection that has them already keeps its own (Datasette's are bounded).
        if not sqlfunctions.registered(self.conn):
            self.register_functions()

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        search.forget(self.key)
        if self._owns_connection:
            self.conn.close()

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

    def collections(self) -> list[Collection]:
        return [Collection(self, row) for row in self._registry_rows()]

    def collection_names(self) -> list[str]:
        return [row["name"] for row in self._registry_rows()]

    def has_collection(self, name: str) -> bool:
        return bool(self._registry_rows(name))

    def collection(self, name: str) -> Collection:
        """An existing collection."""
        rows = self._registry_rows(name)
        if not rows:
            known = ", ".join(self.collection_names()) or "none"
            raise EmbedkitError(f"no collection named {name!r} in {self.path} (collections: {known})")
        return Collection(self, rows[0])

    def create_collection(self, name: str, model: str | None = None, query_prefix: str = "",
                          document_prefix: str = "", dimensions: int | None = None) -> Collection:
        """A new, empty collection; model is an id, alias, local path or Hugging Face name
        (default all-MiniLM-L6-v2-int8).

        dimensions keeps only the first that many of each vector, renormalised: for
        Matryoshka-trained models, a smaller collection and faster search for a little quality.
        """
        validate_name(name)
        embedder = models.get_model(model)
        if dimensions is not None:
            embedder = embedder.truncated(dimensions)
        migrations.migrate(self.conn)
        with storage.transaction(self.conn):
            # SQLite names ignore case, and tables, views and indexes share one namespace.
            clash = self.conn.execute(
                f"select name from {storage.REGISTRY} where name = ? collate nocase", [name]
            ).fetchone()
            if clash:
                raise EmbedkitError(f"collection {clash[0]!r} already exists")
            taken = self.conn.execute(
                "select type, name from sqlite_master where type in ('table', 'view', 'index') "
                "and name = ? collate nocase",
                [name],
            ).fetchone()
            if taken:
                raise EmbedkitError(
                    f"{taken[1]!r} is already the name of an existing {taken[0]} in {self.path}, not a collection"
                )
            table = storage.quote(name)
            self.conn.execute(
                f"""
                create table {table} (
                    id text primary key,
                    embedding blob not null,
                    content text,
                    metadata text,
                    content_hash text not null,
                    updated text not null
                )
                """
            )
            self.conn.execute(
                f"create index {storage.quote('_embedkit_' + name + '_hash')} on {table} (content_hash)"
            )
            # A random starting version: a collection deleted and created again never
            # matches a matrix cached for the old one.
            self.conn.execute(
                f"""
                insert into {storage.REGISTRY}
                (name, table_name, model, dimensions, query_prefix, document_prefix, settings, created, version)
                values (?, ?, ?, ?, ?, ?, ?, ?, abs(random() % 9007199254740991))
                """,
                [name, name, embedder.model_id, embedder.dimensions, query_prefix, document_prefix,
                 json.dumps({**({"dimensions": dimensions} if dimensions else {}),
                             "stemming": fulltext.DEFAULT_STEMMING}), storage.now()],
            )
            registry_name = name.replace("'", "''")
            for event in ("insert", "update", "delete"):
                self.conn.execute(
                    f"""
                    create trigger {storage.quote(f'_embedkit_{name}_{event}')} after {event} on {table}
                    begin
                        update {storage.REGISTRY} set version = version + 1 where name = '{registry_name}';
                    end
                    """
                )
            fulltext.ensure(self.conn, name, name)  # the keyword (BM25) index and its triggers
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

    def delete_collection(self, name: str) -> None:
        collection = self.collection(name)
        with storage.transaction(self.conn):
            self.conn.execute(f"drop table {storage.quote(collection.table)}")  # and its triggers
            fulltext.drop(self.conn, name)
            windows.drop(self.conn, name)
            quantized.drop_objects(self.conn, name)  # the index's tables (its triggers went with the table)
            self.conn.execute(f"delete from {storage.REGISTRY} where name = ?", [name])
            self.conn.execute(f"delete from {storage.SOURCES} where collection = ?", [name])
            if self.conn.execute(f"select 1 from {storage.RELATED} where collection = ?", [name]).fetchone():
                self.conn.execute(f"drop table if exists {storage.quote(name + '_related')}")
            for table in (storage.RELATED, storage.RELATED_ITEMS):
                self.conn.execute(f"delete from {table} where collection = ?", [name])
            explore_tables.drop(self.conn, name)
        search.forget(self.key, name)
        fulltext.forget(self.key, name)

    def register_functions(self) -> None:
        """Make the embedkit_* SQL functions available on this connection."""
        sqlfunctions.register(self.conn)


def _module_error(conn):
    import importlib

    return importlib.import_module(type(conn).__module__.rsplit(".", 1)[0]).Error
