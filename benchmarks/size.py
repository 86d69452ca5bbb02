"""On-disk size of a collection against its payload: the vectors plus the stored text.

    python benchmarks/size.py
    python benchmarks/size.py --count 100000

Data: --count items (default 10,000), each a seeded random 384-dimension float32 vector and
800-1,200 characters of synthetic text (about 1 KB), ids doc000000...; no metadata. The
payload is the vectors' bytes plus the text's UTF-8 bytes.

Databases, each a fresh file, measured after a checkpoint (the WAL emptied):

- embedkit, embed_multi: `Collection.embed_multi(items, store=True)` with a stand-in model
  that returns the same vectors (rows written as embedding writes them: longest text first,
  a transaction per batch of 100);
- embedkit, upsert_vectors: `Collection.upsert_vectors(ids, matrix, content=texts)`, one
  transaction;
- each of the two without the keyword index (dropped, then VACUUM);
- reference: the same rows in a plain table of the collection's shape (no hash index, no
  keyword index), inserted with executemany at embedkit's page size;
- llm, if installed: `llm.Collection.embed_multi(..., store=True)` with a stand-in llm model;
- the upsert_vectors database copied into each SQLite page size (VACUUM INTO a file of
  that page size), with and without the keyword index: why embedkit uses 64 KiB pages.

Goals (issue 16): <= 1.25x the payload with the keyword index, <= 1.10x without.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import environment_line, table  # noqa: E402
from ingest import StandIn, make_data  # noqa: E402

import embedkit  # noqa: E402
from embedkit import fulltext, models, storage  # noqa: E402

WITH_INDEX, WITHOUT_INDEX = 1.25, 1.10
PAGE_SIZES = (4096, 8192, 16384, 32768, 65536)


def file_size(path) -> int:
    conn = storage.sqlite3.connect(str(path))
    conn.execute("pragma wal_checkpoint(truncate)")
    conn.close()
    return Path(path).stat().st_size


def without_keyword_index(path, target) -> int:
    """The same database without the collection's keyword index, vacuumed."""
    with embedkit.Database(path) as db:
        db.conn.execute(f"vacuum into '{target}'")
    with embedkit.Database(target) as db:
        fulltext.drop(db.conn, "bench")
        db.conn.execute("vacuum")
    return file_size(target)


def with_page_size(path, target, page_size) -> int:
    conn = storage.sqlite3.connect(str(path))
    conn.execute("pragma wal_checkpoint(truncate)")
    conn.close()
    fresh = storage.sqlite3.connect(str(target), isolation_level=None)
    fresh.execute(f"pragma page_size = {page_size}")
    fresh.execute("vacuum")  # an empty file takes the page size; VACUUM INTO then keeps it
    fresh.close()
    Path(target).unlink()
    conn = storage.sqlite3.connect(str(path), isolation_level=None)
    conn.execute("pragma journal_mode = delete")
    conn.execute(f"pragma page_size = {page_size}")
    conn.execute(f"vacuum into '{target}'")
    conn.execute("pragma journal_mode = wal")
    conn.close()
    return file_size(target)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(environment_line())
    ids, matrix, texts = make_data(args.count, args.seed)
    payload = matrix.nbytes + sum(len(t.encode()) for t in texts)
    print(f"{args.count:,} items: vectors {matrix.nbytes:,} + text {payload - matrix.nbytes:,} = {payload:,} bytes "
          f"(mean text {sum(map(len, texts)) / len(texts):.0f} characters)")
    model = models.register(StandIn())
    model.texts_per_call = 100
    model.vectors = dict(zip(texts, matrix))
    rows = []

    def add(name, size, goal=None):
        verdict = "" if goal is None else ("met" if size / payload <= goal else "NOT met")
        rows.append([name, f"{size:,}", f"{size / payload:.3f}x", f"<= {goal}x {verdict}" if goal else ""])
        return size / payload

    with tempfile.TemporaryDirectory(prefix="embedkit-bench-size-") as tmp:
        tmp = Path(tmp)
        with embedkit.Database(tmp / "embed.db") as db:
            db.create_collection("bench", model=model.model_id).embed_multi(
                [embedkit.Item(id, text) for id, text in zip(ids, texts)], store=True)
        with embedkit.Database(tmp / "upsert.db") as db:
            db.create_collection("bench", model=False).upsert_vectors(ids, matrix, content=texts)
        ratios = {
            "embed": add("embedkit, embed_multi", file_size(tmp / "embed.db"), WITH_INDEX),
            "upsert": add("embedkit, upsert_vectors", file_size(tmp / "upsert.db"), WITH_INDEX),
            "embed-bare": add("embedkit, embed_multi, no keyword index",
                              without_keyword_index(tmp / "embed.db", tmp / "embed-bare.db"), WITHOUT_INDEX),
            "upsert-bare": add("embedkit, upsert_vectors, no keyword index",
                               without_keyword_index(tmp / "upsert.db", tmp / "upsert-bare.db"), WITHOUT_INDEX),
        }
        conn = storage.connect(tmp / "plain.db")
        conn.execute("create table t (id text primary key, embedding blob not null, content text, metadata text, "
                      "content_hash blob, updated integer not null)")
        now = int(time.time())
        with conn:
            conn.executemany("insert into t values (?, ?, ?, null, null, ?)",
                             [(id, row.tobytes(), text, now) for id, row, text in zip(ids, matrix, texts)])
        conn.close()
        add("reference: plain table (executemany)", file_size(tmp / "plain.db"))
        try:
            import llm
            import sqlite_utils
        except ImportError:
            llm = None
        if llm is not None:
            vectors = {text: row for text, row in zip(texts, matrix.tolist())}

            class Precomputed(llm.EmbeddingModel):
                model_id = "precomputed"

                def embed_batch(self, items):
                    return (vectors[item] for item in items)

            with sqlite_utils.Database(str(tmp / "llm.db")) as llm_db:
                llm.Collection("bench", llm_db, model=Precomputed()).embed_multi(zip(ids, texts), store=True)
            add("reference: llm embed_multi (4 KiB pages)", file_size(tmp / "llm.db"))
        table(["database", "bytes", "/ payload", "goal"], rows,
              title=f"{args.count:,} items with ~1 KB text: file size / (vectors + text)")

        pages = []
        for page_size in PAGE_SIZES:
            size = with_page_size(tmp / "upsert.db", tmp / f"p{page_size}.db", page_size)
            bare = with_page_size(tmp / "upsert-bare.db", tmp / f"p{page_size}-bare.db", page_size)
            pages.append([f"{page_size // 1024} KiB", f"{size / payload:.3f}x", f"{bare / payload:.3f}x"])
        table(["page size", "with keyword index", "without"], pages,
              title="the upsert_vectors database in each page size (VACUUM INTO), / payload")

    print(f"\ngoals: with the keyword index <= {WITH_INDEX}x: embed_multi {ratios['embed']:.3f}x, "
          f"upsert_vectors {ratios['upsert']:.3f}x; without <= {WITHOUT_INDEX}x: embed_multi "
          f"{ratios['embed-bare']:.3f}x, upsert_vectors {ratios['upsert-bare']:.3f}x")


if __name__ == "__main__":
    main()
