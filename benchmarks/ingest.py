"""Storing precomputed vectors: Collection.upsert_vectors against a plain executemany.

    python benchmarks/ingest.py
    python benchmarks/ingest.py --count 20000 --rounds 2

Data: --count items (default 100,000), each a random 384-dimension float32 vector and a
seeded synthetic text of 800-1,200 characters (ids doc000000...).

Sides, each into a fresh database file, interleaved round by round (the order rotating,
the disk synced before each), the best round of each counting:

- reference: `executemany("insert into t values (?, ?, ?, ?, ?, ?)", rows)` and a commit,
  into a table of the collection's shape (id text primary key, embedding blob, content
  text, metadata text, content_hash blob, updated integer) in a database opened as embedkit
  opens one; rows prepared beforehand, so only SQLite's work is timed;
- reference + keyword index: the same, then one FTS5 insert of all the text into an
  external-content index like a collection's, in the same transaction: the least work
  that leaves the same text searchable by keyword;
- embedkit: `Collection.upsert_vectors(ids, matrix, content=texts)` into a new
  collection: checks, content hashes, the rows, the hash index, the keyword index and the
  version, from the numpy matrix and the list of texts;
- embedkit without a keyword index: the same into a collection whose keyword index was
  dropped;
- embed-multi's write side: `Collection.embed_multi(items, store=True)` with a stand-in
  model that returns the same precomputed vectors (no model time);
- llm, if installed: `llm.Collection.embed_multi(..., store=True)` with a stand-in llm
  model returning the precomputed vectors (llm has no call that takes a vector).

Goal (issue 16): embedkit >= 0.8x the reference's rows/s.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import environment_line, synthetic_texts, table  # noqa: E402

import embedkit  # noqa: E402
from embedkit import fulltext, models, storage  # noqa: E402
from embedkit.items import content_hash  # noqa: E402

GOAL = 0.8
DIMENSIONS = 384


class StandIn(models.EmbeddingModel):
    """Returns the precomputed vector of each text: embed_multi's own work, without a model."""

    model_id = "ingest-stand-in"
    dimensions = DIMENSIONS
    source = "benchmarks/ingest.py"
    texts_per_call = 1000

    def __init__(self):
        super().__init__()
        self.vectors = {}

    def _embed(self, texts):
        return np.stack([self.vectors[text] for text in texts])


def make_data(count, seed):
    rng = np.random.default_rng(seed)
    base = synthetic_texts(2000, seed, 150, 220)
    texts = [f"{i}: " + base[i % len(base)][: int(rng.integers(800, 1200))] for i in range(count)]
    matrix = rng.standard_normal((count, DIMENSIONS)).astype(np.float32)
    ids = [f"doc{i:06d}" for i in range(count)]
    return ids, matrix, texts


def fresh(directory, name):
    path = Path(directory) / f"{name}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    return path


def reference(path, rows, keyword):
    conn = storage.connect(path)
    conn.execute(
        "create table t (id text primary key, embedding blob not null, content text, metadata text, "
        "content_hash blob, updated integer not null)"
    )
    if keyword:
        conn.execute(f"create virtual table t_fts using fts5(content, content='t', content_rowid='rowid', "
                     f"tokenize='{fulltext.TOKENIZE}')")
    start = time.perf_counter()
    conn.execute("begin")
    conn.executemany("insert into t values (?, ?, ?, ?, ?, ?)", rows)
    if keyword:
        conn.execute("insert into t_fts (rowid, content) select rowid, content from t")
    conn.execute("commit")
    seconds = time.perf_counter() - start
    conn.close()
    return seconds


def embedkit_upsert(path, ids, matrix, texts, keyword):
    db = embedkit.Database(path)
    collection = db.create_collection("bench", model=False)
    if not keyword:
        fulltext.drop(db.conn, "bench")
    start = time.perf_counter()
    stats = collection.upsert_vectors(ids, matrix, content=texts)
    seconds = time.perf_counter() - start
    assert stats.added == len(ids), stats
    db.close()
    return seconds


def embedkit_embed_multi(path, ids, texts, model):
    db = embedkit.Database(path)
    collection = db.create_collection("bench", model=model.model_id)
    items = [embedkit.Item(id, text) for id, text in zip(ids, texts)]
    start = time.perf_counter()
    stats = collection.embed_multi(items, store=True)
    seconds = time.perf_counter() - start
    assert stats.embedded == len(ids), stats.summary()
    db.close()
    return seconds


