"""A collection: one SQLite table of id, float32 vector, stored text and JSON metadata."""

import json
import re
from dataclasses import dataclass, field

import numpy as np

from . import search, storage, vectors
from .errors import EmbedkitError
from .filters import Filter, metadata_condition
from .items import Entry, Item, check_unique_ids, content_hash
from .sources import Document, Known, TextSource, input_name
from .models import PartialEmbedding, get_model

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$")
RESERVED_PREFIXES = ("_embedkit", "sqlite_")
# SQLite allows 32766 host parameters; stay well below for old builds.
IN_CHUNK = 500
MODES = ("dense", "keyword", "hybrid")
# How far down each ranking hybrid search looks before fusing them.
HYBRID_DEPTH = 100


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
    # Compact: metadata is repeated on every chunk of a document, and every byte is on disk.
    return json.dumps(metadata, ensure_ascii=False, separators=(",", ":")) if metadata else None


@dataclass
class EmbedStats:
    """What embed_multi did: counts per outcome and the reason for each failed item or source."""

    embedded: int = 0
    reused: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0
    # items of changed, deleted or (with sync) vanished sources that are no longer there
    removed: int = 0
    # texts longer than the model reads: only their beginning was embedded
    truncated: int = 0
    failures: list = field(default_factory=list)

    def fail(self, id, reason):
        self.failed += 1
        self.failures.append((id, reason))

    def summary(self) -> str:
        text = (
            f"{self.embedded} embedded, {self.reused} reused, {self.updated} updated, "
            f"{self.unchanged} unchanged, {self.failed} failed"
        )
        return text + (f", {self.removed} removed" if self.removed else "")


@dataclass
class _Entry:
    """One item on its way to a row."""

    item: Item
    hash: str
    stored: "str | None"  # the text, when it is to be stored
    metadata: "str | None"  # as JSON
    blob: bytes = None  # its vector, once known
    how: str = None  # "embedded" or "reused"


@dataclass
class _Plan:
    """The writes one document needs; they happen in one transaction once its vectors are known."""

    document: Document
    position: int
    rewrites: list = field(default_factory=list)  # entries whose row changes but not its vector
    new: list = field(default_factory=list)  # entries needing a vector
    stale: set = field(default_factory=set)  # ids the source had before and no longer has
    missing: int = 0  # entries still waiting for a vector


@dataclass
class _Record:
    """A row of the sources table: what the source was, how many items it gave, how it was split."""

    known: Known
    items: int
    split: str


# The source a row belongs to, when that is a source embedkit recorded (a user's own
# `source` metadata is not one): :name is the collection.
RECORDED_SOURCE = (
    "(case when json_extract(metadata, '$.source') in "
    f"(select source from {storage.SOURCES} where collection = :name) "
    "then json_extract(metadata, '$.source') end)"
)


