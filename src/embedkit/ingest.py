"""Ingestion: how embed_multi turns inputs into rows, embedding only what no row has yet.

Inputs are Items and Sources (sources/). Each source is read (unless recorded as unchanged),
its items planned against the rows already stored (unchanged, rewritten, reused by content
hash, or in need of a vector), and written document by document in one transaction each, as
soon as the vectors of all its items are known: an interrupted run keeps what it finished.
"""

import contextlib
import json
import signal
import threading
from dataclasses import dataclass, field

import numpy as np

from . import bulkwrite, storage, vectors
from .errors import EmbedkitError
from .items import Item, check_unique_ids, content_hash, metadata_json, same_json
from .models import PartialEmbedding
from .sources import Chunk, Document, Known, TextSource, input_name


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
    # documents (sources split into items, such as PDFs) written whole
    documents: int = 0
    # windows of long texts embedded (collections with windows on)
    windows: int = 0
    failures: list = field(default_factory=list)

    def fail(self, id, reason):
        self.failed += 1
        self.failures.append((id, reason))

    def summary(self) -> str:
        text = (
            f"{self.embedded} embedded, {self.reused} reused, {self.updated} updated, "
            f"{self.unchanged} unchanged, {self.failed} failed"
        )
        text += f", {self.removed} removed" if self.removed else ""
        return text + (f", {self.windows} windows" if self.windows else "")


# Rows written per transaction at most, unless one document has more (benchmarks/locks.py).
WRITE_ROWS = 1000


@dataclass
class _Entry:
    """One item on its way to a row."""

    item: Item
    hash: bytes
    stored: str | None  # the text, when it is to be stored
    metadata: str | None  # as JSON
    blob: bytes | None = None  # its vector, once known
    how: str | None = None  # "embedded" or "reused"


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


class Interrupted(KeyboardInterrupt):
    """embed_multi stopped by KeyboardInterrupt (Ctrl-C, or a signal turned into one): what
    it finished is committed, in whole documents, and stats counts it; a re-run does the rest."""

    def __init__(self, stats: EmbedStats, documents: bool):
        super().__init__()
        self.stats = stats
        # whether the run had documents (sources split into items), or only plain items
        self.documents = documents

    def kept(self) -> str:
        """What the interrupted run wrote: "3 documents" or "120 items"."""
        stats = self.stats
        count, noun = (stats.documents, "document") if self.documents else (
            stats.embedded + stats.reused + stats.updated, "item")
        return f"{count} {noun}{'s' * (count != 1)}"


def embed_multi(collection, inputs, store=False, batch_size=None, progress=None, chunker=None, sync=False,
                read_progress=None, document_progress=None, split_texts=None, model=None) -> EmbedStats:
    """Collection.embed_multi: see its documentation. split_texts (default: when a chunker is
    given or the collection records that it splits texts) cuts each Item into chunks too."""
    if model is None:
        model = collection.model
    elif model.model_id != collection.model_id:
        raise EmbedkitError(f"collection {collection.name!r} uses model {collection.model_id!r}, not {model.model_id!r}")
    if batch_size is None:
        batch_size = model.texts_per_call
    if batch_size < 1:
        raise EmbedkitError("batch size must be at least 1")
    progress, read_progress = progress or _ignore, read_progress or _ignore
    writer = _Writer(collection, model)
    if split_texts is None:
        split_texts = chunker is not None or bool((collection.chunking or {}).get("texts"))
    inputs = [TextSource(i) if split_texts and isinstance(i, Item) else i for i in inputs]
    names = [input_name(i) for i in inputs]
    check_unique_ids(Item(name, None) for name in names)
    sources = sum(not isinstance(i, Item) for i in inputs)
    if sources:
        chunker = chunker or collection.chunker()
        if chunker.late:
            collection.model.check_late_chunking()
            writer.late = True
        writer.record_chunking(chunker, split_texts)
    stats = EmbedStats()
    if document_progress is not None and sources:
        writer.documents_done = lambda n: document_progress(n, sources)
    try:
        records = writer.source_records()
        current = writer.items_by_source() if records else {}
        documents = writer.read(inputs, chunker, records, current, stats, read_progress)
        check_unique_ids(item for document in documents for item in document.items)
        total = stats.unchanged + sum(len(document.items) for document in documents)
        writer.items_done = lambda n: progress(n, total)

        failed_sources = stats.failed
        plans = writer.plan(documents, store, current, stats)
        ready = sum(len(plan.rewrites) + len(plan.new) - plan.missing for plan in plans)
        writer.items_done(stats.unchanged + stats.failed - failed_sources + ready)
        writer.write([plan for plan in plans if not plan.missing], stats, records, chunker)
        writer.embed_missing(plans, batch_size, stats, records, chunker)
    except KeyboardInterrupt:
        raise Interrupted(stats, bool(sources)) from None
    if sync:
        stats.removed += writer.sync(names)
    return stats


