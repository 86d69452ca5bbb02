"""The approximate index (ann.py, `embedkit index --ann`) against exact search, same run.

For each set of vectors (default: 1M realistic and 1M uniform random unit vectors, 384-d), a
collection is written straight into a database (metadata {"shard": i % 100}, so a filter on
one shard keeps 1%), and measured:

- the exact references: warm (embedkit's cached matrix, `exact=True`) and cold (a fresh
  Database: the sqlite-vec scan), and the exact top 10 by numpy for recall;
- `embedkit index bench --ann` in a subprocess: build time, its peak resident memory, the
  file's size;
- ann.top_n(coll, q, 10) in this process: recall@10 and median time over --queries queries,
  for oversampling 1, 2, 4 (the default) and 8; the speed-up over warm and cold exact;
- a 1% filter (shard = 7): recall@10 against the exact filtered top 10, and time;
- cold: a new process that opens the database and makes one query through the index (the
  file memory-mapped), timed around the call, and its resident memory after it;
- the index after 1% of the items changed (pending changes scored beside it), and sync().

Realistic vectors: MiniLM (all-MiniLM-L6-v2-int8) vectors of ~128k real text chunks of this
machine, and synthetic ones drawn around them (see _realistic.py); queries are real chunks
held out of the collection.

    python benchmarks/ann.py                      # 1M realistic + 1M random
    python benchmarks/ann.py --size 100k --sets realistic
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _realistic  # noqa: E402
from _common import data_dir, embedkit_command, environment_line, fmt_seconds, offline_env, search_benchmark, table  # noqa: E402

import embedkit  # noqa: E402
from embedkit import ann, search, storage  # noqa: E402
from embedkit.filters import Filter  # noqa: E402

K = 10
COLLECTION = "bench"
SHARDS = 100
OVERSAMPLES = (1, 2, 4, 8)
EXPANSIONS = (64, 128, 256)


bench = search_benchmark()


def vectors(name, size, queries, seed):
    if name == "realistic":
        return _realistic.dataset(size, queries, seed)
    rng = np.random.default_rng(seed)
    base = bench.reference_matrix(size, 384, seed)
    held = rng.standard_normal((queries, 384), dtype=np.float32)
    return base, held / np.linalg.norm(held, axis=1, keepdims=True)


def truth(matrix, queries, rows=None):
    found = []
    for q in queries:
        scores = matrix @ q if rows is None else matrix[rows] @ q
        top = np.argpartition(scores, len(scores) - K)[len(scores) - K :]
        top = top[np.argsort(-scores[top])]
        found.append([bench.item_id(int(i if rows is None else rows[i])) for i in top])
    return found


def recall(got, want):
    return len(set(got) & set(want)) / K


def cold_query(path, query, kind):
    """A new process: open the database, one query through the index or exact; (seconds of
    the call, resident MiB after it)."""
    script = (
        "import sys, time, json, numpy as np, embedkit\n"
        "from embedkit import ann, search\n"
        "db = embedkit.Database(sys.argv[1]); coll = db.collection(sys.argv[2])\n"
        "q = np.array(json.loads(sys.argv[3]), dtype=np.float32)\n"
        "start = time.perf_counter()\n"
        "hits = ann.top_n(coll, q, 10) if sys.argv[4] == 'ann' else search.top_n(coll, q, 10, exact=True)\n"
        "took = time.perf_counter() - start\n"
        "assert hits\n"
        "rss = [int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmRSS')][0] / 1024\n"
        "print(json.dumps([took, rss]))\n"
    )
    out = subprocess.run([sys.executable, "-c", script, path, COLLECTION, json.dumps(query.tolist()), kind],
                         capture_output=True, text=True, env=offline_env())
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout)


def run_set(name, args, rows):
    print(f"\n=== {name}: {args.size:,} x 384 ===", flush=True)
    start = time.perf_counter()
    matrix, queries = vectors(name, args.size, args.queries, args.seed)
    path = str(data_dir() / f"ann-{name}-{args.size}.db")
    seconds, built = bench.build_database(path, matrix, args.rebuild, metadata_of=lambda i: {"shard": i % SHARDS})
    print(f"vectors and database ready in {time.perf_counter() - start:.0f}s ({path}"
          + (f", written in {seconds:.0f}s)" if built else ", reused)"), flush=True)
    want = truth(matrix, queries)
    shard = np.arange(7, len(matrix), SHARDS)
    want_filtered = truth(matrix, queries, shard)
    if name == "realistic":
        real = len(_realistic.real_vectors()) - args.queries  # the real ones come first
        report = _realistic.fit_report(matrix[:real], matrix[real:])
        rows["fit"].append([name, *(f"{report[s][k]:.3f}" for s in ("real", "synthetic") for k in ("nn1", "nn10", "mean"))])

    # Build, in a child process: its time and peak memory are its own.
    with embedkit.Database(path) as db:
        kept = args.keep_index and ann.status(db.collection(COLLECTION))["usable"]
        if not kept:
            ann.drop(db.collection(COLLECTION))
    if kept:
        with embedkit.Database(path) as db:
            status = ann.status(db.collection(COLLECTION))
        rows["build"].append([name, f"{args.size:,}", "(kept from an earlier run)", "", f"{status['bytes'] / 2**20:,.0f} MiB",
                              f"{status['bytes'] / (args.size * 384 * 4):.2f}x", ""])
    else:
        build_index(name, path, args, rows)
    run_queries(name, path, args, rows, matrix, queries, want, want_filtered)


def build_index(name, path, args, rows):
    begin = time.perf_counter()
    # GNU time reports the child's own peak memory and CPU time (the machine may be shared).
    out = subprocess.run(["/usr/bin/time", "-f", "%M %U %S", *embedkit_command(), "index", COLLECTION, "--ann", "-d", path],
                         capture_output=True, text=True, env=offline_env())
    build_seconds = time.perf_counter() - begin
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    kilobytes, user, system = out.stderr.strip().splitlines()[-1].split()
    peak, cpu = int(kilobytes) / 1024, float(user) + float(system)
    status = json.loads(out.stdout)
    rows["build"].append([name, f"{args.size:,}", f"{build_seconds:.0f} s", f"{cpu:.0f} s", f"{status['bytes'] / 2**20:,.0f} MiB",
                          f"{status['bytes'] / (args.size * 384 * 4):.2f}x", f"{peak:,.0f} MiB"])
    print(f"built in {build_seconds:.0f}s, {status['bytes'] / 2**20:,.0f} MiB", flush=True)


def run_queries(name, path, args, rows, matrix, queries, want, want_filtered):
    db = embedkit.Database(path)
    coll = db.collection(COLLECTION)
    timed = queries[: args.timed]
    # Exact references: cold (sqlite-vec scan in a fresh state) and warm (the cached matrix).
    cold_exact = []
    for q in timed[:3]:
        bench.fresh_cold_state(db)
        t = time.perf_counter()
        search.top_n(coll, q, K, exact=True)
        cold_exact.append(time.perf_counter() - t)
    search.top_n(coll, queries[0], K, exact=True)  # the second query: the matrix loads beside it
    search.wait_for_cache()
    warm_exact = []
    for q in timed:
        t = time.perf_counter()
        search.top_n(coll, q, K, exact=True)
        warm_exact.append(time.perf_counter() - t)
    warm, cold = float(np.median(warm_exact)), float(np.median(cold_exact))
    search.forget(db.key)  # the matrix's memory back

    chosen = ann.EXPANSION_SEARCH
    for expansion, oversample in [(e, ann.OVERSAMPLE) for e in EXPANSIONS] + [(chosen, o) for o in OVERSAMPLES if o != ann.OVERSAMPLE]:
        ann.EXPANSION_SEARCH = expansion
        found, times = [], []
        for q, w in zip(queries, want):
            t = time.perf_counter()
            hits = ann.top_n(coll, q, K, oversample=oversample)
            times.append(time.perf_counter() - t)
            found.append(recall([id for id, _ in hits], w))
        t = float(np.median(times))
        r = float(np.mean(found))
        default = oversample == ann.OVERSAMPLE and expansion == chosen
        rows["query"].append([name, f"{expansion}", f"{oversample}", "yes" if default else "", f"{r:.3f}",
                              f"{min(found):.1f}", str(sum(f < 0.5 for f in found)),
                              fmt_seconds(t), f"{warm / t:.0f}x", f"{cold / t:.0f}x",
                              ("met" if r >= 0.95 and warm / t >= 20 else "MISSED") if default and name == "realistic" else ""])
        print(f"  expansion {expansion}, oversample {oversample}: recall@10 {r:.3f}, {fmt_seconds(t).strip()} "
              f"({warm / t:.0f}x warm exact)", flush=True)
    ann.EXPANSION_SEARCH = chosen

    one_shard = Filter({"shard": 7})
    found, times, fallbacks = [], [], 0
    for q, w in zip(queries, want_filtered):
        t = time.perf_counter()
        hits = ann.top_n(coll, q, K, filter=one_shard)
        times.append(time.perf_counter() - t)
        if hits is None:
            fallbacks += 1
            continue
        found.append(recall([id for id, _ in hits], w))
    rows["filter"].append([name, f"{np.mean(found):.3f}", f"{min(found):.1f}", fmt_seconds(float(np.median(times))),
                           f"{fallbacks} of {len(queries)}",
                           "met" if np.mean(found) >= 0.95 else "MISSED"])

    colds = [cold_query(path, q, "ann") for q in queries[-3:]]
    exact_colds = [cold_query(path, q, "exact") for q in queries[-2:]]
    first = min(c[0] for c in colds)
    rows["cold"].append([name, fmt_seconds(first), f"{min(c[1] for c in colds):,.0f} MiB",
                         fmt_seconds(min(c[0] for c in exact_colds)), f"{min(c[1] for c in exact_colds):,.0f} MiB",
                         "met" if first <= 0.1 else "MISSED"])

    # 1% of the items changed by another writer: scored beside the index, then folded in.
    changed = max(1, args.size // 100)
    moved = np.roll(np.arange(changed), 1)
    with storage.transaction(db.conn):
        db.conn.executemany(
            f"update {COLLECTION} set embedding = ? where id = ?",
            [(matrix[int(j)].tobytes(), bench.item_id(int(i))) for i, j in zip(range(changed), moved)],
        )
    pending = ann.status(coll)["pending"]
    times = []
    for q in timed:
        t = time.perf_counter()
        ann.top_n(coll, q, K)
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    ann.sync(coll)
    folded = time.perf_counter() - t
    rows["changes"].append([name, f"{pending:,}", fmt_seconds(float(np.median(times))), fmt_seconds(folded)])
    with storage.transaction(db.conn):  # put the vectors back, for the next run
        db.conn.executemany(f"update {COLLECTION} set embedding = ? where id = ?",
                            [(matrix[i].tobytes(), bench.item_id(i)) for i in range(changed)])
    ann.sync(coll)
    rows["reference"].append([name, f"{args.size:,}", fmt_seconds(warm), fmt_seconds(cold)])
    db.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=bench.parse_size, default=bench.parse_size("1M"))
    parser.add_argument("--sets", default="realistic,random")
    parser.add_argument("--queries", type=int, default=200, help="queries for recall (default: 200)")
    parser.add_argument("--timed", type=int, default=20, help="of which timed for the warm exact reference (default: 20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rebuild", action="store_true", help="write the databases again even if present")
    parser.add_argument("--keep-index", action="store_true", help="use an index an earlier run built, if usable")
    args = parser.parse_args()

    print("embedkit approximate index (usearch HNSW) vs exact search")
    print(environment_line())
    print(f"index: {ann.DTYPE}, connectivity {ann.CONNECTIVITY}, expansion {ann.EXPANSION_ADD} (add) / "
          f"{ann.EXPANSION_SEARCH} (search), oversample {ann.OVERSAMPLE}")
    rows = {key: [] for key in ("fit", "build", "reference", "query", "filter", "cold", "changes")}
    started = time.perf_counter()
    for name in args.sets.split(","):
        run_set(name.strip(), args, rows)

    if rows["fit"]:
        table(["set", "real nn1", "real nn10", "real mean", "synthetic nn1", "synthetic nn10", "synthetic mean"],
              rows["fit"], "The generator: mean cosine to the 1st and 10th nearest neighbour, and between points, in equal-sized samples")
    table(["set", "items", "exact warm (cached matrix)", "exact cold (sqlite-vec scan)"], rows["reference"],
          "Exact references (median)")
    table(["set", "items", "build (embedkit index --ann)", "its CPU time", "file", "/ float32 vectors",
           "peak memory of the build"],
          rows["build"], "Building the index")
    table(["set", "expansion", "oversample", "default", "recall@10", "worst", "below 0.5", "query median",
           "vs exact warm", "vs exact cold", "goal (>= 20x warm at >= 0.95)"], rows["query"],
          f"Queries ({args.queries} per set)")
    table(["set", "recall@10", "worst", "query median", "fell back to exact", "goal (>= 0.95)"], rows["filter"],
          "A 1% filter (shard = 7)")
    table(["set", "first query, new process", "its memory", "exact, new process", "its memory", "goal (<= 0.1 s)"],
          rows["cold"], "Cold: a new process's first query (best of 3)")
    table(["set", "changes pending", "query median with them", "sync() folding them in"], rows["changes"],
          "After 1% of the items changed")
    print(f"\ntotal {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    sys.exit(main())
