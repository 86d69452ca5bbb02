"""Quantised indexes: a coarse pass over int8 or 1-bit codes + exact rescoring, against exact search.

(1) Random unit vectors (seeded, the same as search.py's), 1M x 384 by default, in a copy of
    search.py's database. For each index mode, embedkit.quantized.top_n(q, 10) with several
    oversampling factors, each query in a fresh Database (as a CLI process would), against
    two exact references measured in the same run, interleaved:
    - exact, cold: embedkit's exact one-off path, sqlite-vec's vec_distance_cosine scanning
      the collection's table (the SQL search.py runs), in a fresh Database;
    - exact, warm: numpy `M @ q` + argpartition on the in-memory matrix, what embedkit's
      cached matrix costs from the second query of a process on (search.py: within 1.2x).
    Recall@10 is against numpy's exact top 10. Also: the build time, the index's size, how a
    query's time splits between the KNN and the rescoring, and what the KNN costs per k.
(2) Real embeddings: all-MiniLM-L6-v2 vectors of ~13k docstrings of the standard library,
    numpy, scipy and sympy (real, varied text), and of 10k synthetic abstract-like texts (all
    alike: the same vocabulary everywhere, the hard case), embedded once and cached under
    benchmarks/data/. Recall@10 of each mode per oversampling factor, over 200 held-out queries.

The goal: the bit index >= 10x faster than the exact cold path at 1M, at recall@10 >= 0.95.

    python benchmarks/quantized.py                  # 1M random + real embeddings
    python benchmarks/quantized.py --sizes 100k --skip-real
"""

import argparse
import contextlib
import importlib
import importlib.util
import inspect
import io
import os
import pkgutil
import shutil
import sys
import tempfile
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import data_dir, environment_line, fmt_seconds, median, search_benchmark, synthetic_texts, table  # noqa: E402

import embedkit  # noqa: E402
from embedkit import quantized, storage  # noqa: E402

K = 10
SWEEP = {"bit": (5, 10, 20, 40), "int8": (1, 2, 4)}


bench = search_benchmark()


def exact_cold(coll, query):
    """embedkit's exact one-off path: the statement search.py's sqlite-vec scan runs."""
    rows = coll.db.conn.execute(
        f"""
        select id, coalesce(vec_distance_cosine(embedding, :query), 1.0) as distance
        from {storage.quote(coll.table)} order by distance, id limit :n
        """,
        {"query": query.tobytes(), "n": K},
    ).fetchall()
    return [id for id, _ in rows]


def used_bytes(conn):
    pages = conn.execute("pragma page_count").fetchone()[0] - conn.execute("pragma freelist_count").fetchone()[0]
    return pages * conn.execute("pragma page_size").fetchone()[0]


def database_copy(n, dims, seed, matrix):
    """A database of the vectors of search.py's, copied from its file when that is there: the
    index is built in the copy, so search.py keeps measuring a collection without one."""
    path = str(data_dir() / f"quantized-{n}-d{dims}-s{seed}.db")
    source = str(data_dir() / f"search-{n}-d{dims}-s{seed}.db")
    if not os.path.exists(path) and os.path.exists(source):
        conn = storage.sqlite3.connect(source)
        conn.execute("pragma wal_checkpoint(truncate)")
        conn.close()
        shutil.copyfile(source, path)
    seconds, built = bench.build_database(path, matrix)
    return path, seconds, built