def _ignore(*args):
    pass


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
        # How many dimensions the model was asked to keep (Matryoshka), or None for all of them.
        self.model_dimensions = json.loads(row.get("settings") or "{}").get("dimensions")

    def __repr__(self):
        return f"<Collection {self.name} model={self.model_id} dimensions={self.dimensions}>"

    @property
    def model(self):
        model = get_model(self.model_id)
        return model.truncated(self.model_dimensions) if self.model_dimensions else model

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

    def chunker(self, method=None, size=None, overlap=None):
        """A Chunker for this collection; by default recursive, 1000 characters, 10% overlap.

        method "tokens" measures chunks in the tokens this collection's model reads, with
        the document prefix counted, and by default makes them as long as the model reads.
        """
        from .chunking import Chunker

        method = method or "recursive"
        length = None
        if method == "tokens":
            model, prefix = self.model, self.document_prefix
            size = size or model.max_tokens
            if size is None:
                model.count_tokens([""])  # says why this model cannot count tokens
            length = lambda text: model.count_tokens([prefix + text])[0]  # noqa: E731
        size = size or 1000
        return Chunker(method, size, size // 10 if overlap is None else overlap, length)

    def embed(self, id, content, metadata=None, store=False) -> EmbedStats:
        """Embed and store one item (re-embedding only if its content changed)."""
        return self.embed_multi([Item(str(id), content, metadata)], store=store)

    def embed_multi(self, inputs, store=False, batch_size=None, progress=None, chunker=None, sync=False,
                    read_progress=None) -> EmbedStats:
        """Embed and store many items, calling the model only for content not stored yet.

        inputs are Items and Sources (such as embedkit.sources.pdf.PdfSource). With a
        chunker, each Item is cut into chunks too and becomes a source named by its id;
        sources without one are split with the default Chunker.

        Unchanged items cost nothing, and an unchanged source is not even read again;
        changed metadata or store flag rewrites the row without embedding; content already
        stored under another id reuses that vector. A source's items are written in one
        transaction that also deletes the items it no longer has. Transactions commit as
        batches complete, so an interrupted run keeps what it finished and a re-run
        completes the rest. With sync, items of sources missing from inputs are deleted.

        A source that cannot be read is counted as failed and nothing of it is written;
        the rest go on. progress(n, total) is called as n more of total items are done
        (total is known once the sources are read), read_progress(n, total) as n more of
        total sources have been read.
        """
        from .chunking import Chunker

        chunker_given, chunker = chunker, chunker or Chunker()
        if batch_size is None:
            batch_size = self.model.texts_per_call
        if batch_size < 1:
            raise EmbedkitError("batch size must be at least 1")
        progress, read_progress = progress or _ignore, read_progress or _ignore
        inputs = [TextSource(i) if chunker_given is not None and isinstance(i, Item) else i for i in inputs]
        names = [input_name(i) for i in inputs]
        check_unique_ids(Item(name, None) for name in names)
        stats = EmbedStats()
        records = self._source_records()
        current = self._items_by_source() if records else {}
        documents = self._read(inputs, chunker, records, current, stats, read_progress)
        check_unique_ids(item for document in documents for item in document.items)
        total = stats.unchanged + sum(len(document.items) for document in documents)
        tick = lambda n: progress(n, total)  # noqa: E731

        failed_sources = stats.failed
        plans = self._plan(documents, store, current, stats)
        tick(stats.unchanged + stats.failed - failed_sources)
        self._write([plan for plan in plans if not plan.missing], stats, records, chunker, tick)

        self._embed_missing(plans, batch_size, stats, records, chunker, tick)
        if sync:
            stats.removed += self._sync(names)
        return stats

    def _read(self, inputs, chunker, records, current, stats, read_progress) -> list:
        """A Document for each input that may need writing; unchanged and failed sources are counted."""
        documents = []
        sources = sum(not isinstance(i, Item) for i in inputs)
        for source in inputs:
            if isinstance(source, Item):
                documents.append(Document(source.id, [source], None))
                continue
            record = records.get(source.name)
            # Read again in full: a source split another way before, or whose items were deleted since.
            complete = (
                record is not None
                and record.split == chunker.signature
                and len(current.get(source.name, ())) == record.items
            )
            try:
                document = source.read(record.known if complete else None, chunker)
            except EmbedkitError as ex:
                stats.fail(source.name, str(ex))
                continue
            finally:
                read_progress(1, sources)
            if document is None or document.items is None:
                stats.unchanged += record.items
                if document is not None:
                    self._record_validators(document)
            elif not document.items:
                stats.fail(source.name, "empty content")
            else:
                documents.append(document)
        return documents

    def _plan(self, documents, store, current, stats) -> list:
        """What each document needs written, with vectors found for content already stored."""
        existing = self._rows_by_id(
            [item.id for document in documents for item in document.items]
            + [document.source for document in documents if document.digest is not None]
        )
        plans = []
        for position, document in enumerate(documents):
            plan = _Plan(document, position)
            for item in document.items:
                if item.content is None or not str(item.content).strip():
                    stats.fail(item.id, "empty content")
                    continue
                entry = _Entry(item, content_hash(item.content), item.content if store else None,
                               _metadata_json(item.metadata))
                old = existing.get(item.id)
                if old is None or old[0] != entry.hash:
                    plan.new.append(entry)
                elif old[1] == entry.stored and _same_json(old[2], entry.metadata):
                    stats.unchanged += 1
                else:
                    plan.rewrites.append(entry)
            # What the source had before: its chunks, or the one item it was before it was split.
            before = set(current.get(document.source, ()))
            if document.source in existing:
                before.add(document.source)
            plan.stale = before - {item.id for item in document.items}
            plans.append(plan)

        reusable = self._vectors_by_hash({entry.hash for plan in plans for entry in plan.new})
        for plan in plans:
            for entry in plan.new:
                if entry.hash in reusable:
                    entry.blob, entry.how = reusable[entry.hash], "reused"
                else:
                    plan.missing += 1
        return plans

    def _embed_missing(self, plans, batch_size, stats, records, chunker, progress):
        """Embed what no stored row had, batch by batch, writing each document once it is complete."""
        # Each distinct text is embedded once. Plain items go longest first, so the model
        # pads less; a source's chunks stay together so it completes, and commits, early.
        groups = {}
        for plan in plans:
            for entry in plan.new:
                if entry.blob is None:
                    groups.setdefault(entry.hash, []).append((plan, entry))

        def order(group):
            plan, entry = group[0]
            split = plan.document.digest is not None
            return split, plan.position if split else 0, -len(entry.item.content)

        model = self.model
        for batch in _chunks(sorted(groups.values(), key=order), batch_size):
            texts = [self.document_prefix + group[0][1].item.content for group in batch]
            try:
                embeddings, failure = dict(enumerate(model.embed(texts))), None
            except PartialEmbedding as ex:
                # Keep what the model did return (documents it completes are written), then stop.
                embeddings, failure = {k: np.asarray(v, dtype=np.float32) for k, v in ex.vectors.items()}, ex
            for position, embedding in embeddings.items():
                vectors.check(embedding, self.dimensions, f"the vector for {texts[position][:40]!r}")
            stats.truncated += model.count_truncated(texts)
            ready = {}
            for position, embedding in embeddings.items():
                blob = vectors.encode(embedding)
                for number, (plan, entry) in enumerate(batch[position]):
                    entry.blob, entry.how = blob, "reused" if number else "embedded"
                    plan.missing -= 1
                    if not plan.missing:
                        ready[plan.position] = plan
            dimensions = len(next(iter(embeddings.values()))) if embeddings else None
            self._write([ready[k] for k in sorted(ready)], stats, records, chunker, progress, dimensions)
            if failure is not None:
                raise failure

    def _write(self, plans, stats, records, chunker, progress, dimensions=None):
        """Write whole documents in one transaction: their rows, stale items and source records."""
        if not plans:
            return
        conn = self.db.conn
        done = 0
        with storage.transaction(conn):
            if dimensions is not None:
                self._record_dimensions(dimensions)
            for plan in plans:
                document = plan.document
                for entry in plan.rewrites:
                    self._update_row(entry)
                for entry in plan.new:
                    self._upsert_row(entry)
                self._delete_ids(plan.stale)
                if document.digest is not None:
                    conn.execute(
                        f"""
                        insert or replace into {storage.SOURCES}
                        (collection, source, digest, split, etag, last_modified, items, updated)
                        values (?, ?, ?, ?, ?, ?, ?, ?)
                        """,
                        [self.name, document.source, document.digest, chunker.signature, document.etag,
                         document.last_modified, len(document.items), storage.now()],
                    )
                elif document.source in records:  # split before, a single item now
                    conn.execute(
                        f"delete from {storage.SOURCES} where collection = ? and source = ?",
                        [self.name, document.source],
                    )
                done += len(plan.rewrites) + len(plan.new)
        for plan in plans:
            stats.updated += len(plan.rewrites)
            stats.embedded += sum(entry.how == "embedded" for entry in plan.new)
            stats.reused += sum(entry.how == "reused" for entry in plan.new)
            stats.removed += len(plan.stale)
        progress(done)

    def _sync(self, names) -> int:
        """Delete the items of every source not named: what an input no longer has."""
        params = {"name": self.name, "names": json.dumps(names)}
        with storage.transaction(self.db.conn):
            removed = self.db.conn.execute(
                f"delete from {storage.quote(self.table)} "
                f"where coalesce({RECORDED_SOURCE}, id) not in (select value from json_each(:names))",
                params,
            ).rowcount
            self.db.conn.execute(
                f"delete from {storage.SOURCES} where collection = :name "
                "and source not in (select value from json_each(:names))",
                params,
            )
        return removed

    def _record_validators(self, document):
        with storage.transaction(self.db.conn):
            self.db.conn.execute(
                f"update {storage.SOURCES} set etag = ?, last_modified = ?, updated = ? "
                "where collection = ? and source = ?",
                [document.etag, document.last_modified, storage.now(), self.name, document.source],
            )

    def _source_records(self) -> dict:
        """source -> _Record for every source recorded for this collection."""
        rows = self.db.conn.execute(
            f"select source, digest, etag, last_modified, items, split from {storage.SOURCES} where collection = ?",
            [self.name],
        )
        return {row[0]: _Record(Known(*row[1:4]), row[4], row[5]) for row in rows}

    def _items_by_source(self) -> dict:
        """source -> ids of its items, for the recorded sources (one scan of the table)."""
        by_source = {}
        rows = self.db.conn.execute(
            f"select {RECORDED_SOURCE} as source, id from {storage.quote(self.table)} where source is not null",
            {"name": self.name},
        )
        for source, id in rows:
            by_source.setdefault(source, set()).add(id)
        return by_source

    def delete(self, ids) -> int:
        """Delete items by id; returns how many existed."""
        ids = [ids] if isinstance(ids, str) else list(ids)
        with storage.transaction(self.db.conn):
            return self._delete_ids(ids)

    def delete_where(self, metadata: dict) -> int:
        """Delete the items whose metadata has all these key/value pairs (e.g. every chunk of
        one source: {"source": "paper.pdf"}); returns how many there were."""
        condition, params = metadata_condition(metadata)
        with storage.transaction(self.db.conn):
            deleted = self.db.conn.execute(
                f"delete from {storage.quote(self.table)} where {condition}", params
            ).rowcount
            # A source with no items left is forgotten: adding it again reads it again.
            self.db.conn.execute(
                f"""
                delete from {storage.SOURCES} where collection = ? and not exists (
                    select 1 from {storage.quote(self.table)} as item
                    where json_extract(item.metadata, '$.source') = {storage.SOURCES}.source)
                """,
                [self.name],
            )
        return deleted

    def _delete_ids(self, ids) -> int:
        deleted = 0
        for chunk in _chunks(list(ids), IN_CHUNK):
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

    def _update_row(self, entry):
        self.db.conn.execute(
            f"update {storage.quote(self.table)} set content = ?, metadata = ?, updated = ? where id = ?",
            [entry.stored, entry.metadata, storage.now(), entry.item.id],
        )

    def _upsert_row(self, entry):
        self.db.conn.execute(
            f"""
            insert into {storage.quote(self.table)} (id, embedding, content, metadata, content_hash, updated)
            values (?, ?, ?, ?, ?, ?)
            on conflict (id) do update set embedding = excluded.embedding, content = excluded.content,
                metadata = excluded.metadata, content_hash = excluded.content_hash, updated = excluded.updated
            """,
            [entry.item.id, entry.blob, entry.stored, entry.metadata, entry.hash, storage.now()],
        )

    # Searching

    def similar(self, text, n=10, unique=None, metadata=None, where=None, min_score=None, mode="dense",
                mmr=None, exact=False) -> list:
        """The n items most similar to text, embedded with the collection's model (after its
        query prefix).

        - unique: a metadata key (such as "source"): only the best item of each distinct value
          of it is returned; items without the key count as distinct.
        - metadata (a dict of key/values) and where (an SQL condition on the table's columns)
          choose the items searched, before ranking: n come back whenever n items match.
        - min_score: leave out results scoring less.
        - mode: "dense" (cosine similarity), "keyword" (BM25 over the stored text) or "hybrid"
          (the two rankings fused by reciprocal rank, see fulltext.RRF_K); scores are then
          BM25 or fused scores, not cosine similarities.
        - mmr: a lambda from 0 to 1 for maximal marginal relevance: results chosen one by one
          for lambda x similarity to the query - (1 - lambda) x similarity to those already
          chosen, so that near-duplicates give way to other items (1 is plain ranking).
        - exact: never use a quantised index (embedkit index), scan every vector.
        """
        if not text or not text.strip():
            raise EmbedkitError("the query text is empty")
        if mode not in MODES:
            raise EmbedkitError(f"unknown search mode {mode!r}: use one of {', '.join(MODES)}")
        vector = None if mode == "keyword" else self._embed_checked([self.query_prefix + text])[0]
        return self._search(vector, text, n, None, unique, Filter(metadata or {}, where), min_score, mode, mmr,
                            exact)

    def similar_by_id(self, id, n=10, unique=None, metadata=None, where=None, min_score=None, mmr=None,
                      exact=False) -> list:
        """The n items most similar to a stored item, not counting the item itself."""
        return self._search(self.vector(id), None, n, id, unique, Filter(metadata or {}, where), min_score,
                            "dense", mmr, exact)

    def similar_by_vector(self, vector, n=10, exclude=None, unique=None, metadata=None, where=None,
                          min_score=None, mmr=None, exact=False) -> list:
        vector = vectors.check(np.asarray(vector, dtype=np.float32), self.dimensions, "the query vector")
        return self._search(vector, None, n, exclude, unique, Filter(metadata or {}, where), min_score, "dense",
                            mmr, exact)

    def _search(self, vector, text, n, exclude, unique, filter, min_score, mode, mmr, exact=False):
        if mmr is not None and not 0 <= mmr <= 1:
            raise EmbedkitError(f"the MMR lambda must be from 0 to 1, not {mmr}")
        # MMR chooses among more candidates than it returns; unique may skip many.
        wanted = n * 4 if unique is not None else max(n * 4, 20) if mmr is not None else n
        while True:
            try:
                hits = self._rank(vector, text, wanted, exclude, filter, mode, exact)
            except Exception as ex:  # the driver's Error, or its Warning for several statements
                if not filter.where or not type(ex).__module__.startswith(("sqlite3", "pysqlite3")):
                    raise
                raise EmbedkitError(f"the condition {filter.where!r} is not valid SQL here: {ex}") from None
            if min_score is not None:
                hits = [(id, score) for id, score in hits if score >= min_score]
            rows = {
                id: (content, json.loads(metadata) if metadata else None)
                for id, content, metadata in self._select_in("id, content, metadata", "id", [id for id, _ in hits])
            }
            results = [Entry(id, score, *rows.get(id, (None, None))) for id, score in hits]
            if unique is not None:
                best = {}
                for entry in results:  # best first, so the first of each value is its best
                    best.setdefault(_group(entry, unique), entry)
                results = list(best.values())
            # Enough to choose from, or nothing more to look at: otherwise look further down.
            if unique is None or len(results) >= n or len(hits) < wanted:
                break
            wanted *= 4
        if mmr is not None:
            results = self._diversify(vector, results, n, mmr, mode)
        return results[:n]

    def _rank(self, vector, text, n, exclude, filter, mode, exact):
        if mode == "dense":
            return search.top_n(self, vector, n, exclude, filter, exact)
        from . import fulltext

        keyword = fulltext.keyword_top(self, text, n if mode == "keyword" else max(n, HYBRID_DEPTH),
                                       *filter.condition())
        if mode == "keyword":
            return keyword
        dense = search.top_n(self, vector, max(n, HYBRID_DEPTH), exclude, filter, exact)
        return fulltext.fuse([[id for id, _ in dense], [id for id, _ in keyword]])[:n]

    def _diversify(self, query, results, n, mmr, mode):
        if query is None:
            raise EmbedkitError("MMR needs vectors: use it with dense or hybrid search")
        if not results:
            return results
        found = {id: vectors.decode(blob) for id, blob in self._select_in("id, embedding", "id", [e.id for e in results])}
        matrix = vectors.normalize_rows(np.stack([found[e.id] for e in results]).astype(np.float32))
        # Dense scores are the similarity to the query already (recomputing them could reorder
        # near-ties); fused hybrid scores are not, so those are measured here.
        relevance = (np.array([e.score for e in results]) if mode == "dense"
                     else matrix @ (query / np.linalg.norm(query)))
        chosen, left = [], list(range(len(results)))
        while left and len(chosen) < n:
            if chosen:
                redundancy = (matrix[left] @ matrix[chosen].T).max(axis=1)
            else:
                redundancy = np.zeros(len(left))
            value = mmr * relevance[left] - (1 - mmr) * redundancy
            best = left[int(np.argmax(value))]  # the first of equals: the better ranked
            chosen.append(best)
            left.remove(best)
        return [results[i] for i in chosen]

    # Related items (related.py): every item's neighbours, computed ahead for static sites

    def compute_related(self, n=10, min_score=None, metadata=None, same=None, progress=None):
        """Store every item's n most similar items in the table COLLECTION_related; a re-run
        redoes only the lists changed items can affect. Returns a RelatedStats.

        metadata (a dict) relates only items having those metadata values; same (a metadata
        key) relates an item only to items with its value of that key.
        """
        from . import related

        return related.compute(self, n, min_score, metadata, same, progress)

    def related(self, id, fields=None) -> dict:
        """{"id", "related": [{"id", "score", ...metadata}]}: the item's stored related list."""
        from . import related

        return related.document(self, id, fields)

    def export_related(self, directory, fields=None, combined=False):
        """Write the related lists to directory as JSON files (see related.export)."""
        from . import related

        return related.export(self, directory, fields, combined)


def _group(entry, key):
    value = (entry.metadata or {}).get(key)
    return ("id", entry.id) if value is None else ("value", json.dumps(value, sort_keys=True))


def _same_json(stored, new) -> bool:
    if stored is None or new is None:
        return stored is new
    return stored == new or json.loads(stored) == json.loads(new)