def delete_ids(collection, ids) -> int:
    """Delete items by id (in the caller's transaction); returns how many existed."""
    deleted = 0
    for chunk in storage.chunked(list(ids), storage.IN_CHUNK):
        deleted += collection.db.conn.execute(
            f"delete from {storage.quote(collection.table)} where id in ({','.join('?' * len(chunk))})",
            chunk,
        ).rowcount
    return deleted


class _Writer:
    """The reads and writes of one embed_multi run on a collection."""

    def __init__(self, collection, model):
        self.collection, self.model = collection, model
        self.conn = collection.db.conn
        # progress: called with how many more items, and documents, are done
        self.items_done = self.documents_done = _ignore
        # whether chunks are late-chunked (Chunker.late)
        self.late = False

    def read(self, inputs, chunker, records, current, stats, read_progress) -> list:
        """A Document for each input that may need writing; unchanged and failed sources are counted."""
        documents = []
        sources = sum(not isinstance(i, Item) for i in inputs)
        if sources:
            read_progress(0, sources)
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
                self.documents_done(1)
                continue
            finally:
                read_progress(1, sources)
            if document is None or document.items is None:
                stats.unchanged += record.items
                if document is not None:
                    self.record_validators(document)
                self.documents_done(1)
            elif not document.items:
                stats.fail(source.name, "empty content")
                self.documents_done(1)
            else:
                documents.append(document)
        return documents

    def plan(self, documents, store, current, stats) -> list:
        """What each document needs written, with vectors found for content already stored."""
        existing = self.rows_by_id(
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
                digest = (item.late_hash(self.collection.hash) if self.late and isinstance(item, Chunk)
                          else content_hash(item.content, self.collection.hash))
                entry = _Entry(item, digest, item.content if store else None,
                               metadata_json(item.metadata, f"item {item.id!r}: metadata"))
                old = existing.get(item.id)
                # A row without a hash holds a vector from elsewhere: embedded again, never reused.
                if old is None or old[0] != entry.hash:
                    plan.new.append(entry)
                elif old[1] == entry.stored and same_json(old[2], entry.metadata):
                    stats.unchanged += 1
                else:
                    plan.rewrites.append(entry)
            # What the source had before: its chunks, or the one item it was before it was split.
            before = set(current.get(document.source, ()))
            if document.source in existing:
                before.add(document.source)
            plan.stale = before - {item.id for item in document.items}
            plans.append(plan)

        reusable = self.vectors_by_hash({entry.hash for plan in plans for entry in plan.new})
        for plan in plans:
            for entry in plan.new:
                if entry.hash in reusable:
                    entry.blob, entry.how = reusable[entry.hash], "reused"
                else:
                    plan.missing += 1
        return plans

    def embed_missing(self, plans, batch_size, stats, records, chunker):
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
        for batch in storage.chunked(sorted(groups.values(), key=order), batch_size):
            items = [group[0][1].item for group in batch]
            texts = [self.collection.document_prefix + item.content for item in items]
            late = {i for i, item in enumerate(items) if self.late and isinstance(item, Chunk)}
            plain = [i for i in range(len(items)) if i not in late]
            embeddings, failure = self._late_vectors(model, items, sorted(late)), None
            try:
                embeddings.update(zip(plain, model.embed([texts[i] for i in plain]) if plain else []))
            except PartialEmbedding as ex:
                # Keep what the model did return (documents it completes are written), then stop.
                embeddings.update((plain[k], np.asarray(v, dtype=np.float32)) for k, v in ex.vectors.items())
                failure = ex
            vectors.check_all(embeddings, self.collection.dimensions,
                              lambda position, texts=texts: f"the vector for {texts[position][:40]!r}")
            # Late chunks are read whole, in passes: nothing of them is cut off.
            stats.truncated += model.count_truncated([texts[i] for i in plain])
            self.items_done(sum(len(batch[position]) for position in embeddings))
            ready = {}
            for position, embedding in embeddings.items():
                blob = vectors.encode(embedding)
                for number, (plan, entry) in enumerate(batch[position]):
                    entry.blob, entry.how = blob, "reused" if number else "embedded"
                    plan.missing -= 1
                    if not plan.missing:
                        ready[plan.position] = plan
            dimensions = len(next(iter(embeddings.values()))) if embeddings else None
            self.write([ready[k] for k in sorted(ready)], stats, records, chunker, dimensions)
            if failure is not None:
                raise failure

    def _late_vectors(self, model, items, positions) -> dict:
        """position -> vector of the Chunks at positions among items, each text's chunks pooled
        from one reading of the whole text (EmbeddingModel.embed_late)."""
        prefix = self.collection.document_prefix
        texts: dict[str, tuple[str, list]] = {}
        for position in positions:
            chunk = items[position]
            start = len(prefix) + chunk.start
            texts.setdefault(chunk.text_hash, (prefix + chunk.text, []))[1].append((position, (start, start + len(chunk.content))))
        pairs = list(texts.values())
        late = model.embed_late_many([(text, [span for _, span in spans]) for text, spans in pairs]) if pairs else []
        return {position: vector for (_, spans), result in zip(pairs, late)
                for (position, _), vector in zip(spans, result)}

    def write(self, plans, stats, records, chunker, dimensions=None):
        """Write whole documents, each in one transaction with its rows, stale items and source
        record, about WRITE_ROWS rows to a transaction so that other writers get in between."""
        group, rows = [], 0
        for plan in plans:
            group.append(plan)
            rows += len(plan.rewrites) + len(plan.new) + len(plan.stale)
            if rows >= WRITE_ROWS:
                self._write(group, stats, records, chunker, dimensions)
                group, rows = [], 0
        if group:
            self._write(group, stats, records, chunker, dimensions)

    def _write(self, plans, stats, records, chunker, dimensions):
        conn = self.conn
        now = storage.unix_time()
        # Counted before a signal held during the commit takes effect: what was committed is kept.
        with _uninterrupted():
            with storage.transaction(conn):
                if dimensions is not None:
                    bulkwrite.record_dimensions(self.collection, dimensions)
                # All the documents' rows at once: a statement per kind of write, not per document.
                rows = bulkwrite.Writer(conn, self.collection.name, self.collection.table)
                rows.delete([id for plan in plans for id in plan.stale])
                rows.update_text([(e.item.id, e.stored, e.metadata, now) for plan in plans for e in plan.rewrites])
                rows.upsert([(e.item.id, e.blob, e.stored, e.metadata, e.hash, now)
                             for plan in plans for e in plan.new])
                for plan in plans:
                    document = plan.document
                    if document.digest is not None:
                        conn.execute(
                            f"""
                            insert or replace into {storage.SOURCES}
                            (collection, source, digest, split, etag, last_modified, items, updated)
                            values (?, ?, ?, ?, ?, ?, ?, ?)
                            """,
                            [self.collection.name, document.source, document.digest, chunker.signature,
                             document.etag, document.last_modified, len(document.items), storage.now()],
                        )
                    elif document.source in records:  # split before, a single item now
                        conn.execute(
                            f"delete from {storage.SOURCES} where collection = ? and source = ?",
                            [self.collection.name, document.source],
                        )
                rows.finish()
            written = sum(plan.document.digest is not None for plan in plans)
            stats.documents += written
            for plan in plans:
                stats.updated += len(plan.rewrites)
                stats.embedded += sum(entry.how == "embedded" for entry in plan.new)
                stats.reused += sum(entry.how == "reused" for entry in plan.new)
                stats.removed += len(plan.stale)
            self.documents_done(written)

    def sync(self, names) -> int:
        """Delete the items of every source not named: what an input no longer has."""
        params = {"name": self.collection.name, "names": json.dumps(names)}
        with storage.transaction(self.conn):
            removed = self.conn.execute(
                f"delete from {storage.quote(self.collection.table)} "
                f"where coalesce({RECORDED_SOURCE}, id) not in (select value from json_each(:names))",
                params,
            ).rowcount
            self.conn.execute(
                f"delete from {storage.SOURCES} where collection = :name "
                "and source not in (select value from json_each(:names))",
                params,
            )
        return removed

    def record_validators(self, document):
        with storage.transaction(self.conn):
            self.conn.execute(
                f"update {storage.SOURCES} set etag = ?, last_modified = ?, updated = ? "
                "where collection = ? and source = ?",
                [document.etag, document.last_modified, storage.now(), self.collection.name, document.source],
            )

    def source_records(self) -> dict:
        """source -> _Record for every source recorded for this collection."""
        rows = self.conn.execute(
            f"select source, digest, etag, last_modified, items, split from {storage.SOURCES} where collection = ?",
            [self.collection.name],
        )
        return {row[0]: _Record(Known(*row[1:4]), row[4], row[5]) for row in rows}

    def items_by_source(self) -> dict:
        """source -> ids of its items, for the recorded sources (one scan of the table)."""
        by_source: dict[str, set] = {}
        rows = self.conn.execute(
            f"select {RECORDED_SOURCE} as source, id from {storage.quote(self.collection.table)} where source is not null",
            {"name": self.collection.name},
        )
        for source, id in rows:
            by_source.setdefault(source, set()).add(id)
        return by_source

    def record_chunking(self, chunker, texts):
        """Record how this collection splits, for later runs: the settings it was given, or
        the default it was first split with (a later default may differ)."""
        chunking = {**chunker.settings, "texts": texts}
        if chunking == self.collection.chunking:
            return
        with storage.transaction(self.conn):
            self.conn.execute(
                f"update {storage.REGISTRY} set settings = json_set(settings, '$.chunking', json(?)) where name = ?",
                [json.dumps(chunking), self.collection.name],
            )
        self.collection.chunking = chunking

    def select_in(self, columns, key, values):
        return storage.select_in(self.conn, self.collection.table, columns, key, values)

    def rows_by_id(self, ids):
        rows = self.select_in("id, content_hash, content, metadata", "id", ids)
        return {id: (digest, content, metadata) for id, digest, content, metadata in rows}

    def vectors_by_hash(self, digests):
        # Equal content has equal vectors: any row with the hash will do.
        return dict(self.select_in("content_hash, embedding", "content_hash", digests))


@contextlib.contextmanager
def _uninterrupted():
    """Hold Ctrl-C and SIGTERM while documents are written: the transaction commits, then the
    signal takes effect as it would have (a KeyboardInterrupt, or whatever its handler does)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals are handled in the main thread only: nothing can interrupt this one
        return
    held = []
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig, handler in previous.items():
        if handler is not None:  # None: set outside Python, which cannot restore it
            signal.signal(sig, lambda number, frame: held.append(number))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)
        for number in dict.fromkeys(held):
            signal.raise_signal(number)