def random_vectors(n, args, rows):
    dims = args.dims
    print(f"\n=== {n:,} random unit vectors x {dims} dims ===", flush=True)
    start = time.perf_counter()
    matrix = bench.reference_matrix(n, dims, args.seed)
    path, seconds, built = database_copy(n, dims, args.seed, matrix)
    print(f"vectors and database ready in {time.perf_counter() - start:.1f}s ({path}"
          + (f", built in {seconds:.1f}s" if built else ", reused") + ")", flush=True)

    rng = np.random.default_rng(args.seed + 7)
    queries = rng.standard_normal((args.queries, dims), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    truth = [bench.ids_of(bench.numpy_top(matrix, q)) for q in queries]
    timed = queries[: args.timed]

    # The references, interleaved with nothing else: cold exact in a fresh Database per query.
    t_cold, t_warm = [], []
    for q, want in zip(timed, truth):
        with embedkit.Database(path) as db:
            coll = db.collection(bench.COLLECTION)
            start = time.perf_counter()
            got = exact_cold(coll, q)
            t_cold.append(time.perf_counter() - start)
        assert got == want, "the exact sqlite-vec scan disagrees with numpy"
        start = time.perf_counter()
        bench.numpy_top(matrix, q)
        t_warm.append(time.perf_counter() - start)
    cold, warm = median(t_cold), median(t_warm)
    rows["reference"].append([f"{n:,}", fmt_seconds(cold), fmt_seconds(min(t_cold)), fmt_seconds(warm), fmt_seconds(min(t_warm))])

    for mode in args.modes:
        with embedkit.Database(path) as db:
            coll = db.collection(bench.COLLECTION)
            quantized.drop(coll)
            before = used_bytes(db.conn)
            start = time.perf_counter()
            status = quantized.build(coll, mode)
            build_seconds = time.perf_counter() - start
            size = used_bytes(db.conn) - before
        assert status["rows"] == n and status["pending"] == 0
        rows["build"].append([f"{n:,}", mode, f"{build_seconds:.1f} s", f"{size / 2**20:,.0f} MiB",
                              f"{size / (n * dims * 4):.2f}x"])
        print(f"{mode}: built in {build_seconds:.1f}s, {size / 2**20:,.0f} MiB", flush=True)

        for oversample in SWEEP[mode]:
            recalls, t_index, t_knn = [], [], []
            for j, (q, want) in enumerate(zip(queries, truth)):
                with embedkit.Database(path) as db:  # a fresh connection per query, as a CLI run
                    coll = db.collection(bench.COLLECTION)
                    start = time.perf_counter()
                    hits = quantized.top_n(coll, q, K, oversample=oversample)
                    elapsed = time.perf_counter() - start
                    if j < args.timed:
                        start = time.perf_counter()
                        quantized.candidates(coll, q, K * oversample)
                        t_knn.append(time.perf_counter() - start)
                assert hits is not None, "the index did not answer"
                recalls.append(len({id for id, _ in hits} & set(want)) / K)
                if j < args.timed:
                    t_index.append(elapsed)
                for id, score in hits:  # exact scores, whatever the candidates
                    assert abs(score - float(matrix[int(id[3:])] @ q)) < 1e-5
            t = median(t_index)
            recall = float(np.mean(recalls))
            rows["random"].append([
                f"{n:,}", mode, oversample, K * oversample, f"{recall:.3f}", f"{min(recalls):.1f}",
                fmt_seconds(t), fmt_seconds(median(t_knn)), f"{cold / t:.1f}x", f"{warm / t:.2f}x",
                ("met" if recall >= 0.95 and cold / t >= 10 else "MISSED") if mode == "bit" else "",
            ])
            print(f"  oversample {oversample}: recall@10 {recall:.3f}, {fmt_seconds(t).strip()} "
                  f"({cold / t:.1f}x faster than exact cold)", flush=True)

        if mode == "bit" and args.knn_curve:  # what a KNN costs per k
            with embedkit.Database(path) as db:
                coll = db.collection(bench.COLLECTION)
                for k in (10, 40, 100, 200, 400, 1000):
                    times = []
                    for q in timed[:3]:
                        start = time.perf_counter()
                        quantized.candidates(coll, q, k)
                        times.append(time.perf_counter() - start)
                    rows["knn"].append([f"{n:,}", mode, k, fmt_seconds(min(times)), f"{cold / min(times):.1f}x"])
    with embedkit.Database(path) as db:
        quantized.drop(db.collection(bench.COLLECTION))
    del matrix


# Real embeddings

SKIP_MODULES = {"antigravity", "this", "idlelib", "turtledemo", "tkinter", "turtle", "lib2to3", "test", "pydoc_data"}


def _modules(roots):
    for root in roots:
        names = [root]
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                module = importlib.import_module(root)
        except BaseException:
            continue
        if hasattr(module, "__path__"):
            found = pkgutil.walk_packages(module.__path__, root + ".", onerror=lambda name: None)
            names += sorted(info.name for info in found)
        for name in names:
            if any(part.startswith("_") or part in ("tests", "test", "testing") for part in name.split(".")):
                continue
            try:
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    yield importlib.import_module(name)
            except BaseException:
                continue


def docstrings():
    """The first paragraph of every public docstring of the standard library, numpy, scipy and
    sympy (40-500 characters, each once): real, varied text (which depends on their versions)."""
    warnings.filterwarnings("ignore")
    roots = sorted(m for m in sys.stdlib_module_names if not m.startswith("_") and m not in SKIP_MODULES)
    seen, texts = set(), []
    for module in _modules(roots + ["numpy", "scipy", "sympy"]):
        for name, value in sorted(vars(module).items()):
            if name.startswith("_"):
                continue
            members = [value]
            if inspect.isclass(value):
                members += [v for a, v in sorted(vars(value).items()) if not a.startswith("_")]
            for member in members:
                try:
                    doc = inspect.getdoc(member)
                except Exception:
                    doc = None
                if not doc or doc == getattr(type(member), "__doc__", None):
                    continue
                paragraph = " ".join(doc.split("\n\n")[0].split())
                if 40 <= len(paragraph) <= 500 and paragraph not in seen:
                    seen.add(paragraph)
                    texts.append(paragraph)
    return texts


def corpus(name, make):
    """(texts, MiniLM vectors) of a corpus, made once and cached with its texts: the docstrings
    found can vary a little from run to run (imports have side effects), so they are kept."""
    path = data_dir() / f"quantized-real-{name}.npz"
    if path.exists():
        cached = np.load(path)
        texts = [str(text) for text in cached["texts"]]
        if name != "abstracts" or texts == make():
            return texts, cached["vectors"]
    texts = make()
    print(f"embedding {len(texts):,} {name} texts with all-MiniLM-L6-v2 (cached in {path}) ...", flush=True)
    start = time.perf_counter()
    vectors = embedkit.models.get_model().embed(texts)
    print(f"  {time.perf_counter() - start:.0f}s", flush=True)
    np.savez(path, texts=np.array(texts), vectors=vectors)
    return texts, vectors


def real_embeddings(args, rows):
    corpora = {"docstrings": docstrings, "abstracts": lambda: synthetic_texts(args.abstracts, 11, 20, 80)}
    for name, make in corpora.items():
        texts, vectors = corpus(name, make)
        vectors = vectors.astype(np.float32)
        rng = np.random.default_rng(args.seed)
        held_out = set(rng.choice(len(vectors), args.real_queries, replace=False).tolist())
        items = [i for i in range(len(vectors)) if i not in held_out]
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        matrix = unit[items]
        queries = [unit[i] for i in sorted(held_out)]
        truth = [bench.ids_of(np.array(items)[bench.numpy_top(matrix, q)]) for q in queries]
        spread = float(np.mean(matrix[:2000] @ matrix[:2000].T))
        with tempfile.TemporaryDirectory() as directory, embedkit.Database(os.path.join(directory, "real.db")) as db:
            coll = db.create_collection(bench.COLLECTION)
            with storage.transaction(db.conn):
                db.conn.executemany(
                    f"insert into {storage.quote(coll.table)} (id, embedding, content_hash, updated) values (?, ?, ?, ?)",
                    [(bench.item_id(i), vectors[i].tobytes(), str(i), storage.now()) for i in items],
                )
            for mode in args.modes:
                quantized.build(coll, mode)
                for oversample in sorted({1, 2, 3, 5, 10, 20, 40} | set(SWEEP[mode])):
                    recalls = []
                    for q, want in zip(queries, truth):
                        hits = quantized.top_n(coll, q, K, oversample=oversample)
                        recalls.append(len({id for id, _ in hits} & set(want)) / K)
                    default = " (default)" if oversample == quantized.OVERSAMPLE[mode] else ""
                    rows["real"].append([name, f"{len(items):,}", f"{spread:.2f}", mode, f"{oversample}{default}",
                                         f"{np.mean(recalls):.3f}", f"{min(recalls):.1f}"])
        print(f"{name}: done", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1M", help="comma-separated random collection sizes (default: 1M)")
    parser.add_argument("--dims", type=int, default=384)
    parser.add_argument("--modes", default="bit,int8", help="index modes (default: bit,int8)")
    parser.add_argument("--queries", type=int, default=50, help="random queries for recall (default: 50)")
    parser.add_argument("--timed", type=int, default=5, help="of which timed, with the references (default: 5)")
    parser.add_argument("--abstracts", type=int, default=10_000, help="synthetic texts in the real-embedding set (default: 10000)")
    parser.add_argument("--real-queries", type=int, default=200, help="held-out queries per real set (default: 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-real", action="store_true", help="skip the real-embedding recall")
    parser.add_argument("--skip-random", action="store_true", help="skip the random-vector runs")
    parser.add_argument("--no-knn-curve", dest="knn_curve", action="store_false", help="skip the KNN cost per k")
    args = parser.parse_args()
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    args.timed = min(args.timed, args.queries)

    print("embedkit quantised-index benchmark: coarse pass + exact rescoring vs exact top-10")
    print(environment_line())
    conn = storage.connect(":memory:")
    print(f"sqlite-vec {conn.execute('select vec_version()').fetchone()[0]}, SQLite {conn.execute('select sqlite_version()').fetchone()[0]}; "
          f"default oversampling {quantized.OVERSAMPLE}, at most {quantized.MAX_CANDIDATES} candidates")

    rows = {"reference": [], "build": [], "random": [], "knn": [], "real": []}
    started = time.perf_counter()
    if not args.skip_random:
        for n in (bench.parse_size(s) for s in args.sizes.split(",") if s.strip()):
            random_vectors(n, args, rows)
    if not args.skip_real:
        real_embeddings(args, rows)

    if rows["reference"]:
        table(["size", "exact cold (sqlite-vec scan) median", "min", "exact warm (numpy M@q) median", "min"],
              rows["reference"], f"Exact references, random unit vectors ({args.timed} queries)")
        table(["size", "mode", "build", "index size", "/ float32 vectors"], rows["build"], "Building the index")
        table(["size", "mode", "oversample", "candidates", "recall@10 mean", "worst", "query median", "of which KNN",
               "speed-up vs exact cold", "vs exact warm", "goal (bit: >=10x, >=0.95)"],
              rows["random"], f"Index queries, fresh Database each (recall over {args.queries} queries, time over {args.timed})")
    if rows["knn"]:
        table(["size", "mode", "k", "KNN alone (best of 3)", "speed-up vs exact cold"], rows["knn"], "What sqlite-vec's KNN costs per k")
    if rows["real"]:
        table(["set", "items", "mean cosine between items", "mode", "oversample", "recall@10 mean", "worst"],
              rows["real"], f"Real all-MiniLM-L6-v2 embeddings ({args.real_queries} held-out queries per set)")
    print(f"\ntotal {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
