"""Clusters of a collection: seeded k-means over unit vectors, each cluster named by its most
distinctive terms and most central items, written to COLLECTION_clusters and
COLLECTION_cluster_info.

Why k-means: its clusters are centroids, so a new item joins the nearest one without
clustering again, and a centroid is a vector like any other (embedkit_cosine compares items
with it in SQL); it is seeded and so reproducible; and at 100,000 items of 384 dimensions it
takes seconds. On unit vectors its squared distance is 2 - 2 x cosine, so it groups by cosine
similarity, as search does. Density methods (HDBSCAN) leave many items unassigned in this
many dimensions and have no centroid to assign new ones to; agglomerative clustering needs
the n x n distance matrix (40 GB at 100,000 items).

With summarize, a chat model then names each cluster and sums it up in a sentence
(explore.summaries). The clusters are stored first: a failing model leaves them with their
TF-IDF names, and asking again does not cluster again.
"""

import json
from dataclasses import dataclass, field

import numpy as np

from .. import chat, jsondata, storage, vectors
from ..errors import EmbedkitError
from ..extras import require
from ..filters import Filter
from . import names, summaries, tables
from .loading import load, sample

KIND = "clusters"
# k-means++ starts (scikit-learn's default for k-means++): three tripled the time at 100,000
# items for an adjusted Rand index at most 0.03 better on the benchmark's labelled set (seeds 0-2).
N_INIT = 1
# -k auto: of these k, the one whose k-means of a seeded sample of AUTO_SAMPLE items has the best
# mean silhouette (cosine distance).
AUTO_SAMPLE = 2000
AUTO_K = (2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30)
CENTRAL = 3  # most central items kept per cluster
# A cluster's name is made from the text of at most this many of its items (loading.sample):
# bigram counts over all 100,000 texts of the benchmark took 76 s.
NAMING_TEXTS = 1000
DECIMALS = 6  # distances are stored rounded: equal on every machine and thread count


def table_names(collection) -> tuple:
    return tables.names(collection.name, KIND)


@dataclass
class Cluster:
    cluster: int  # 0 is the largest
    size: int
    name: str
    terms: list  # most distinctive first
    central: list  # ids, most central first
    centroid: np.ndarray  # the mean of its items' unit vectors
    summary: str | None = None

    def to_dict(self) -> dict:
        return {"cluster": self.cluster, "size": self.size, "name": self.name, "terms": self.terms,
                "central": self.central, "summary": self.summary}


@dataclass
class Clustering:
    """What cluster() or assign() did, and the clusters."""

    clusters: list
    items: int
    how: str  # "computed", "unchanged" or "assigned"
    k: int
    silhouettes: dict = field(default_factory=dict)  # k -> silhouette, when -k auto chose k
    assigned: int = 0  # items new or moved to another cluster by assign()
    removed: int = 0  # items gone from the collection since
    summarized_by: str | None = None  # the chat model asked, with summarize
    summarized: int = 0  # clusters it named and summed up
    unreadable: list = field(default_factory=list)  # clusters whose answer could not be read

    def summary(self) -> str:
        if self.how == "assigned":
            return (f"{self.items} items in {self.k} clusters: {self.assigned} assigned, {self.removed} removed, "
                    "clusters kept")
        chosen = f" (k={self.k} by silhouette {self.silhouettes[self.k]:.3f})" if self.silhouettes else ""
        asked = f"; {self.summarized} summarized by {self.summarized_by}" if self.summarized_by else ""
        return f"{self.items} items in {self.k} clusters{chosen}, {self.how}{asked}"

    def warning(self) -> str | None:
        """One line about the clusters whose answer could not be read, if any."""
        if not self.unreadable:
            return None
        which = ", ".join(map(str, self.unreadable))
        keeps = "clusters {}, which keep their TF-IDF names" if len(self.unreadable) > 1 else \
            "cluster {}, which keeps its TF-IDF name"
        return f"{self.summarized_by} gave no JSON name and summary for {keeps.format(which)}; run again to ask again"


