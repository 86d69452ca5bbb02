"""Exact top-10 search: embedkit against an in-memory numpy reference on the same vectors.

For each size, random unit 384-d float32 vectors (seeded) are stored in a collection and
kept in memory as a numpy matrix. Measured, interleaved, best of several repetitions:

(a) warm: Collection.similar_by_vector(q, 10) once embedkit's cached matrix is built,
    against numpy `M @ q` + argpartition top-10 (goal: ratio <= 1.2x at 100k and 1M);
(b) cold: a one-off query in a fresh Database with no cache (sqlite-vec scans the table),
    against the same in-memory numpy query, and against numpy reading the BLOBs from SQLite;
(c) the CLI: `embedkit similar COLL ID -n 10` in a subprocess, wall seconds including startup.

Every embedkit answer is checked against the numpy top-10.

    python benchmarks/search.py                       # 10k, 100k, 1M
    python benchmarks/search.py --sizes 10k,100k --queries 10
"""

import argparse
import gc
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (  # noqa: E402
    data_dir,
    embedkit_command,
    environment_line,
    fmt_seconds,
    median,
    run_timed,
    table,
)

import embedkit  # noqa: E402
from embedkit import search, storage  # noqa: E402
from embedkit.items import content_hash  # noqa: E402

COLLECTION = "bench"
K = 10


def parse_size(text: str) -> int:
    text = text.strip().lower().replace("_", "")
    for suffix, factor in (("k", 1_000), ("m", 1_000_000)):
        if text.endswith(suffix):
            return int(float(text[:-1]) * factor)
    return int(text)


def item_id(i: int) -> str:
    return f"doc{i:07d}"


def reference_matrix(n, dims, seed) -> np.ndarray:
    rng = np.random.default_rng(seed)
    matrix = np.empty((n, dims), dtype=np.float32)
    step = 100_000
    for start in range(0, n, step):
        block = rng.standard_normal((min(step, n - start), dims), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        matrix[start : start + len(block)] = block
    return matrix


def numpy_top(matrix, query, k=K, exclude=None):
    """The reference: one matvec and an argpartition."""
    scores = matrix @ query
    if exclude is not None:
        scores[exclude] = -np.inf
    top = np.argpartition(scores, len(scores) - k)[len(scores) - k :]
    return top[np.argsort(-scores[top], kind="stable")]


def numpy_from_sqlite_top(conn, table, query, k=K, chunk=100_000):
    """A one-off reference without sqlite-vec: read every BLOB, matvec chunk by chunk."""
    cursor = conn.execute(f"select rowid, embedding from {storage.quote(table)}")
    best_scores, best_rows = np.empty(0, np.float32), np.empty(0, np.int64)
    while True:
        rows = cursor.fetchmany(chunk)
        if not rows:
            break
        block = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), -1)
        scores = np.concatenate([best_scores, block @ query])
        rowids = np.concatenate([best_rows, np.fromiter((r[0] for r in rows), np.int64, len(rows))])
        top = np.argpartition(scores, max(len(scores) - k, 0))[-k:]
        best_scores, best_rows = scores[top], rowids[top]
    return best_rows[np.argsort(-best_scores)]


