"""Query-side ranking aids that need no index of their own: English stop words, RM3 term
expansion from the top keyword results, Rocchio feedback for query vectors, and score
fusion by a convex combination of normalised scores.

All are pure functions over texts, vectors and (id, score) lists, so the search paths and
the ranking benchmark share one implementation.
"""

import math
import re
from collections import Counter

import numpy as np

# A run of letters and digits, as FTS5's unicode61 tokenizer cuts text into words.
WORD = re.compile(r"[^\W_]+")

# English function words: the question words and auxiliaries of natural-language queries
# ("what are the problems of ...") that BM25 would otherwise count as terms. Lucene's
# English list (33 words) plus the question words, pronouns and auxiliaries of
# natural-language questions; short on purpose: no content word is on it.
STOP_WORDS = frozenset(
    """
    a about above after again all also am an and any are as at be been being before below
    between both but by can could did do does doing down during each few for from further
    had has have having he her here hers herself him himself his how i if in into is it its
    itself just me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we
    were what when where which while who whom why will with would you your yours yourself
    yourselves
    """.split()
)

# RM3's defaults, as in Anserini and Pyserini (fb_docs 10, fb_terms 10, original query
# weight 0.5); benchmarks/ranking.py measures them against other choices.
RM3_DOCS = 10
RM3_TERMS = 10
RM3_WEIGHT = 0.5
# How many results each expansion word's own ranking contributes.
RM3_TERM_DEPTH = 1000

# Rocchio's defaults: the query moved 30% of the way toward the mean of the top 3 results
# (the best of k = 3, 10 and weights 0.3, 0.5 on the development collection, CACM, in
# benchmarks/ranking.py).
ROCCHIO_DOCS = 3
ROCCHIO_WEIGHT = 0.3


def words(text: str) -> list:
    """The words of text, case-folded, as the keyword index sees them before stemming."""
    return [word.casefold() for word in WORD.findall(text or "")]


def content_words(text: str) -> list:
    """The words of text that are not stop words, in order, without repeats.

    When every word is a stop word ("to be or not to be") they are all kept: a query is
    never emptied.
    """
    found = list(dict.fromkeys(words(text)))
    kept = [word for word in found if word not in STOP_WORDS]
    return kept or found


def without_stop_words(text: str) -> str:
    """text without the whitespace-separated pieces made only of stop words (or text
    itself, when that would leave nothing). Pieces such as "sqlite-vec" stay whole, so the
    keyword index still asks for them as phrases."""
    pieces = [piece for piece in (text or "").split() if any(w not in STOP_WORDS for w in words(piece))]
    return " ".join(pieces) if pieces else text


def rm3_terms(query: str, documents, terms: int = RM3_TERMS, weight: float = RM3_WEIGHT) -> dict:
    """{word: weight} of an RM3-expanded query, weights summing to 1.

    documents are (text, score) of the top keyword results, best first, scores higher for
    better matches (BM25). Each document's share is its score turned into a probability
    (a softmax, as the scores are log-likelihood-like), each word's weight in the relevance
    model the sum over documents of share x its frequency in the document; the `terms`
    heaviest non-stop words are kept, normalised, and mixed with the original query's words
    (uniform) as weight x original + (1 - weight) x expansion.
    """
    original = content_words(query)
    if not original:
        return {}
    mixed = {word: weight / len(original) for word in original}
    documents = [(text, score) for text, score in documents if text]
    if not documents or weight >= 1:
        return mixed
    top = max(score for _, score in documents)
    shares = [math.exp(score - top) for _, score in documents]
    total_share = sum(shares)
    model: dict[str, float] = {}
    for (text, _), share in zip(documents, shares):
        counts = Counter(word for word in words(text) if word not in STOP_WORDS and not word.isdigit())
        length = sum(counts.values())
        if not length:
            continue
        for word, count in counts.items():
            model[word] = model.get(word, 0.0) + share / total_share * count / length
    best = sorted(model.items(), key=lambda item: (-item[1], item[0]))[:terms]
    mass = sum(value for _, value in best)
    if not mass:
        return mixed
    for word, value in best:
        mixed[word] = mixed.get(word, 0.0) + (1 - weight) * value / mass
    return mixed


def rocchio(query: np.ndarray, vectors: np.ndarray, weight: float = ROCCHIO_WEIGHT) -> np.ndarray:
    """The query vector moved toward the mean of vectors (the top results), unit length:
    (1 - weight) x q + weight x mean, q and the rows normalised first."""
    query = np.asarray(query, dtype=np.float32)
    query = query / (np.linalg.norm(query) or 1.0)
    if len(vectors) == 0 or weight <= 0:
        return query
    rows = np.asarray(vectors, dtype=np.float32)
    rows = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    moved = (1 - weight) * query + weight * rows.mean(axis=0)
    return (moved / (np.linalg.norm(moved) or 1.0)).astype(np.float32)


def convex(rankings, weights) -> list:
    """Score fusion: [(id, score)], best first, then by id.

    rankings are lists of (id, score), best first, each from one search; each list's scores
    are min-max normalised to 0..1 over the list, and an id's fused score is the sum over
    the lists of weight x its normalised score there (0 where a list lacks it).
    """
    fused: dict = {}
    for ranking, weight in zip(rankings, weights):
        if not ranking:
            continue
        scores = [score for _, score in ranking]
        low, high = min(scores), max(scores)
        span = high - low
        for id, score in ranking:
            value = (score - low) / span if span > 0 else 1.0
            fused[id] = fused.get(id, 0.0) + weight * value
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))