def cluster(collection, k=8, seed=0, metadata=None, where=None, progress=None, summarize=None) -> Clustering:
    """Cluster the items (those metadata and where choose) into k clusters, or k="auto"; with
    summarize (a chat model or its name), have it name and sum up the clusters that have no
    summary by it yet."""
    progress = progress or (lambda done, total: None)
    filter = Filter(metadata or {}, where)
    if k != "auto" and (not isinstance(k, int) or k < 2):
        raise EmbedkitError(f"k must be a whole number of at least 2 or 'auto', not {k!r}")
    model = chat.get_chat_model(summarize) if isinstance(summarize, str) else summarize
    settings = {"k": k, "seed": seed, "filter": filter.metadata, "where": where}
    version = collection.version()
    previous = tables.record(collection, KIND)
    if previous is not None and previous.version == version and {
        key: previous.settings.get(key) for key in settings
    } == settings:
        clusters = stored(collection)
        result = Clustering(clusters, sum(c.size for c in clusters), "unchanged", len(clusters),
                            {int(key): value for key, value in previous.settings.get("silhouettes", {}).items()})
        steps = 0
    else:
        result, steps = _compute(collection, k, seed, filter, settings, version, progress, model is not None)
    if model is not None:
        _summarize(collection, result, model, steps, progress)
    return result


def _compute(collection, k, seed, filter, settings, version, progress, summarizing) -> tuple:
    """(the Clustering, the progress steps so far) of clustering afresh."""
    tables.check_free(collection, KIND, table_names(collection))
    require("sklearn.cluster", "explore", "clustering")
    items = load(collection, filter)
    count = len(items.ids)
    if count < 2 or (k != "auto" and count < k):
        raise EmbedkitError(f"cannot make {k} clusters of {count} item{'s' * (count != 1)} in {collection.name!r}")
    steps = (len(_candidates(count)) if k == "auto" else 0) + 2
    # With summarize, asking about each cluster is a step too (once k is known).
    later = k if summarizing and k != "auto" else 0
    silhouettes = {}
    if k == "auto":
        silhouettes = choose_k(items.matrix, seed, lambda: progress(1, steps))
        k = max(silhouettes, key=lambda candidate: (silhouettes[candidate], -candidate))
        later = k if summarizing else 0
    model = _KMeans(k, seed, N_INIT).fit(items.matrix)
    progress(1, steps + later)
    labels, centroids = _canonical(model.labels_, model.cluster_centers_.astype(np.float32), items.ids, k)
    distances = _distances(items.matrix, labels, centroids)
    clusters = _describe(collection, items, labels, centroids, distances, k)
    progress(1, steps + later)
    _write(collection, items.ids, labels, distances, clusters, settings | {"silhouettes": silhouettes}, version)
    return Clustering(clusters, count, "computed", k, silhouettes), steps


def _candidates(count) -> list:
    return [k for k in AUTO_K if k < min(count, AUTO_SAMPLE)]


def choose_k(matrix, seed, tick) -> dict:
    """{k: silhouette} over the candidates, on a seeded sample: k-means of the sample for each k,
    scored by the mean silhouette (cosine distance), which is high when items are much closer
    to their own cluster than to the next one."""
    metrics = require("sklearn.metrics", "explore", "clustering")
    rng = np.random.default_rng(seed)
    sample = matrix[np.sort(rng.choice(len(matrix), min(len(matrix), AUTO_SAMPLE), replace=False))]
    distance = np.clip(1 - sample @ sample.T, 0, 2)
    np.fill_diagonal(distance, 0)
    scores = {}
    for k in _candidates(len(matrix)):
        labels = _KMeans(k, seed, 1).fit_predict(sample)
        scores[k] = round(float(metrics.silhouette_score(distance, labels, metric="precomputed")), DECIMALS) \
            if len(set(labels)) > 1 else -1.0
        tick()
    return scores


