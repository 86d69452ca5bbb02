"""llm's embeddings databases, read in place.

llm (https://llm.datasette.io) keeps all its collections in one table, `embeddings`
(collection_id, id, embedding, content, content_blob, content_hash, metadata, updated), and
their names and models in `collections`. Its vectors are the BLOBs embedkit stores, so
embedkit searches them where they are: each llm collection becomes a read-only Collection
whose table is a temporary view of its rows. A temporary view lives in the connection, not
in the file: opening an llm database writes nothing to it, and works read-only too.

What needs embedkit's own tables (writes, the keyword index, quantised indexes, related
lists) needs a copy: `embedkit import-llm` (importers/llm.py).
"""

import itertools
import json

from . import storage
from .collection import Collection
from .errors import EmbedkitError

COLLECTIONS = "collections"
EMBEDDINGS = "embeddings"
COLUMNS = {
    COLLECTIONS: {"id", "name", "model"},
    EMBEDDINGS: {"collection_id", "id", "embedding", "content", "content_hash", "metadata", "updated"},
}
# llm's own OpenAI embedding models, as embedkit names them: (model, dimensions kept). The
# shortened ones ask the API for fewer dimensions, as embedkit's dimensions setting does.
OPENAI = {
    "text-embedding-ada-002": ("openai/text-embedding-ada-002", None),
    "text-embedding-3-small": ("openai/text-embedding-3-small", None),
    "text-embedding-3-large": ("openai/text-embedding-3-large", None),
    "text-embedding-3-small-512": ("openai/text-embedding-3-small", 512),
    "text-embedding-3-large-256": ("openai/text-embedding-3-large", 256),
    "text-embedding-3-large-1024": ("openai/text-embedding-3-large", 1024),
}
# llm's content_hash: the MD5 digest of the text (models.py names the schemes).
HASH = "md5"

# Searches tell a changed collection by its version; an llm collection has no counter that
# every writer bumps, so each look at it is a new version and nothing is cached.
_versions = itertools.count(1)


def is_llm_database(conn) -> bool:
    """Whether conn's main database has llm's embeddings tables."""
    for table, columns in COLUMNS.items():
        found = {row[1] for row in conn.execute(f"pragma main.table_info({storage.quote(table)})")}
        if not columns <= found:
            return False
    return True


def model_for(llm_model: str):
    """(embedkit model id, dimensions kept or None) for a model id llm recorded; the id as
    it is when embedkit does not know it (then searching by text says so)."""
    if llm_model in OPENAI:
        return OPENAI[llm_model]
    from . import models

    try:
        return models.canonical_id(llm_model), None
    except EmbedkitError:
        return llm_model, None


def view_name(name: str) -> str:
    return f"_embedkit_llm_{name}"


def registry_rows(conn, taken=()) -> list:
    """A registry row (as Collection takes them) for each llm collection whose name is not in
    taken, with the temporary view that is its table."""
    if not is_llm_database(conn):
        return []
    rows = []
    for id, name, model in conn.execute(f"select id, name, model from main.{COLLECTIONS} order by name").fetchall():
        if name in taken:
            continue
        view = view_name(name)
        conn.execute(
            f"create temp view if not exists {storage.quote(view)} as "
            "select rowid as rowid, id, embedding, content, metadata, content_hash, updated "
            f"from main.{EMBEDDINGS} where collection_id = {int(id)}"
        )
        dimensions = conn.execute(
            f"select length(embedding) / 4 from main.{EMBEDDINGS} where collection_id = ? limit 1", [id]
        ).fetchone()
        model_id, kept = model_for(model)
        settings = {"hash": HASH, "llm": {"collection_id": id, "model": model}}
        if kept:
            settings["dimensions"] = kept
        rows.append({
            "name": name,
            "table_name": view,
            "model": model_id,
            "dimensions": dimensions[0] if dimensions else None,
            "query_prefix": "",
            "document_prefix": "",
            "settings": json.dumps(settings),
        })
    return rows


class LlmCollection(Collection):
    """An llm collection, searched where it is: by text, id or vector, with filters, from
    Python, the CLI and Datasette. Changing it needs a copy (embedkit import-llm)."""

    managed = False

    def __init__(self, db, row: dict):
        super().__init__(db, row)
        # The collection's id in llm's tables: its rows are those of `embeddings` with it.
        self.llm_id = json.loads(row["settings"])["llm"]["collection_id"]

    def version(self) -> int:
        return next(_versions)

    def _read_only(self, what):
        return EmbedkitError(
            f"collection {self.name!r} is llm's, read in place from {self.db.path}: {what} needs a copy "
            f"made with: embedkit import-llm {self.db.path} {self.name}"
        )

    def embed_multi(self, *args, **kwargs):
        raise self._read_only("embedding into it")

    def upsert_vectors(self, *args, **kwargs):
        raise self._read_only("storing vectors in it")

    def delete(self, *args, **kwargs):
        raise self._read_only("deleting from it")

    def delete_where(self, *args, **kwargs):
        raise self._read_only("deleting from it")

    def compute_related(self, *args, **kwargs):
        raise self._read_only("computing related items")

    def related(self, *args, **kwargs):
        raise self._read_only("related items")

    def export_related(self, *args, **kwargs):
        raise self._read_only("related items")