def llm_embed_multi(path, ids, matrix, texts):
    import llm
    import sqlite_utils

    vectors = {text: row for text, row in zip(texts, matrix.tolist())}

    class Precomputed(llm.EmbeddingModel):
        model_id = "precomputed"
        batch_size = 1000

        def embed_batch(self, items):
            return (vectors[item] for item in items)

    db = sqlite_utils.Database(str(path))
    collection = llm.Collection("bench", db, model=Precomputed())
    start = time.perf_counter()
    collection.embed_multi(zip(ids, texts), store=True, batch_size=1000)
    seconds = time.perf_counter() - start
    assert collection.count() == len(ids)
    db.close()
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-llm", action="store_true", help="leave llm out even if it is installed")
    args = parser.parse_args()
    print(environment_line())
    ids, matrix, texts = make_data(args.count, args.seed)
    now = int(time.time())
    rows = [(id, row.tobytes(), text, None, content_hash(text), now) for id, row, text in zip(ids, matrix, texts)]
    payload = matrix.nbytes + sum(len(t.encode()) for t in texts)
    print(f"{args.count:,} items: vectors {matrix.nbytes / 1e6:.0f} MB + text {(payload - matrix.nbytes) / 1e6:.0f} MB")
    model = models.register(StandIn())
    model.vectors = dict(zip(texts, matrix))
    try:
        import llm  # noqa: F401

        has_llm = not args.no_llm
    except ImportError:
        has_llm = False

    with tempfile.TemporaryDirectory(prefix="embedkit-bench-ingest-") as tmp:
        sides = {
            "reference: executemany": lambda: reference(fresh(tmp, "ref"), rows, False),
            "reference: executemany + FTS5 insert": lambda: reference(fresh(tmp, "ref-fts"), rows, True),
            "embedkit upsert_vectors": lambda: embedkit_upsert(fresh(tmp, "ek"), ids, matrix, texts, True),
            "embedkit upsert_vectors, no keyword index": lambda: embedkit_upsert(fresh(tmp, "ek-nokw"), ids, matrix,
                                                                                texts, False),
            "embedkit embed_multi (stand-in model)": lambda: embedkit_embed_multi(fresh(tmp, "em"), ids, texts, model),
        }
        if has_llm:
            sides["llm Collection.embed_multi (stand-in model)"] = lambda: llm_embed_multi(fresh(tmp, "llm"), ids,
                                                                                         matrix, texts)
        times = {name: [] for name in sides}
        names = list(sides)
        for round in range(args.rounds):
            order = names[round % len(names):] + names[: round % len(names)]
            for name in order:
                os.sync()  # the last side's 250 MB written out first: none pays for another's writes
                times[name].append(sides[name]())
            print(f"round {round + 1}: " + ", ".join(f"{name.split(':')[0][:24]} {times[name][-1]:.2f}s" for name in names),
                  flush=True)

    best = {name: min(seconds) for name, seconds in times.items()}
    base, base_fts = best["reference: executemany"], best["reference: executemany + FTS5 insert"]
    result = [
        [name, f"{seconds:.2f} s", f"{args.count / seconds:,.0f}", f"{base / seconds:.2f}x", f"{base_fts / seconds:.2f}x"]
        for name, seconds in best.items()
    ]
    table(["side", "best", "rows/s", "vs executemany", "vs executemany + FTS5"], result,
          f"{args.count:,} x {DIMENSIONS}-d vectors with ~1 KB text, best of {args.rounds} rounds")
    ratio = base / best["embedkit upsert_vectors"]
    bare = base / best["embedkit upsert_vectors, no keyword index"]
    with_fts = base_fts / best["embedkit upsert_vectors"]
    print(f"\ngoal upsert_vectors >= {GOAL}x executemany's rows/s: {ratio:.2f}x ({'met' if ratio >= GOAL else 'NOT met'});"
          f" without a keyword index {bare:.2f}x ({'met' if bare >= GOAL else 'NOT met'});"
          f" against executemany + the same FTS5 insert {with_fts:.2f}x ({'met' if with_fts >= GOAL else 'NOT met'})")


if __name__ == "__main__":
    main()
