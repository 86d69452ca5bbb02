"""A collection: one SQLite table of id, float32 vector, stored text and JSON metadata."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from . import ranking, related, retrieval, storage, vectors
from .errors import EmbedkitError
from .explore import projection
from .filters import Filter, metadata_condition
from .items import DEFAULT_HASH, Entry, Item
from .models import get_model

# Writing, reranking and exploring are imported where they are used: a search from a new
# process (a CLI call) would otherwise pay for importing all of them first.
if TYPE_CHECKING:
    from . import rerank as reranking
    from .chat import ChatModel
    from .chunking import Chunker
    from .explore import classify as classification
    from .explore import cluster as clustering
    from .explore import heatmap as heatmaps
    from .explore import maps
    from .ingest import EmbedStats
    from .models import EmbeddingModel
    from .related import ExportStats, RelatedStats
    from .sources import Source
    from .upsert import VectorStats

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$")
RESERVED_PREFIXES = ("_embedkit", "sqlite_")
MODES = ("dense", "keyword", "hybrid")
# progress(n, total): n more of total are done.
Progress = Callable[[int, int], None]


def validate_name(name: str):
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or name.lower().startswith(RESERVED_PREFIXES):
        raise EmbedkitError(
            f"invalid collection name {name!r}: use up to 64 letters, digits, '_' or '-', "
            "not starting with '_embedkit' or 'sqlite_'"
        )


class Collection:
    """Use Database.collection() or Database.create_collection() to get one."""

    # Whether embedkit made the table, with its triggers, keyword index and registry row (an
    # llm collection read in place is not: llmdb.LlmCollection).
    managed = True

    def __init__(self, db, row: dict):
        self.db = db
        self.name = row["name"]
        self.table = row["table_name"]
        # None for a collection of vectors made elsewhere, without a model
        self.model_id = row["model"]
        self.dimensions = row["dimensions"]
        self.query_prefix = row["query_prefix"]
        self.document_prefix = row["document_prefix"]
        settings = json.loads(row.get("settings") or "{}")
        # How many dimensions the model was asked to keep (Matryoshka), or None for all of them.
        self.model_dimensions = settings.get("dimensions")
        # How the text of its items is hashed (items.HASHES).
        self.hash = settings.get("hash", DEFAULT_HASH)
        # How documents are split: {"method", "size", "overlap", "texts"}, where texts says
        # whether every text input (rows, files) is split too. None until something was split.
        self.chunking: dict | None = settings.get("chunking")
        # Items scored by their best window too ({"size", "overlap"} in tokens), or None: see windows.py.
        self.windows: dict | None = settings.get("windows")

    def __repr__(self):
        return f"<Collection {self.name} model={self.model_id} dimensions={self.dimensions}>"

    @property
    def model(self) -> EmbeddingModel:
        if self.model_id is None:
            raise self._no_model()
        model = get_model(self.model_id)
        return model.truncated(self.model_dimensions) if self.model_dimensions else model

    def _no_model(self):
        return EmbedkitError(
            f"collection {self.name!r} has no model (its vectors were made elsewhere): search it by item, "
            "by vector or by keyword; nothing is embedded into it"
        )

    def check_model(self, model: str | None) -> None:
        """Raise unless model (an id or alias) is the collection's own."""
        if model is not None and self.model_id is None:
            raise self._no_model()
        if model is not None and get_model(model).model_id != self.model_id:
            raise EmbedkitError(
                f"collection {self.name!r} uses model {self.model_id!r}, not {model!r}; "
                "a collection keeps one model"
            )

    # Reading

    @storage.guarded
    def count(self) -> int:
        return self.db.conn.execute(f"select count(*) from {storage.quote(self.table)}").fetchone()[0]

    def __len__(self):
        return self.count()

    @storage.guarded
    def __iter__(self):
        """Every stored item as an Entry (score None), in id order."""
        cursor = self.db.conn.execute(
            f"select id, content, metadata from {storage.quote(self.table)} order by id"
        )
        for id, content, metadata in cursor:
            yield Entry(id, None, content, json.loads(metadata) if metadata else None)

    def __contains__(self, id):
        return self.vector(id, missing_ok=True) is not None

    @storage.guarded
    def get(self, id: str) -> Entry:
        row = self.db.conn.execute(
            f"select id, content, metadata from {storage.quote(self.table)} where id = ?", [id]
        ).fetchone()
        if row is None:
            raise self._no_item(id)
        return Entry(row[0], None, row[1], json.loads(row[2]) if row[2] else None)

    @storage.guarded
    def vector(self, id: str, missing_ok: bool = False) -> np.ndarray | None:
        row = self.db.conn.execute(
            f"select embedding from {storage.quote(self.table)} where id = ?", [id]
        ).fetchone()
        if row is None:
            if missing_ok:
                return None
            raise self._no_item(id)
        return vectors.decode(row[0])

    @storage.guarded
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

    def chunker(self, method: str | None = None, size: int | None = None, overlap: int | None = None,
                late: bool | None = None) -> Chunker:
        """The Chunker this collection splits with: its recorded chunking, with the method,
        size, overlap or late given instead (see embedkit.chunking.for_model for the defaults).

        late: late chunking, each chunk's vector pooled from the model's token vectors over
        the whole text (or page) it was cut from, so that it is made with its context in view
        (EmbeddingModel.embed_late). Only local models that expose their token vectors can do
        it; others raise here."""
        from .chunking import for_model

        return for_model(self.model, self.document_prefix, self.chunking, method, size, overlap, late)

    def embed(self, id: str, content: str, metadata: dict | None = None, store: bool = False) -> EmbedStats:
        """Embed and store one item as id (re-embedding only if its content changed); never split."""
        from . import ingest

        stats = ingest.embed_multi(self, [Item(str(id), content, metadata)], store=store, split_texts=False)
        return self._update_windows(stats)

    @storage.guarded
    def embed_multi(self, inputs: Iterable[Item | Source], store: bool = False, batch_size: int | None = None,
                    progress: Progress | None = None, chunker: Chunker | None = None, sync: bool = False,
                    read_progress: Progress | None = None, document_progress: Progress | None = None,
                    model: EmbeddingModel | None = None, windows: bool | None = None,
                    window_progress: Progress | None = None) -> EmbedStats:
        """Embed and store many items, calling the model only for content not stored yet.

        inputs are Items and Sources (such as embedkit.sources.pdf.PdfSource). Sources are
        split with the collection's chunking (see chunker()); with a chunker, they are split
        with that, each Item is cut into chunks too and becomes a source named by its id, and
        the collection records the chunker for later runs, which split the same way unless
        given another. A source split another way before is split again: its chunks that
        changed are embedded, the others keep their vectors.

        Unchanged items cost nothing, and an unchanged source is not even read again;
        changed metadata or store flag rewrites the row without embedding; content already
        stored under another id reuses that vector. A source's items are written in one
        transaction that also deletes the items it no longer has. Transactions commit as
        documents complete (a KeyboardInterrupt or SIGTERM waits for a commit under way), so
        an interrupted run keeps what it finished, raising ingest.Interrupted (a
        KeyboardInterrupt whose stats count it), and a re-run completes the rest. With sync,
        items of sources missing from inputs are deleted.

        A source that cannot be read is counted as failed and nothing of it is written;
        the rest go on. progress(n, total) is called as n more of total items are done
        (total is known once the sources are read), read_progress(n, total) as n more of
        total sources have been read, document_progress(n, total) as n more of them are done.

        model, if given, is called instead of the collection's own model, which it must stand
        for (the same id): a models.distributed.DistributedModel embeds on a cluster.
        windows=True scores items by their best part from now on (the collection records it;
        False forgets it): every stored text longer than the model reads is also embedded as
        overlapping windows of what the model reads, in a side table (embedkit.windows), and
        dense search scores an item by the best of its own vector and its windows', with the
        window that matched as the result's part. Windows are cut from the stored text, so
        they need store=True. window_progress(n, total) is called as n more of total items
        have their windows. stats.windows counts the windows embedded.
        """
        self.db.require_writable()
        if self.model_id is None:
            raise self._no_model()
        if windows and not store:
            raise EmbedkitError("windows are cut from the stored text: store it (store=True, --store)")
        from . import ingest
        from . import windows as windows_module

        if windows:
            windows_module.enable(self)
        elif windows is False and self.windows:
            windows_module.disable(self)
        stats = ingest.embed_multi(self, inputs, store, batch_size, progress, chunker, sync, read_progress,
                                   document_progress, model=model)
        return self._update_windows(stats, window_progress)

    def _update_windows(self, stats: EmbedStats, progress: Progress | None = None) -> EmbedStats:
        if self.windows:
            from . import ingest
            from . import windows as windows_module

            try:
                stats.windows = windows_module.update(self, progress)
            except KeyboardInterrupt:
                raise ingest.Interrupted(stats, False) from None  # the windows done are kept
        return stats

    @storage.guarded
    def upsert_vectors(self, ids: Sequence[str], vectors: Sequence | np.ndarray,
                       content: Sequence[str | None] | None = None, metadata: Sequence[dict | None] | None = None,
                       model: str | None = None) -> VectorStats:
        """Store vectors made elsewhere under ids, with their text (content, stored as given)
        and metadata (dicts), one per id; returns a VectorStats.

        vectors are a 2-d array, or one list of numbers, 1-d array or float32 BLOB per id,
        checked as embeddings are (one width, finite, not all zeros); float32 values are
        stored bit for bit. An id stored already is overwritten, unless its vector, text and
        metadata are the same, when its row is left alone. All is written in one transaction,
        or nothing is.

        model names the model that made each vector from its content (after the collection's
        document prefix); it must be the collection's own. The vectors then count as embedded:
        embed_multi leaves such an item unchanged and may reuse its vector for the same text.
        Without model they are kept as they are but never taken for any text's embedding: an
        item embedded later under the same id is embedded again.
        """
        self.db.require_writable()
        from . import upsert

        return upsert.upsert(self, [upsert.Batch(list(ids), vectors, content, metadata)], model)

    @storage.guarded
    def delete(self, ids: str | Iterable[str]) -> int:
        """Delete items by id; returns how many existed."""
        ids = [ids] if isinstance(ids, str) else list(ids)
        self.db.require_writable()
        with storage.transaction(self.db.conn):
            from . import ingest

            return ingest.delete_ids(self, ids)

    @storage.guarded
    def delete_where(self, metadata: dict) -> int:
        """Delete the items whose metadata has all these key/value pairs (e.g. every chunk of
        one source: {"source": "paper.pdf"}); returns how many there were."""
        condition, params = metadata_condition(metadata)
        self.db.require_writable()
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

    def _embed_checked(self, texts) -> np.ndarray:
        embeddings = self.model.embed(texts)
        for text, embedding in zip(texts, embeddings):
            vectors.check(embedding, self.dimensions, f"the vector for {text[:40]!r}")
        return embeddings

    def _select_in(self, columns, key, values):
        return storage.select_in(self.db.conn, self.table, columns, key, values)

    # Searching

    @storage.guarded
    def similar(self, text: str, n: int = 10, unique: str | None = None, metadata: dict | None = None,
                where: str | None = None, min_score: float | None = None, mode: str = "dense",
                mmr: float | None = None, exact: bool = False, expand: bool = False, feedback: int | None = None,
                fusion: str = "rrf", alpha: float = 0.5, stop_words: bool = True,
                rerank: reranking.Reranker | str | None = None, rerank_depth: int | None = None,
                vector: np.ndarray | None = None) -> list[Entry]:
        """The n items most similar to text, embedded with the collection's model (after its
        query prefix), unless its query vector is given (a caller that embeds it elsewhere).

        - unique: a metadata key (such as "source"): only the best item of each distinct value
          of it is returned; items without the key count as distinct.
        - metadata (a dict of key/values) and where (an SQL condition on the table's columns)
          choose the items searched, before ranking: n come back whenever n items match.
        - min_score: leave out results scoring less.
        - mode: "dense" (cosine similarity), "keyword" (BM25 over the stored text) or "hybrid"
          (the two rankings fused, by default by reciprocal rank, see fulltext.RRF_K); scores are then
          BM25 or fused scores, not cosine similarities.
        - mmr: a lambda from 0 to 1 for maximal marginal relevance: results chosen one by one
          for lambda x similarity to the query - (1 - lambda) x similarity to those already
          chosen, so that near-duplicates give way to other items (1 is plain ranking).
        - exact: never use a quantised or approximate index (embedkit index), scan every vector.
        - expand (keyword, hybrid): RM3, the keyword query expanded with words of its top results.
        - feedback: Rocchio, the query vector moved toward the top `feedback` results (of the
          hybrid ranking in hybrid mode), then searched again; 0 is off, None (the default) is
          3 in hybrid mode and off in the others.
        - fusion (hybrid): "rrf" or "convex" (alpha x dense + (1 - alpha) x keyword scores,
          each normalised); stop_words: drop English stop words from keyword queries.
        - rerank: a reranker (embedkit.rerank, or its name: a cross-encoder, cohere/NAME,
          jina/NAME, tei) re-orders the first rerank_depth results (default 50); scores are then
          the reranker's.
        """
        if not text or not text.strip():
            raise EmbedkitError("the query text is empty")
        if mode not in MODES:
            raise EmbedkitError(f"unknown search mode {mode!r}: use one of {', '.join(MODES)}")
        if mode != "dense" and not self.managed:
            raise EmbedkitError(f"collection {self.name!r} has no keyword index: {mode} search needs one")
        options = retrieval.Options(stop_words, expand, feedback, fusion, alpha).check()
        if self.db.conn.execute(f"select 1 from {storage.quote(self.table)} limit 1").fetchone() is None:
            return []  # nothing to find: no model is loaded for it
        if mode == "keyword":
            vector = None
        elif vector is None:
            vector = self._embed_checked([self.query_prefix + text])[0]
        else:
            vector = vectors.check(np.asarray(vector, dtype=np.float32), self.dimensions, "the query vector")
        filter = Filter(metadata or {}, where)
        if rerank is None:
            return self._search(vector, text, n, None, unique, filter, min_score, mode, mmr, exact, options)
        from . import rerank as reranking

        reranker = reranking.get_reranker(rerank) if isinstance(rerank, str) else rerank
        candidates = self._search(vector, text, max(n, rerank_depth or reranking.CANDIDATES), None, unique, filter,
                                  None, mode, mmr, exact, options)
        results = reranking.rerank(reranker, text, candidates)
        return [entry for entry in results if min_score is None or entry.score >= min_score][:n]

    @storage.guarded
    def similar_by_id(self, id: str, n: int = 10, unique: str | None = None, metadata: dict | None = None,
                      where: str | None = None, min_score: float | None = None, mmr: float | None = None,
                      exact: bool = False) -> list[Entry]:
        """The n items most similar to a stored item, not counting the item itself; from its
        precomputed related list (compute_related) when that is fresh and long enough."""
        row = self.db.conn.execute(f"select embedding from {storage.quote(self.table)} where id = ?", [id]).fetchone()
        if row is None:
            raise self._no_item(id)
        problem = vectors.problem(row[0], self.dimensions)
        if problem is not None:
            raise EmbedkitError(f"the stored vector of {id!r} cannot be searched by ({problem}; written by another "
                                "program?): embed the item again")
        if unique is None and not metadata and where is None and mmr is None and not exact and not self.windows:
            hits = related.precomputed(self, id, n)
            if hits is not None:
                return self._entries([(other, score) for other, score in hits
                                      if min_score is None or score >= min_score])
        return self._search(vectors.decode(row[0]), None, n, id, unique, Filter(metadata or {}, where), min_score,
                            "dense", mmr, exact)

    @storage.guarded
    def similar_by_vector(self, vector: Sequence[float] | np.ndarray, n: int = 10, exclude: str | None = None,
                          unique: str | None = None, metadata: dict | None = None, where: str | None = None,
                          min_score: float | None = None, mmr: float | None = None,
                          exact: bool = False) -> list[Entry]:
        vector = vectors.check(np.asarray(vector, dtype=np.float32), self.dimensions, "the query vector")
        return self._search(vector, None, n, exclude, unique, Filter(metadata or {}, where), min_score, "dense",
                            mmr, exact)

    def _search(self, vector, text, n, exclude, unique, filter, min_score, mode, mmr, exact=False,
                options=retrieval.DEFAULT):
        if mmr is not None and not 0 <= mmr <= 1:
            raise EmbedkitError(f"the MMR lambda must be from 0 to 1, not {mmr}")
        # MMR chooses among more candidates than it returns; unique may skip many.
        wanted = n * 4 if unique is not None else max(n * 4, 20) if mmr is not None else n
        while True:
            try:
                hits = retrieval.rank(self, vector, text, wanted, exclude, filter, mode, exact, options)
            except Exception as ex:  # the driver's Error, or its Warning for several statements
                if not filter.where or not type(ex).__module__.startswith(("sqlite3", "pysqlite3")):
                    raise
                raise EmbedkitError(f"the condition {filter.where!r} is not valid SQL here: {ex}") from None
            if min_score is not None:
                hits = [(id, score) for id, score in hits if score >= min_score]
            results = self._entries(hits)
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
        if self.windows and vector is not None:
            from . import windows as windows_module

            windows_module.matching_parts(self, vector, results[:n])
        return results[:n]

    def _entries(self, hits) -> list[Entry]:
        """[(id, score)] as Entries with their stored text and metadata."""
        rows = {
            id: (content, json.loads(metadata) if metadata else None)
            for id, content, metadata in self._select_in("id, content, metadata", "id", [id for id, _ in hits])
        }
        return [Entry(id, score, *rows.get(id, (None, None))) for id, score in hits]

    def _diversify(self, query, results, n, mmr, mode):
        if query is None:
            raise EmbedkitError("MMR needs vectors: use it with dense or hybrid search")
        found = {row[0]: vector for row, vector in zip(*ranking.stored_vectors(self, [e.id for e in results]))}
        results = [e for e in results if e.id in found]  # a keyword match whose stored vector is unusable
        if not results:
            return results
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

    @storage.guarded
    def compute_related(self, n: int = 10, min_score: float | None = None, metadata: dict | None = None,
                        same: str | None = None, progress: Progress | None = None) -> RelatedStats:
        """Store every item's n most similar items in the table COLLECTION_related; a re-run
        redoes only the lists changed items can affect. Returns a RelatedStats.

        metadata (a dict) relates only items having those metadata values; same (a metadata
        key) relates an item only to items with its value of that key.
        """
        self.db.require_writable()
        return related.compute(self, n, min_score, metadata, same, progress)

    @storage.guarded
    def related(self, id: str, fields: Sequence[str] | None = None) -> dict:
        """{"id", "related": [{"id", "score", ...metadata}]}: the item's stored related list."""
        return related.document(self, id, fields)

    @storage.guarded
    def export_related(self, directory: str | os.PathLike, fields: Sequence[str] | None = None,
                       combined: bool = False) -> ExportStats:
        """Write the related lists to directory as JSON files (see related.export)."""
        return related.export(self, directory, fields, combined)

    # Exploring (explore/): clusters, a map, heatmaps and classification by example

    @storage.guarded
    def cluster(self, k: int | str = 8, seed: int = 0, metadata: dict | None = None, where: str | None = None,
                progress: Callable[[int, int], None] | None = None,
                summarize: str | ChatModel | None = None) -> clustering.Clustering:
        """Cluster the items (those metadata and where choose) into k clusters, or k="auto", with
        seeded k-means, each named by its distinctive terms, into the tables COLLECTION_clusters
        and COLLECTION_cluster_info (see explore.cluster). summarize: a chat model (or its name,
        openai/NAME or ollama/NAME) that names each cluster and sums it up in a sentence."""
        self.db.require_writable()
        from .explore import cluster as clustering

        return clustering.cluster(self, k, seed, metadata, where, progress, summarize)

    @storage.guarded
    def assign_clusters(self) -> clustering.Clustering:
        """Put every item in the nearest existing cluster (new ones join, deleted ones leave),
        without clustering again."""
        self.db.require_writable()
        from .explore import cluster as clustering

        return clustering.assign(self)

    @storage.guarded
    def clusters(self) -> list[clustering.Cluster]:
        """The stored clusters, largest first."""
        from .explore import cluster as clustering

        return clustering.stored(self)

    @storage.guarded
    def map(self, path: str | os.PathLike | None = None, color_by: str | None = None, title_key: str = "title",
            link: str | None = None, max_points: int = projection.MAX_POINTS, metadata: dict | None = None,
            where: str | None = None) -> maps.Map:
        """The items on a 2-D map, written to path (.html or .png) if given. color_by: "cluster"
        (the default once clustered) or a metadata key; link: a URL with {id} for the HTML page."""
        from .explore import maps

        result = maps.build(self, color_by, title_key, max_points, metadata, where)
        if path is not None:
            maps.save(result, path, link)
        return result

    @storage.guarded
    def heatmap(self, ids: Sequence[str] = (), texts: Sequence[str] = (),
                path: str | os.PathLike | None = None) -> heatmaps.Heatmap:
        """Pairwise cosine similarities of stored items and texts (at most 50 in all), written to
        path (.png, .html or .json) if given."""
        from .explore import heatmap as heatmaps

        result = heatmaps.build(self, ids, texts)
        if path is not None:
            heatmaps.save(result, path, f"Similarity in {self.name}")
        return result

    @storage.guarded
    def classify(self, examples: Iterable[classification.Example], min_score: float | None = None,
                 metadata: dict | None = None, where: str | None = None) -> classification.Classification:
        """Label every item (those metadata and where choose) by the most similar centroid of
        labelled examples (stored items or texts) into the table COLLECTION_labels."""
        self.db.require_writable()
        from .explore import classify as classification

        return classification.classify(self, examples, min_score, metadata, where)


def _group(entry, key):
    value = (entry.metadata or {}).get(key)
    return ("id", entry.id) if value is None else ("value", json.dumps(value, sort_keys=True))

