"""Exact search with a metadata filter matching 1% of the rows, against the same search unfiltered.

    python benchmarks/filters.py [--items 100000] [--queries 20] [--seed 0]

100k seeded random unit 384-d vectors, each with metadata {"shard": i % 100}; the filter is
shard=7 (1,000 rows). Measured in the same run, through Collection.similar_by_vector:
- warm: the cached matrix (the second query on an unchanged collection onwards); the
  filter's first use reads the shard of every row once, later ones look it up;
- cold: a one-off query in a fresh Database (sqlite-vec scans the table), the CLI's case.
Goal: filtered faster than unfiltered. The filtered top-10 must equal numpy's over the 1,000
matching rows.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import data_dir, environment_line, median, table  # noqa: E402
from search import COLLECTION, build_database, fresh_cold_state, item_id, reference_matrix  # noqa: E402

import embedkit  # noqa: E402

SHARDS = 100
FILTER = {"shard": 7}


def timings(collection, queries, **options):
    seconds = []
    for query in queries:
        start = time.perf_counter()
        collection.similar_by_vector(query, 10, **options)
        seconds.append(time.perf_counter() - start)
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(environment_line())
    matrix = reference_matrix(args.items, 384, args.seed)
    path = str(data_dir() / f"filters-{args.items}-d384-s{args.seed}.db")
    built, fresh = build_database(path, matrix, metadata_of=lambda i: {"shard": i % SHARDS})
    print(f"{args.items:,} vectors, metadata shard = i % {SHARDS}: " + (f"built in {built:.1f} s" if fresh else "reused"))
    queries = np.random.default_rng(args.seed + 1).standard_normal((args.queries, 384)).astype(np.float32)

    with embedkit.Database(path) as db:
        collection = db.collection(COLLECTION)
        # correctness: the filtered top-10 is numpy's over the matching rows
        rows = np.arange(FILTER["shard"], args.items, SHARDS)
        for query in queries[:3]:
            scores = matrix[rows] @ (query / np.linalg.norm(query))
            expected = [item_id(int(rows[i])) for i in np.argsort(-scores)[:10]]
            assert [e.id for e in collection.similar_by_vector(query, 10, metadata=FILTER)] == expected
        collection.similar_by_vector(queries[0], 10)  # the cached matrix exists from here on
        first_filter = timings(collection, queries[:1], metadata=FILTER)[0]  # reads every row's shard once
        warm = {"unfiltered": [], "filtered": []}
        for _ in range(3):  # interleaved rounds, so drifting load hits both alike
            warm["unfiltered"] += timings(collection, queries)
            warm["filtered"] += timings(collection, queries, metadata=FILTER)
        cold = {"unfiltered": [], "filtered": []}
        for query in queries[:5]:
            for kind, options in (("unfiltered", {}), ("filtered", {"metadata": FILTER})):
                fresh_cold_state(db)
                cold[kind] += timings(collection, [query], **options)

    rows_out = []
    for name, measured in (("warm (cached matrix)", warm), ("cold (sqlite-vec scan)", cold)):
        unfiltered, filtered = median(measured["unfiltered"]), median(measured["filtered"])
        rows_out.append([name, f"{unfiltered * 1e3:.2f} ms", f"{filtered * 1e3:.2f} ms", f"{filtered / unfiltered:.3f}x"])
    table(["search", "unfiltered (median)", f"filtered, {100 / SHARDS:g}% of rows", "filtered / unfiltered"], rows_out,
          title=f"\n{args.items:,} items x 384 dims, top-10, {args.queries} queries")
    print(f"the filter's first use on a cached matrix (reads every row's shard once): {first_filter * 1e3:.1f} ms")
    verdict = all(median(m["filtered"]) < median(m["unfiltered"]) for m in (warm, cold))
    print(f"goal: filtered faster than unfiltered: {'met' if verdict else 'NOT met'}")


if __name__ == "__main__":
    main()
