"""A collection: one SQLite table of id, float32 vector, stored text and JSON metadata."""

import json
import re
from dataclasses import dataclass, field

import numpy as np

from . import search, storage, vectors
from .errors import EmbedkitError
from .items import Entry, Item, check_unique_ids, content_hash
from .models import get_model

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$")
RESERVED_PREFIXES = ("_embedkit", "sqlite_")
# SQLite allows 32766 host parameters; stay well below for old builds.
IN_CHUNK = 500


def validate_name(name: str):
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or name.lower().startswith(RESERVED_PREFIXES):
        raise EmbedkitError(
            f"invalid collection name {name!r}: use up to 64 letters, digits, '_' or '-', "
            "not starting with '_embedkit' or 'sqlite_'"
        )


def _chunks(sequence, size):
    for start in range(0, len(sequence), size):
        yield sequence[start : start + size]


def _metadata_json(metadata):
    return json.dumps(metadata, ensure_ascii=False) if metadata else None


@dataclass
class EmbedStats:
    """What embed_multi did: counts per outcome and the reason for each failed item."""

    embedded: int = 0
    reused: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0
    failures: list = field(default_factory=list)

    def fail(self, id, reason):
        self.failed += 1
        self.failures.append((id, reason))

    def summary(self) -> str:
        return (
            f"{self.embedded} embedded, {self.reused} reused, {self.updated} updated, "
            f"{self.unchanged} unchanged, {self.failed} failed"
        )