class _KMeans:
    """scikit-learn's KMeans on one thread. Its threads wait for each other every iteration,
    and while other work keeps the cores busy their spinning made it 6x slower (100,000 items:
    163 s on both cores, 27 s on one); on idle cores one thread gives up at most the second."""

    def __init__(self, k, seed, n_init):
        cluster_module = require("sklearn.cluster", "explore", "clustering")
        self.model = cluster_module.KMeans(n_clusters=k, n_init=n_init, random_state=seed)

    def fit(self, matrix):
        with require("threadpoolctl", "explore", "clustering").threadpool_limits(1):
            return self.model.fit(matrix)

    def fit_predict(self, matrix):
        return self.fit(matrix).labels_


def _canonical(labels, centroids, ids, k):
    """Clusters renumbered largest first (equal sizes: the one with the smallest id first)."""
    sizes = np.bincount(labels, minlength=k)
    first = {}
    for id, label in zip(ids, labels):  # ids are in order: the first seen is the smallest
        first.setdefault(int(label), id)
    order = sorted(range(k), key=lambda c: (-sizes[c], first.get(c, "")))
    renumber = np.empty(k, dtype=np.int64)
    renumber[order] = np.arange(k)
    return renumber[labels], centroids[order]


def nearest(matrix, centroids) -> np.ndarray:
    """The cluster of each unit row: the centroid at the least euclidean distance, as k-means
    assigns (|x - c|^2 = 1 - 2 x.c + |c|^2 for a unit x)."""
    return np.argmax(2 * (matrix @ centroids.T) - np.einsum("ij,ij->i", centroids, centroids), axis=1)


def _distances(matrix, labels, centroids) -> np.ndarray:
    """Cosine distance of each row to its cluster's centroid, rounded to DECIMALS."""
    directions = vectors.normalize_rows(centroids.astype(np.float64))
    cosine = np.einsum("ij,ij->i", matrix.astype(np.float64), directions[labels])
    return np.round(1 - cosine, DECIMALS)


def _describe(collection, items, labels, centroids, distances, k) -> list:
    members = [np.flatnonzero(labels == c) for c in range(k)]
    central = [[items.ids[i] for i in sorted(m, key=lambda i: (distances[i], items.ids[i]))[:CENTRAL]]
               for m in members]
    named = {items.ids[m[i]]: c for c, m in enumerate(members) for i in sample([items.ids[i] for i in m], NAMING_TEXTS)}
    read = load(collection, ids=sorted(named.keys() | {id for ids in central for id in ids}), texts=True, metadata=True)
    details = dict(zip(read.ids, zip(read.texts, read.metadata)))
    texts = [details[id][0] or (details[id][1] or {}).get("title") for id in named]
    terms = names.distinctive_terms(texts, list(named.values()), k)
    titles = {id: _title(id, meta) for id, (_, meta) in details.items()}
    return [
        Cluster(c, len(members[c]), names.name(terms[c], [titles[id] for id in central[c]]), terms[c], central[c],
                centroids[c])
        for c in range(k)
    ]


def _title(id, metadata) -> str:
    return str((metadata or {}).get("title") or id)


def _summarize(collection, result, model, steps, progress):
    """Ask model for the name and summary of each cluster of result it has not summed up yet,
    storing each answer as it comes, so that asking again after a failure goes on from there.
    A cluster without a summary always has its TF-IDF name: another model than the last
    starts with every cluster put back so."""
    record = _record(collection)
    settings = record.settings | {"summarized_by": model.name}
    again = record.settings.get("summarized_by") != model.name
    todo = [c for c in result.clusters if again or c.summary is None]
    items_table, info_table = table_names(collection)
    conn = collection.db.conn
    shown = {
        c.cluster: [row[0] for row in conn.execute(
            f'select id from "{items_table}" where cluster = ? order by distance, id limit ?', [c.cluster, summaries.ITEMS])]
        for c in todo
    }
    wanted = {id for c in todo for id in shown[c.cluster] + c.central}
    read = load(collection, ids=sorted(wanted), texts=True, metadata=True)
    details = dict(zip(read.ids, zip(read.texts, read.metadata)))
    update = f'update "{info_table}" set name = ?, summary = ? where cluster = ?'
    if again:
        for c in todo:
            c.name, c.summary = names.name(c.terms, [_title(id, details.get(id, (None, None))[1]) for id in c.central]), None
        with storage.transaction(conn):
            conn.executemany(update, [(c.name, c.summary, c.cluster) for c in todo])
            tables.save(collection, KIND, settings, record.version)
    result.summarized_by = model.name
    for c in todo:
        texts = [details[id][0] or _title(id, details[id][1]) for id in shown[c.cluster] if id in details]
        answer = summaries.parse(model.complete(summaries.messages(c.size, c.terms, texts)))
        if answer is None:
            result.unreadable.append(c.cluster)
        else:
            c.name, c.summary = answer
            with storage.transaction(conn):
                conn.execute(update, [c.name, c.summary, c.cluster])
        progress(1, steps + len(todo))
    result.summarized = sum(c.summary is not None for c in result.clusters)


