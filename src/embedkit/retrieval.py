"""The ranking pipeline behind Collection.similar's keyword and hybrid modes and its
feedback options: the keyword side (stop words dropped, optional RM3 expansion), Rocchio
feedback for the query vector, and fusion of the two rankings (reciprocal rank or a convex
combination of normalised scores).

benchmarks/ranking.py measured each of these (docs/ranking.md): the defaults are the
settings that helped on the development collection.
"""

from dataclasses import dataclass

import numpy as np

from . import feedback, fulltext, ranking, search, storage, windows
from .errors import EmbedkitError

# How far down each ranking hybrid search looks before fusing them.
HYBRID_DEPTH = 100
FUSIONS = ("rrf", "convex")


@dataclass(frozen=True)
class Options:
    """How similar() ranks, beyond the mode.

    - stop_words: drop English stop words from keyword queries (kept when a query has only
      stop words).
    - expand: RM3, the keyword query expanded with the words of its top results.
    - feedback: Rocchio, the query vector moved toward the mean of the top `feedback`
      results (of the hybrid ranking in hybrid mode, of the dense one in dense mode); 0 is
      off; None: on (feedback.ROCCHIO_DOCS) in hybrid mode, off in the others.
    - fusion: "rrf" (reciprocal rank) or "convex" (alpha x dense + (1 - alpha) x keyword,
      each min-max normalised over its top results).
    """

    stop_words: bool = True
    expand: bool = False
    feedback: int | None = None
    fusion: str = "rrf"
    alpha: float = 0.5

    def check(self):
        if self.fusion not in FUSIONS:
            raise EmbedkitError(f"unknown fusion {self.fusion!r}: use rrf or convex")
        if not 0 <= self.alpha <= 1:
            raise EmbedkitError(f"the fusion weight alpha must be from 0 to 1, not {self.alpha}")
        if self.feedback is not None and (
                not isinstance(self.feedback, int) or isinstance(self.feedback, bool) or self.feedback < 0):
            raise EmbedkitError(f"feedback must be a whole number of results (0 is off), not {self.feedback!r}")
        return self


DEFAULT = Options()


def rank(collection, vector, text, n, exclude, filter, mode, exact, options: Options):
    """[(id, score)] best first for one search."""
    feedback_docs = options.feedback
    if feedback_docs is None:
        feedback_docs = feedback.ROCCHIO_DOCS if mode == "hybrid" else 0
    if mode == "dense":
        hits = dense_top(collection, vector, n, exclude, filter, exact)
        if feedback_docs:
            moved = _rocchio(collection, vector, hits, feedback_docs)
            hits = dense_top(collection, moved, n, exclude, filter, exact)
        return hits
    depth = n if mode == "keyword" else max(n, HYBRID_DEPTH)
    keyword = keyword_side(collection, text, depth, filter, options)
    if mode == "keyword":
        return keyword[:n]
    dense = dense_top(collection, vector, depth, exclude, filter, exact)
    fused = _fuse(dense, keyword, options)
    if feedback_docs:
        moved = _rocchio(collection, vector, fused, feedback_docs)
        dense = dense_top(collection, moved, depth, exclude, filter, exact)
        fused = _fuse(dense, keyword, options)
    return fused[:n]


def dense_top(collection, vector, n, exclude, filter, exact):
    """The dense ranking: by the items' own vectors, or in a collection with windows, by the
    best of theirs and their windows' (scanning every vector: windows have no index)."""
    if not collection.windows:
        return search.top_n(collection, vector, n, exclude, filter, exact)
    hits = search.top_n(collection, vector, n, exclude, filter, True)
    return windows.top_n(collection, vector, n, exclude, filter, hits)


def keyword_side(collection, text, n, filter, options: Options):
    query = feedback.without_stop_words(text) if options.stop_words else text
    condition = filter.condition()
    first = fulltext.keyword_top(collection, query, n, *condition)
    if not options.expand or not first:
        return first
    top = first[: feedback.RM3_DOCS]
    texts = dict(_select(collection, "id, content", [id for id, _ in top]))
    terms = feedback.rm3_terms(query, [(texts.get(id), score) for id, score in top])
    scores: dict = {}
    for word, weight in terms.items():
        # BM25 of an OR query is the sum of its terms' BM25: weighting each term's own
        # ranking is BM25 with weighted terms.
        for id, score in fulltext.keyword_top(collection, word, max(n, feedback.RM3_TERM_DEPTH), *condition):
            scores[id] = scores.get(id, 0.0) + weight * score
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:n]


def _fuse(dense, keyword, options):
    if options.fusion == "convex":
        return feedback.convex([dense, keyword], [options.alpha, 1 - options.alpha])
    return fulltext.fuse([[id for id, _ in dense], [id for id, _ in keyword]])


def _rocchio(collection, vector, hits, docs):
    ids = [id for id, _ in hits[:docs]]
    found = {row[0]: vector for row, vector in zip(*ranking.stored_vectors(collection, ids))}
    rows = [found[id] for id in ids if id in found]
    return feedback.rocchio(vector, np.stack(rows) if rows else np.zeros((0, len(vector))), feedback.ROCCHIO_WEIGHT)


def _select(collection, columns, ids):
    return storage.select_in(collection.db.conn, collection.table, columns, "id", ids)
