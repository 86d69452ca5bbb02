"""Classification by example: one centroid per label, from a few labelled items or texts; each
item gets the label of the most similar centroid, written to COLLECTION_labels.

The centroids are made in SQL by the embedkit_centroid aggregate over the examples' vectors,
exactly as the pure-SQL way in docs/explore.md does.
"""

import csv
import io
from dataclasses import dataclass

import numpy as np

from .. import storage, vectors
from ..errors import EmbedkitError
from ..filters import Filter
from . import tables
from .loading import load

KIND = "labels"
DECIMALS = 6
EXAMPLES = "temp._embedkit_examples"


def table_name(collection) -> str:
    return tables.names(collection.name, KIND)[0]


@dataclass(frozen=True)
class Example:
    """A labelled example: a stored item (id) or a text embedded with the collection's model."""

    label: str
    id: str | None = None
    text: str | None = None


@dataclass
class Classification:
    items: int
    labelled: int  # the others scored below min_score
    counts: dict  # label -> items

    def summary(self) -> str:
        return (f"{self.items} items: {self.labelled} labelled, {self.items - self.labelled} below the minimum score; "
                + ", ".join(f"{label} {count}" for label, count in self.counts.items()))


def read_examples(data: bytes, where: str) -> list:
    """Examples from CSV with a header: label and id (stored items) or text."""
    from ..sources.tabular import decode_text

    reader = csv.DictReader(io.StringIO(decode_text(data, where)))
    columns = reader.fieldnames or []
    if "label" not in columns or ("id" in columns) == ("text" in columns):
        raise EmbedkitError(f"{where}: needs a header with label and either id or text, "
                            f"not {', '.join(columns) or 'nothing'}")
    examples = []
    for line, row in enumerate(reader, 2):
        label, key = (row.get("label") or "").strip(), "id" if "id" in columns else "text"
        value = row.get(key) or ""
        if not label or not value.strip():
            raise EmbedkitError(f"{where}, line {line}: empty {'label' if not label else key}")
        examples.append(Example(label, **{key: value}))
    if not examples:
        raise EmbedkitError(f"{where}: no examples")
    return examples


def centroids(collection, examples) -> tuple:
    """(labels in order, float32 matrix of their unit-length centroids)."""
    examples = list(examples)
    if len({e.label for e in examples}) < 2:
        raise EmbedkitError("classifying needs examples of at least two labels")
    texts = [e.text for e in examples if e.id is None]
    embedded = iter(collection._embed_checked([collection.document_prefix + t for t in texts]) if texts else [])
    conn = collection.db.conn
    conn.execute(f"create table if not exists {EXAMPLES} (label text not null, embedding blob not null)")
    try:
        for example in examples:
            if example.id is not None:
                done = conn.execute(f"insert into {EXAMPLES} select ?, embedding from {storage.quote(collection.table)} "
                                    "where id = ?", [example.label, example.id]).rowcount
                if not done:
                    raise EmbedkitError(f"example {example.id!r} ({example.label}) is not an item of {collection.name!r}")
            else:
                conn.execute(f"insert into {EXAMPLES} values (?, ?)", [example.label, vectors.encode(next(embedded))])
        rows = conn.execute(
            f"select label, embedkit_centroid(embedding) from {EXAMPLES} group by label order by label"
        ).fetchall()
    finally:
        conn.execute(f"drop table {EXAMPLES}")
    matrix = np.stack([vectors.decode(blob) for _, blob in rows]).astype(np.float32)
    return [label for label, _ in rows], vectors.normalize_rows(matrix)


def classify(collection, examples, min_score=None, metadata=None, where=None) -> Classification:
    """Label every item (those metadata and where choose) with its most similar centroid."""
    labels, matrix = centroids(collection, examples)
    version = collection.version()
    items = load(collection, Filter(metadata or {}, where))
    scores = items.matrix.astype(np.float64) @ matrix.astype(np.float64).T
    order = np.argsort(-scores, axis=1, kind="stable")  # equal scores: the label first in order
    rows = np.arange(len(items.ids))
    best = np.round(scores[rows, order[:, 0]], DECIMALS) if len(rows) else np.empty(0)
    margin = np.round(best - scores[rows, order[:, 1]], DECIMALS) if len(rows) else np.empty(0)
    chosen = [labels[i] if min_score is None or score >= min_score else None
              for i, score in zip(order[:, 0].tolist(), best.tolist())]
    settings = {"labels": labels, "min_score": min_score, "filter": metadata or {}, "where": where}
    tables.replace(
        collection, KIND,
        {table_name(collection): (
            ["create table {table} (id text primary key, label text, score real not null, margin real not null)",
             'create index "{name}_label" on {table} (label)'],
            list(zip(items.ids, chosen, best.tolist(), margin.tolist())),
        )},
        settings, version,
    )
    counts = {label: chosen.count(label) for label in labels}
    return Classification(len(items.ids), sum(counts.values()), counts)