def _write(collection, ids, labels, distances, clusters, settings, version):
    items_table, info_table = table_names(collection)
    tables.replace(
        collection, KIND,
        {
            items_table: (
                ["create table {table} (id text primary key, cluster integer not null, distance real not null)",
                 'create index "{name}_cluster" on {table} (cluster)'],
                list(zip(ids, labels.tolist(), distances.tolist())),
            ),
            info_table: (
                ["create table {table} (cluster integer primary key, size integer not null, name text not null, "
                 "terms text not null, central text not null, summary text, centroid blob not null)"],
                [(c.cluster, c.size, c.name, jsondata.dumps(c.terms), jsondata.dumps(c.central), c.summary,
                  vectors.encode(c.centroid)) for c in clusters],
            ),
        },
        settings, version,
    )


def _record(collection) -> tables.Record:
    record = tables.record(collection, KIND)
    if record is None:
        raise EmbedkitError(f"collection {collection.name!r} has no clusters yet: "
                            f"run embedkit cluster {collection.name} first")
    return record


def stored(collection) -> list:
    """The clusters as the last cluster() or assign() left them."""
    _record(collection)
    _, info_table = table_names(collection)
    rows = collection.db.conn.execute(
        f'select cluster, size, name, terms, central, summary, centroid from "{info_table}" order by cluster'
    ).fetchall()
    return [Cluster(row[0], row[1], row[2], json.loads(row[3]), json.loads(row[4]), np.array(vectors.decode(row[6])),
                    row[5]) for row in rows]


def assign(collection) -> Clustering:
    """Put every item the clustering's filter matches in the cluster of the nearest stored
    centroid, without clustering again: new items join, deleted ones leave, and the
    clusters (centroids, names) stay as they were computed. A later cluster() with the same
    settings computes them again, since the items have changed."""
    settings = _record(collection).settings
    clusters = stored(collection)
    items = load(collection, Filter(settings["filter"], settings["where"]))
    centroids = np.stack([c.centroid for c in clusters]).astype(np.float32)
    labels = nearest(items.matrix, centroids) if items.ids else np.empty(0, dtype=np.int64)
    distances = _distances(items.matrix, labels, centroids)
    items_table, info_table = table_names(collection)
    conn = collection.db.conn
    before = dict(conn.execute(f'select id, cluster from "{items_table}"'))
    now = dict(zip(items.ids, labels.tolist()))
    assigned = sum(before.get(id) != label for id, label in now.items())
    removed = len(before.keys() - now.keys())
    sizes = np.bincount(labels, minlength=len(clusters))
    with storage.transaction(conn):
        conn.execute(f'delete from "{items_table}"')
        conn.executemany(f'insert into "{items_table}" values (?, ?, ?)',
                         list(zip(items.ids, labels.tolist(), distances.tolist())))
        conn.executemany(f'update "{info_table}" set size = ? where cluster = ?',
                         [(int(sizes[c.cluster]), c.cluster) for c in clusters])
    for c in clusters:
        c.size = int(sizes[c.cluster])
    return Clustering(clusters, len(items.ids), "assigned", len(clusters), assigned=assigned, removed=removed)
