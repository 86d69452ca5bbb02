"""How long embedkit's long jobs hold SQLite's write lock, and how long another writer waits.

On a collection of --items seeded random unit 384-d vectors (30,000 by default), each job
runs as embedkit runs it (transactions bounded: related.WRITE_ROWS, quantized.BUILD_ROWS, one
per embedding batch) and, for related and index, as they ran before they were bounded: every
list written in one transaction (the lists gathered, then written at once), every code
inserted in one transaction (BUILD_ROWS unbounded). For every run:

- its transactions (storage.transaction wrapped and timed): how many, the longest, the total;
- a writer in another thread, with its own connection, committing a one-row insert every
  10 ms throughout: the longest it waited for the lock, and its commits per second.

Jobs:
(a) Collection.embed_multi of --items new items, with size.py's stand-in model (seeded
    vectors from each text's hash: no model cost, the writes alone), batches of 100;
(b) Collection.compute_related(n=--n, 50 by default), a full run;
(c) quantized.build(collection, "int8").

The lock timeout a writer needs is the longest wait measured here (with room for a queue of
writers); storage.LOCK_TIMEOUT is chosen from it.

    python benchmarks/locks.py
    python benchmarks/locks.py --items 100000 --n 10
"""

import argparse
import contextlib
import functools
import os
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import data_dir, environment_line, table  # noqa: E402
from related import unit_rows  # noqa: E402
from search import COLLECTION, build_database  # noqa: E402
from size import StandIn  # noqa: E402

import embedkit  # noqa: E402
from embedkit import models, quantized, related, storage  # noqa: E402

PROBE_EVERY = 0.01


class Timed:
    """storage.transaction, timed: every transaction's seconds."""

    def __init__(self):
        self.seconds = []
        self.original = storage.transaction

    @contextlib.contextmanager
    def transaction(self, conn):
        if conn.in_transaction:
            with self.original(conn):
                yield conn
            return
        start = time.perf_counter()
        with self.original(conn):
            yield conn
        self.seconds.append(time.perf_counter() - start)

    def __enter__(self):
        storage.transaction = self.transaction
        return self

    def __exit__(self, *exc):
        storage.transaction = self.original


class Probe(threading.Thread):
    """Another writer: a one-row insert every PROBE_EVERY seconds; the longest wait for the lock."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path, self.waits, self.failures = path, [], 0
        self.done = threading.Event()

    def run(self):
        conn = storage.sqlite3.connect(self.path, isolation_level=None, timeout=600)
        conn.execute("create table if not exists probe (at real)")
        while not self.done.is_set():
            start = time.perf_counter()
            try:
                conn.execute("begin immediate")
                conn.execute("insert into probe values (?)", [start])
                conn.execute("commit")
            except storage.sqlite3.OperationalError:
                self.failures += 1
            self.waits.append(time.perf_counter() - start)
            time.sleep(PROBE_EVERY)
        conn.close()


def measure(path, job):
    probe = Probe(path)
    probe.start()
    time.sleep(0.2)
    with Timed() as timed:
        start = time.perf_counter()
        job()
        seconds = time.perf_counter() - start
    probe.done.set()
    probe.join()
    return {"seconds": seconds, "transactions": timed.seconds, "waits": probe.waits, "failures": probe.failures}


def fresh(path, matrix):
    build_database(path, matrix, rebuild=True)
    with embedkit.Database(path) as db:  # the bench collection, switched to the stand-in model
        db.conn.execute(f"update {storage.REGISTRY} set model = ? where name = ?", [StandIn.model_id, COLLECTION])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=30_000, help="collection size (default: 30000)")
    parser.add_argument("--n", type=int, default=50, help="related items per item (default: 50)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    models.register(StandIn())
    print(f"embedkit lock benchmark: {args.items:,} items, related -n {args.n}")
    print(environment_line())
    print(f"related.WRITE_ROWS={related.WRITE_ROWS}, quantized.BUILD_ROWS={quantized.BUILD_ROWS}, "
          f"a probe writer commits every {PROBE_EVERY * 1000:.0f} ms")
    matrix = unit_rows(np.random.default_rng(args.seed), args.items, 384)
    path = str(data_dir() / f"locks-{args.items}.db")
    texts = [f"new item {i} for the lock benchmark" for i in range(args.items)]

    def embed(db):
        db.collection(COLLECTION).embed_multi([embedkit.Item(f"new{i}", text) for i, text in enumerate(texts)])

    def related_in_one_transaction(db):
        gathered = {}
        write = related._write_lists
        related._write_lists = lambda conn, table, lists: gathered.update(lists)
        try:
            db.collection(COLLECTION).compute_related(n=args.n)
        finally:
            related._write_lists = write
        with storage.transaction(db.conn):  # nested: one transaction
            related._write_lists(db.conn, storage.quote(related.table_name(db.collection(COLLECTION))), gathered)

    jobs = [
        ("(a) embed-multi", embed, None),
        (f"(b) related -n {args.n}", lambda db: db.collection(COLLECTION).compute_related(n=args.n),
         related_in_one_transaction),
        ("(c) index --quantize int8", lambda db: quantized.build(db.collection(COLLECTION), "int8"),
         lambda db: unbounded_build(db)),
    ]

    def unbounded_build(db):
        saved, quantized.BUILD_ROWS = quantized.BUILD_ROWS, 10**12
        try:
            quantized.build(db.collection(COLLECTION), "int8")
        finally:
            quantized.BUILD_ROWS = saved

    rows = []
    for name, job, before in jobs:
        for bounded, run in ((True, job), (False, before)):
            if run is None:
                continue
            fresh(path, matrix)
            with embedkit.Database(path) as db:
                result = measure(path, functools.partial(run, db))
            txs, waits = result["transactions"], result["waits"]
            rows.append([f"{name}{'' if bounded else ', one transaction (before)'}", f"{result['seconds']:.1f} s",
                         f"{len(txs):,}", f"{max(txs):.3f} s", f"{sum(txs):.1f} s", f"{max(waits):.3f} s",
                         f"{len(waits) / result['seconds']:.0f}/s", str(result["failures"])])
            print(" | ".join(rows[-1]), flush=True)
    table(["job", "wall", "transactions", "longest", "total in transactions", "probe's longest wait",
           "probe commits", "probe failures"], rows, "Write lock held per transaction, and another writer's wait")
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path + suffix)


if __name__ == "__main__":
    main()