def build_database(path, matrix, rebuild=False, metadata_of=lambda i: {"i": i}):
    """The collection as embedkit creates it, rows written directly in one transaction."""
    n, dims = matrix.shape
    if os.path.exists(path) and not rebuild:
        try:
            with embedkit.Database(path) as db:
                coll = db.collection(COLLECTION)
                ok = coll.count() == n and all(
                    np.array_equal(coll.vector(item_id(i)), matrix[i]) for i in {0, n // 2, n - 1}
                )
            if ok:
                return 0.0, False
        except Exception:
            pass
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    start = time.perf_counter()
    with embedkit.Database(path) as db:
        db.create_collection(COLLECTION)  # default model: all-MiniLM-L6-v2, 384 dimensions
    conn = storage.sqlite3.connect(path, isolation_level=None)
    conn.execute("pragma journal_mode = memory")  # no 1.5 GB WAL for a one-off bulk load
    conn.execute("pragma synchronous = off")
    conn.execute("pragma cache_size = -1000000")
    updated = storage.now()

    def rows():
        for i in range(n):
            content = f"synthetic item {i}"
            yield (item_id(i), matrix[i].tobytes(), content, json.dumps(metadata_of(i)), content_hash(content), updated)

    conn.execute("begin")
    conn.executemany(
        f"insert into {storage.quote(COLLECTION)} (id, embedding, content, metadata, content_hash, updated) "
        "values (?, ?, ?, ?, ?, ?)",
        rows(),
    )
    conn.execute("commit")
    conn.execute("pragma journal_mode = wal")  # what embedkit.connect sets anyway
    conn.close()
    return time.perf_counter() - start, True


def fresh_cold_state(db):
    """As in a new process: no cached matrix and no query seen at this version."""
    search.forget(db.key)
    search._searched.clear()


def ids_of(positions):
    return [item_id(int(i)) for i in positions]


def bench_size(n, args, cli_rows, warm_rows, cold_rows, breakdown_rows, setup_rows):
    dims = args.dims
    print(f"\n=== {n:,} vectors x {dims} dims ===", flush=True)
    t0 = time.perf_counter()
    matrix = reference_matrix(n, dims, args.seed)
    t_gen = time.perf_counter() - t0
    path = str(data_dir() / f"search-{n}-d{dims}-s{args.seed}.db")
    t_build, built = build_database(path, matrix, args.rebuild)
    size_mb = os.path.getsize(path) / 2**20
    print(
        f"vectors generated in {t_gen:.1f}s; database {path} "
        + (f"built in {t_build:.1f}s" if built else "reused")
        + f" ({size_mb:,.0f} MiB)",
        flush=True,
    )

    rng = np.random.default_rng(args.seed + 1)
    queries = rng.standard_normal((args.queries + args.cold_repeat + 3, dims), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    warmups, colds, warms = queries[:3], queries[3 : 3 + args.cold_repeat], queries[3 + args.cold_repeat :]

    # (b) cold: fresh Database, no cache -> sqlite-vec. Interleaved with the references.
    t_np_cold, t_ek_cold, t_blob_cold = [], [], []
    for q in colds:
        start = time.perf_counter()
        expected = ids_of(numpy_top(matrix, q))
        t_np_cold.append(time.perf_counter() - start)
        db = embedkit.Database(path)
        fresh_cold_state(db)
        coll = db.collection(COLLECTION)
        start = time.perf_counter()
        hits = coll.similar_by_vector(q, K)
        t_ek_cold.append(time.perf_counter() - start)
        assert (db.key, COLLECTION) not in search._cache, "cold query should not build the cache"
        got = [h.id for h in hits]
        assert got == expected, f"cold (sqlite-vec) top-{K} differs from numpy:\n{got}\n{expected}"
        if not args.skip_blob_reference:
            start = time.perf_counter()
            rowids = numpy_from_sqlite_top(db.conn, coll.table, q)
            t_blob_cold.append(time.perf_counter() - start)
            assert ids_of(rowids - 1) == expected
        db.close()

    # The next query at this version builds the cache; time it once.
    db = embedkit.Database(path)
    fresh_cold_state(db)
    coll = db.collection(COLLECTION)
    coll.similar_by_vector(warmups[0], K)  # sqlite-vec, marks the version as searched
    start = time.perf_counter()
    hits = coll.similar_by_vector(warmups[1], K)
    t_cache_build = time.perf_counter() - start
    assert (db.key, COLLECTION) in search._cache, "second query should build the cache"
    assert [h.id for h in hits] == ids_of(numpy_top(matrix, warmups[1]))
    for q in warmups:
        coll.similar_by_vector(q, K)
        numpy_top(matrix, q)

    # (a) warm, per query: best of --repeat, the two sides alternating which goes first.
    per_np, per_ek = [], []
    for j, q in enumerate(warms):
        best_np = best_ek = float("inf")
        for r in range(args.repeat):
            for side in ((0, 1) if (j + r) % 2 == 0 else (1, 0)):
                if side == 0:
                    start = time.perf_counter()
                    top = numpy_top(matrix, q)
                    best_np = min(best_np, time.perf_counter() - start)
                else:
                    start = time.perf_counter()
                    hits = coll.similar_by_vector(q, K)
                    best_ek = min(best_ek, time.perf_counter() - start)
        assert [h.id for h in hits] == ids_of(top), f"warm top-{K} differs from numpy for query {j}"
        assert all(abs(h.score - float(matrix[int(h.id[3:])] @ q)) < 1e-5 for h in hits)
        per_np.append(best_np)
        per_ek.append(best_ek)
    assert (db.key, COLLECTION) in search._cache

    # Where a warm query's time goes (best of --repeat each, same queries).
    cached = search._cache[(db.key, COLLECTION)]
    parts = {"version query": [], "matvec (M @ q)": [], "_best (argpartition+rank)": [], "fetch rows": []}
    for q in warms:
        for _ in range(args.repeat):
            start = time.perf_counter()
            coll.version()
            parts["version query"].append(time.perf_counter() - start)
            start = time.perf_counter()
            scores = cached.matrix @ q
            parts["matvec (M @ q)"].append(time.perf_counter() - start)
            start = time.perf_counter()
            best = search._best(scores, cached.ids, K)
            parts["_best (argpartition+rank)"].append(time.perf_counter() - start)
            ids = [id for id, _ in best]
            start = time.perf_counter()
            db.conn.execute(
                f"select id, content, metadata from {storage.quote(coll.table)} where id in ({','.join('?' * len(ids))})",
                ids,
            ).fetchall()
            parts["fetch rows"].append(time.perf_counter() - start)
    db.close()

    # (c) CLI one-off, by stored id (excluded from its own results).
    target = n // 3
    expected = ids_of(numpy_top(matrix, matrix[target].copy(), exclude=target))
    command = [*embedkit_command(), "similar", COLLECTION, item_id(target), "-n", str(K), "-d", path]
    t_cli = []
    for _ in range(args.cli_repeat):
        seconds, proc = run_timed(command)
        t_cli.append(seconds)
    got = [json.loads(line)["id"] for line in proc.stdout.splitlines()]
    assert got == expected, f"CLI top-{K} differs from numpy:\n{got}\n{expected}"

    del matrix, cached
    gc.collect()
    print("results agree (cold sqlite-vec, cache build, warm cache and CLI top-10 ids == numpy)", flush=True)

    size = f"{n:,}"
    setup_rows.append([size, f"{t_gen:.1f} s", f"{t_build:.1f} s" if built else "reused", f"{size_mb:,.0f} MiB", fmt_seconds(t_cache_build)])
    paired = median([ek / ref for ek, ref in zip(per_ek, per_np)])
    warm_rows.append([
        size,
        fmt_seconds(median(per_np)), fmt_seconds(median(per_ek)), f"{median(per_ek) / median(per_np):.2f}x",
        fmt_seconds(min(per_np)), fmt_seconds(min(per_ek)), f"{min(per_ek) / min(per_np):.2f}x",
        f"{paired:.2f}x",
        "(none)" if n < 100_000 else ("met" if median(per_ek) / median(per_np) <= 1.2 else "MISSED"),
    ])
    cold = [size, fmt_seconds(min(t_np_cold)), fmt_seconds(min(t_ek_cold)), f"{min(t_ek_cold) / min(t_np_cold):.1f}x"]
    if t_blob_cold:
        cold += [fmt_seconds(min(t_blob_cold)), f"{min(t_ek_cold) / min(t_blob_cold):.2f}x"]
    cold_rows.append(cold)
    breakdown_rows.append([size] + [fmt_seconds(min(v)) for v in parts.values()] + [fmt_seconds(min(per_ek))])
    cli_rows.append([size, f"{min(t_cli):.3f} s", f"{median(t_cli):.3f} s"])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10k,100k,1M", help="comma-separated collection sizes (default: 10k,100k,1M)")
    parser.add_argument("--dims", type=int, default=384, help="vector dimensions (default: 384, the default model's)")
    parser.add_argument("--queries", type=int, default=20, help="warm queries per size (default: 20)")
    parser.add_argument("--repeat", type=int, default=5, help="repetitions per warm query; the best counts (default: 5)")
    parser.add_argument("--cold-repeat", type=int, default=3, help="cold one-off queries per size (default: 3)")
    parser.add_argument("--cli-repeat", type=int, default=3, help="CLI runs per size (default: 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rebuild", action="store_true", help="regenerate databases under benchmarks/data/ even if present")
    parser.add_argument("--skip-blob-reference", action="store_true", help="skip the numpy-reading-SQLite cold reference")
    args = parser.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]

    print("embedkit search benchmark: exact cosine top-10")
    print(environment_line())
    print(f"sqlite-vec on embedkit connections: {storage.has_sqlite_vec(storage.connect(':memory:'))}; "
          f"EMBEDKIT_CACHE_MB={search.CACHE_MB}")

    setup_rows, warm_rows, cold_rows, breakdown_rows, cli_rows = [], [], [], [], []
    for n in sizes:
        bench_size(n, args, cli_rows, warm_rows, cold_rows, breakdown_rows, setup_rows)

    table(["size", "generate", "insert", "db file", "embedkit cache build (2nd query)"], setup_rows, "Setup")
    table(
        ["size", "numpy median", "embedkit median", "ratio", "numpy min", "embedkit min", "ratio",
         "median per-query ratio", "goal <=1.2x"],
        warm_rows,
        f"(a) Warm: similar_by_vector(q, {K}) on the cached matrix vs numpy M@q + argpartition "
        f"({args.queries} queries, best of {args.repeat} each)",
    )
    headers = ["size", "numpy in-memory", "embedkit cold (sqlite-vec)", "ratio"]
    if not args.skip_blob_reference:
        headers += ["numpy reading BLOBs from SQLite", "ratio"]
    table(headers, cold_rows, f"(b) Cold one-off query, fresh Database, no cache (best of {args.cold_repeat})")
    table(
        ["size", "version query", "matvec (M @ q)", "_best (argpartition+rank)", "fetch 10 rows", "whole query"],
        breakdown_rows,
        "Warm query breakdown (best per part)",
    )
    table(["size", "best", "median"], cli_rows, f"(c) CLI one-off: embedkit similar {COLLECTION} ID -n {K} (wall, incl. Python startup; {args.cli_repeat} runs)")
    seconds, _ = run_timed([sys.executable, "-c", "import embedkit.cli"])
    print(f"\nfor scale: `python -c 'import embedkit.cli'` takes {seconds:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