class Collection:
    """Use Database.collection() or Database.create_collection() to get one."""

    def __init__(self, db, row: dict):
        self.db = db
        self.name = row["name"]
        self.table = row["table_name"]
        self.model_id = row["model"]
        self.dimensions = row["dimensions"]
        self.query_prefix = row["query_prefix"]
        self.document_prefix = row["document_prefix"]

    def __repr__(self):
        return f"<Collection {self.name} model={self.model_id} dimensions={self.dimensions}>"

    @property
    def model(self):
        return get_model(self.model_id)

    def check_model(self, model):
        """Raise unless model (an id or alias) is the collection's own."""
        if model is not None and get_model(model).model_id != self.model_id:
            raise EmbedkitError(
                f"collection {self.name!r} uses model {self.model_id!r}, not {model!r}; "
                "a collection keeps one model"
            )

    # Reading

    def count(self) -> int:
        return self.db.conn.execute(f"select count(*) from {storage.quote(self.table)}").fetchone()[0]

    def __len__(self):
        return self.count()

    def __iter__(self):
        """Every stored item as an Entry (score None), in id order."""
        cursor = self.db.conn.execute(
            f"select id, content, metadata from {storage.quote(self.table)} order by id"
        )
        for id, content, metadata in cursor:
            yield Entry(id, None, content, json.loads(metadata) if metadata else None)

    def __contains__(self, id):
        return self.vector(id, missing_ok=True) is not None

    def get(self, id) -> Entry:
        row = self.db.conn.execute(
            f"select id, content, metadata from {storage.quote(self.table)} where id = ?", [id]
        ).fetchone()
        if row is None:
            raise self._no_item(id)
        return Entry(row[0], None, row[1], json.loads(row[2]) if row[2] else None)

    def vector(self, id, missing_ok=False):
        row = self.db.conn.execute(
            f"select embedding from {storage.quote(self.table)} where id = ?", [id]
        ).fetchone()
        if row is None:
            if missing_ok:
                return None
            raise self._no_item(id)
        return vectors.decode(row[0])

    def version(self) -> int:
        row = self.db.conn.execute(
            f"select version, dimensions from {storage.REGISTRY} where name = ?", [self.name]
        ).fetchone()
        if row is None:
            raise EmbedkitError(f"collection {self.name!r} no longer exists")
        self.dimensions = row[1]
        return row[0]

    def _no_item(self, id):
        return EmbedkitError(f"no item with id {id!r} in collection {self.name!r}")

    # Writing

    def embed(self, id, content, metadata=None, store=False) -> EmbedStats:
        """Embed and store one item (re-embedding only if its content changed)."""
        return self.embed_multi([Item(str(id), content, metadata)], store=store)

    def embed_multi(self, items, store=False, batch_size=100, progress=None) -> EmbedStats:
        """Embed and store many items, calling the model only for content not stored yet.

        Unchanged items cost nothing; changed metadata or store flag rewrites the row
        without embedding; content already stored under another id reuses that vector.
        New vectors are written batch by batch, each batch in its own transaction, so an
        interrupted run keeps what it finished and a re-run completes the rest.
        progress(n) is called as n more items are done.
        """
        items = list(items)
        stats = EmbedStats()
        check_unique_ids(items)
        if batch_size < 1:
            raise EmbedkitError("batch size must be at least 1")
        progress = progress or (lambda n: None)

        # (item, hash, stored content, metadata JSON) for each valid item
        pending = []
        for item in items:
            if item.content is None or not str(item.content).strip():
                stats.fail(item.id, "empty content")
            else:
                pending.append(
                    (item, content_hash(item.content), item.content if store else None, _metadata_json(item.metadata))
                )
        progress(stats.failed)

        existing = self._rows_by_id([p[0].id for p in pending])
        rewrites, new = [], []
        for entry in pending:
            item, digest, stored, metadata = entry
            old = existing.get(item.id)
            if old is not None and old[0] == digest:
                if old[1] == stored and _same_json(old[2], metadata):
                    stats.unchanged += 1
                else:
                    rewrites.append(entry)
            else:
                new.append(entry)
        progress(stats.unchanged)

        with storage.transaction(self.db.conn):
            for entry in rewrites:
                self._update_row(*entry)
        stats.updated += len(rewrites)
        progress(len(rewrites))

        # Content stored before, under another id, or repeated in this input: one vector.
        reusable = self._vectors_by_hash({entry[1] for entry in new})
        to_embed = {}
        reused = []
        for entry in new:
            if entry[1] in reusable:
                reused.append(entry)
            else:
                to_embed.setdefault(entry[1], []).append(entry)
        with storage.transaction(self.db.conn):
            for entry in reused:
                self._upsert_row(*entry, reusable[entry[1]])
        stats.reused += len(reused)
        progress(len(reused))

        # Similar lengths share a batch, so the model pads less.
        groups = sorted(to_embed.values(), key=lambda group: len(group[0][0].content), reverse=True)
        for batch in _chunks(groups, batch_size):
            texts = [self.document_prefix + group[0][0].content for group in batch]
            embeddings = self._embed_checked(texts)
            with storage.transaction(self.db.conn):
                self._record_dimensions(embeddings.shape[1])
                for group, embedding in zip(batch, embeddings):
                    blob = vectors.encode(embedding)
                    for entry in group:
                        self._upsert_row(*entry, blob)
            stats.embedded += len(batch)
            stats.reused += sum(len(group) - 1 for group in batch)
            progress(sum(len(group) for group in batch))
        return stats

    def delete(self, ids) -> int:
        """Delete items by id; returns how many existed."""
        ids = [ids] if isinstance(ids, str) else list(ids)
        deleted = 0
        with storage.transaction(self.db.conn):
            for chunk in _chunks(ids, IN_CHUNK):
                deleted += self.db.conn.execute(
                    f"delete from {storage.quote(self.table)} where id in ({','.join('?' * len(chunk))})",
                    chunk,
                ).rowcount
        return deleted

    def _embed_checked(self, texts) -> np.ndarray:
        embeddings = self.model.embed(texts)
        for text, embedding in zip(texts, embeddings):
            vectors.check(embedding, self.dimensions, f"the vector for {text[:40]!r}")
        return embeddings

    def _record_dimensions(self, dimensions):
        if self.dimensions is None:
            self.db.conn.execute(
                f"update {storage.REGISTRY} set dimensions = ? where name = ?", [dimensions, self.name]
            )
            self.dimensions = dimensions

    def _select_in(self, columns, key, values):
        """Rows of columns whose key column is one of values, asked in chunks SQLite accepts."""
        for chunk in _chunks(list(values), IN_CHUNK):
            yield from self.db.conn.execute(
                f"select {columns} from {storage.quote(self.table)} "
                f"where {key} in ({','.join('?' * len(chunk))})",
                chunk,
            )

    def _rows_by_id(self, ids):
        rows = self._select_in("id, content_hash, content, metadata", "id", ids)
        return {id: (digest, content, metadata) for id, digest, content, metadata in rows}

    def _vectors_by_hash(self, digests):
        # Equal content has equal vectors: any row with the hash will do.
        return dict(self._select_in("content_hash, embedding", "content_hash", digests))

    def _update_row(self, item, digest, stored, metadata):
        self.db.conn.execute(
            f"update {storage.quote(self.table)} set content = ?, metadata = ?, updated = ? where id = ?",
            [stored, metadata, storage.now(), item.id],
        )

    def _upsert_row(self, item, digest, stored, metadata, blob):
        self.db.conn.execute(
            f"""
            insert into {storage.quote(self.table)} (id, embedding, content, metadata, content_hash, updated)
            values (?, ?, ?, ?, ?, ?)
            on conflict (id) do update set embedding = excluded.embedding, content = excluded.content,
                metadata = excluded.metadata, content_hash = excluded.content_hash, updated = excluded.updated
            """,
            [item.id, blob, stored, metadata, digest, storage.now()],
        )

    # Searching

    def similar(self, text, n=10) -> list:
        """The n items most similar to text, embedded with the collection's model."""
        if not text or not text.strip():
            raise EmbedkitError("the query text is empty")
        return self.similar_by_vector(self._embed_checked([self.query_prefix + text])[0], n)

    def similar_by_id(self, id, n=10) -> list:
        """The n items most similar to a stored item, not counting the item itself."""
        return self.similar_by_vector(self.vector(id), n, exclude=id)

    def similar_by_vector(self, vector, n=10, exclude=None) -> list:
        vector = vectors.check(np.asarray(vector, dtype=np.float32), self.dimensions, "the query vector")
        hits = search.top_n(self, vector, n, exclude)
        rows = {
            id: (content, json.loads(metadata) if metadata else None)
            for id, content, metadata in self._select_in("id, content, metadata", "id", [id for id, _ in hits])
        }
        return [Entry(id, score, *rows.get(id, (None, None))) for id, score in hits]


def _same_json(stored, new) -> bool:
    if stored is None or new is None:
        return stored is new
    return stored == new or json.loads(stored) == json.loads(new)
