"""Names for clusters without a language model: the terms most distinctive of each cluster's
stored text (class-based TF-IDF), and its most central items."""

import numpy as np

from ..extras import require

TERMS = 5  # kept per cluster (the table's terms column)
NAME_TERMS = 3  # of them in its name
# Words of two or more characters starting with a letter ("c++" and "x11" too).
TOKEN = r"(?u)\b[^\W\d_][\w+#]*[\w+#]"


def distinctive_terms(texts, labels, k, n=TERMS) -> list:
    """[[term, ...] best first] for clusters 0..k-1 of texts (None for no text).

    Class-based TF-IDF against the other clusters: a term's weight in a cluster is its share of
    the cluster's words times log(1 + A / (1 + f)), f being its count in the other clusters and
    A the average number of words per cluster: frequent in this cluster and rare in the others.
    (Counting it in all clusters, as c-TF-IDF usually does, let words common everywhere, like
    "return" in docstrings, name more clusters.) Single words and pairs of words.
    """
    feature_extraction = require("sklearn.feature_extraction.text", "explore", "naming clusters")
    texts = [text or "" for text in texts]
    if not any(text.strip() for text in texts):
        return [[] for _ in range(k)]
    # A term must be in two texts (unless none is): that keeps typos and identifiers out of names.
    for min_df in (2, 1):
        vectorizer = feature_extraction.CountVectorizer(
            stop_words="english", ngram_range=(1, 2), token_pattern=TOKEN, min_df=min_df, dtype=np.float64)
        try:
            counts = vectorizer.fit_transform(texts)
            break
        except ValueError:  # no term left
            continue
    else:
        return [[] for _ in range(k)]
    vocabulary = vectorizer.get_feature_names_out()
    labels = np.asarray(labels)
    by_cluster = np.zeros((k, counts.shape[1]))
    for cluster in range(k):
        by_cluster[cluster] = np.asarray(counts[labels == cluster].sum(axis=0)).ravel()
    per_cluster = by_cluster.sum(axis=1, keepdims=True)
    elsewhere = by_cluster.sum(axis=0) - by_cluster
    average = by_cluster.sum() / k
    weights = by_cluster / np.maximum(per_cluster, 1) * np.log1p(average / (1 + elsewhere))
    terms = []
    for row in weights:
        # Best first, equal weights alphabetically: the same text always gives the same name.
        order = np.lexsort((vocabulary, -row))
        terms.append(_distinct([vocabulary[i] for i in order if row[i] > 0], n))
    return terms


def _distinct(ranked, n) -> list:
    """The first n terms that say something new: none repeats a word of a term before it."""
    chosen: list[str] = []
    used: set[str] = set()
    for term in ranked:
        words = set(term.split())
        if words & used:
            continue
        chosen.append(term)
        used |= words
        if len(chosen) == n:
            break
    return chosen


def name(terms, central_labels) -> str:
    """A cluster's name: its first terms, or (no stored text) its two most central items."""
    if terms:
        return ", ".join(terms[:NAME_TERMS])
    return " / ".join(central_labels[:2])
