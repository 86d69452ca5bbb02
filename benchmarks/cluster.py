"""Embedding on a Dask cluster: scaling on this machine, and the single writer's ceiling.

--texts real chunks of this machine's text (see _realistic.py) are embedded into a fresh
collection with all-MiniLM-L6-v2-int8, `Collection.embed_multi(..., store=True)`:

- in this process (the model loaded here): the reference;
- on a local Dask cluster of 1, then 2 worker processes (models.distributed.DistributedModel;
  the cluster's start and the workers' model loading are timed apart, before the run);
- the writer alone: a model that returns the vectors already computed, so what is measured is
  everything embed_multi does but embedding (planning, hashing, writing rows and the keyword
  index): the most items per second one writing process can take, whatever the cluster.

Also the database's bytes per item. From these, the hours for 10M and 100M documents on N
machines (docs/large-collections.md).

    python benchmarks/cluster.py
    python benchmarks/cluster.py --texts 4000 --workers 1,2
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _realistic  # noqa: E402
from _common import environment_line, table  # noqa: E402

import embedkit  # noqa: E402
from embedkit.items import Item  # noqa: E402
from embedkit.models import EmbeddingModel, distributed, get_model  # noqa: E402

MODEL = "all-MiniLM-L6-v2-int8"


class Precomputed(EmbeddingModel):
    """Stands for MODEL with vectors computed before: embed_multi's own work, without the model's."""

    def __init__(self, texts, vectors):
        super().__init__()
        self.model_id, self.dimensions = MODEL, vectors.shape[1]
        self.table = dict(zip(texts, vectors))

    def _embed(self, texts):
        return np.array([self.table[text] for text in texts], dtype=np.float32)


def run(texts, model, directory, name):
    path = os.path.join(directory, f"{name}.db")
    with embedkit.Database(path) as db:
        coll = db.create_collection("bench", model=MODEL)
        items = [Item(f"t{i:06d}", text) for i, text in enumerate(texts)]
        start = time.perf_counter()
        stats = coll.embed_multi(items, store=True, model=model)
        seconds = time.perf_counter() - start
        assert stats.embedded + stats.reused == len(texts), stats.summary()
        vectors = np.stack([coll.vector(f"t{i:06d}") for i in range(len(texts))])
    return seconds, os.path.getsize(path) + sum(
        os.path.getsize(path + suffix) for suffix in ("-wal",) if os.path.exists(path + suffix)), vectors


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--writer-texts", type=int, default=50_000, help="items for the writer's ceiling (default: 50000)")
    args = parser.parse_args()
    print("embedkit cluster embedding: in-process vs Dask workers, and the single writer's ceiling")
    print(environment_line())
    every = _realistic.texts()
    texts = every[: args.texts]
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        local = get_model(MODEL)
        local.embed(texts[:20])  # loaded before timing, as the workers' models are
        seconds, size, reference = run(texts, None, directory, "local")
        base = len(texts) / seconds
        rows.append(["in this process", "", f"{seconds:.1f} s", f"{base:.1f}", "1.00x", ""])
        per_item = size / len(texts)
        for workers in [int(w) for w in args.workers.split(",")]:
            start = time.perf_counter()
            client = distributed.connect(workers=workers)
            model = distributed.DistributedModel(local, client)
            model.embed(texts[:20 * workers])  # every worker loads the model
            ready = time.perf_counter() - start
            seconds, _, got = run(texts, model, directory, f"dask{workers}")
            client.close()
            same = float(np.min(np.sum(got * reference, axis=1)))
            rows.append([f"Dask, {workers} worker{'s' * (workers > 1)}", f"{ready:.1f} s", f"{seconds:.1f} s",
                         f"{len(texts) / seconds:.1f}", f"{len(texts) / seconds / base:.2f}x", f"{same:.6f}"])
            print(rows[-1], flush=True)
        writer_texts = every[: args.writer_texts]
        vectors = _realistic.real_vectors()[: len(writer_texts)]
        seconds, size, _ = run(writer_texts, Precomputed(writer_texts, vectors), directory, "writer")
        ceiling = len(writer_texts) / seconds
        rows.append(["the writer alone (vectors given)", "", f"{seconds:.1f} s", f"{ceiling:,.0f}", "", ""])
        writer_bytes = size / len(writer_texts)
    table(["embedding", "cluster start + model load", f"{args.texts:,} texts", "docs/s", "vs in-process",
           "least cosine with in-process vectors"], rows, "Embedding real text chunks (int8 MiniLM), store=True")
    print(f"\nbytes per item in the database (mean {np.mean([len(t) for t in writer_texts]):.0f} characters of text "
          f"stored): {writer_bytes:,.0f}; in the smaller run: {per_item:,.0f}")
    plan = []
    per_worker = float(rows[1][3]) if len(rows) > 2 else base
    for total in (10_000_000, 100_000_000):
        for machines in (1, 8, 32, 128):
            rate = min(per_worker * machines, ceiling)
            plan.append([f"{total:,}", machines, f"{rate:,.0f}", f"{total / rate / 3600:,.1f} h",
                         "writer" if rate == ceiling else "workers", f"{total * writer_bytes / 2**30:,.0f} GiB"])
    table(["documents", "machines like this one", "docs/s", "time to embed", "bound by", "database file"], plan,
          "On paper: one Dask worker per machine at the 1-worker rate, one writer")


if __name__ == "__main__":
    sys.exit(main())
