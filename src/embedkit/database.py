"""The Database: a SQLite file holding any number of collections."""

import json
import os
from typing import Any, Literal

from . import fulltext, llmdb, migrations, models, quantized, search, sqlfunctions, storage
from .collection import Collection, validate_name
from .errors import EmbedkitError
from .explore import tables as explore_tables
from .llmdb import LlmCollection

DEFAULT_PATH = storage.DEFAULT_PATH


class Database:
    """Open (or create) an embeddings database.

    path may be a file path, ":memory:", an open sqlite3/pysqlite3 connection or a
    sqlite_utils.Database.
    """

    def __init__(self, path: str | os.PathLike | Any = DEFAULT_PATH):
        # close() closes only a connection this object opened, never the caller's.
        self._owns_connection = isinstance(path, (str, os.PathLike))
        if self._owns_connection:
            self.conn = storage.connect(path)
        else:
            self.conn = getattr(path, "conn", path)
            storage.load_sqlite_vec(self.conn)
        main = next(row for row in self.conn.execute("pragma database_list") if row[1] == "main")
        self.path = main[2] or ":memory:"
        # The sqlite3 module behind the connection: its errors are what SQL raises.
        self.sqlite_error = _module_error(self.conn)
        # Identifies this database for the search cache: the file, or this connection.
        self.key = os.path.realpath(main[2]) if main[2] else f"memory:{id(self.conn)}"
        if storage.table_exists(self.conn, storage.REGISTRY):
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

    def collections(self) -> list[Collection]:
        return self._all()

    def collection_names(self) -> list[str]:
        return [c.name for c in self._all()]

    def has_collection(self, name: str) -> bool:
        return bool(self._all(name))

    def collection(self, name: str) -> Collection:
        """An existing collection."""
        found = self._all(name)
        if not found:
            known = ", ".join(self.collection_names()) or "none"
            raise EmbedkitError(f"no collection named {name!r} in {self.path} (collections: {known})")
        return found[0]

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
            table = storage.quote(name)
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
                 json.dumps({**(settings or {}), "stemming": fulltext.DEFAULT_STEMMING}), storage.now()],
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

    def delete_collection(self, name: str) -> None:
        collection = self.collection(name)
        if not collection.managed:
            raise EmbedkitError(f"collection {name!r} is another program's (llm's), read in place: embedkit leaves it be")
        with storage.transaction(self.conn):
            self.conn.execute(f"drop table {storage.quote(collection.table)}")  # and its triggers
            fulltext.drop(self.conn, name)
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
