"""Choosing the approximate-nearest-neighbour library: usearch, hnswlib and faiss-cpu on the
same vectors, each in a child process of its own (so its memory is its own).

Measured per library and setting: build time, index file size, peak resident memory of the
build, recall@10 (against numpy's exact top 10) and query time per search-width setting, the
narrowest setting reaching recall@10 >= 0.95 and its speed-up over the exact numpy scan of the
same vectors in the same child; a 1%-selective filter (the library's own filtered search where
it has one, else oversampling and keeping the matching hits); deleting and adding 1% of the
items; and a cold start: a fresh process loading the saved index (memory-mapped where the
library can) and answering its first query.

    python benchmarks/ann_libraries.py --size 1M           # realistic vectors (see _realistic.py)
    python benchmarks/ann_libraries.py --size 200k --random

Needs the `ann` extra plus hnswlib and faiss-cpu (pip install usearch hnswlib faiss-cpu).
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import data_dir, environment_line, table  # noqa: E402

K = 10
SELECTIVITY = 100  # the filter keeps every 100th item: 1%
LIBRARIES = {
    # name: (library, build settings, search widths swept)
    "usearch-f32": ("usearch", {"dtype": "f32", "M": 16, "ef_construction": 128}, (16, 32, 64, 128, 256)),
    "usearch-i8": ("usearch", {"dtype": "i8", "M": 16, "ef_construction": 128}, (16, 32, 64, 128, 256)),
    "hnswlib": ("hnswlib", {"M": 16, "ef_construction": 128}, (16, 32, 64, 128, 256)),
    "faiss-hnsw": ("faiss-hnsw", {"M": 16, "ef_construction": 128}, (16, 32, 64, 128, 256)),
    "faiss-ivf": ("faiss-ivf", {"nlist": 4096}, (8, 16, 32, 64, 128)),
}


def peak_rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Usearch:
    def __init__(self, dims, dtype, M, ef_construction):
        from usearch.index import Index

        self.index = Index(ndim=dims, metric="cos", dtype=dtype, connectivity=M, expansion_add=ef_construction)

    def add(self, keys, matrix):
        self.index.add(keys, matrix)

    def remove(self, keys):
        self.index.remove(keys)

    def search(self, query, k, width, allowed=None):
        self.index.expansion_search = width
        if allowed is None:
            return self.index.search(query, k).keys
        # No filter in the Python API: oversample and keep the allowed keys.
        wanted = k * SELECTIVITY * 2
        self.index.expansion_search = max(width, wanted)
        keys = self.index.search(query, wanted).keys
        return keys[allowed[keys]][:k]

    def save(self, path):
        self.index.save(path)

    @staticmethod
    def cold(path, dims, query, k, width):
        from usearch.index import Index

        start = time.perf_counter()
        index = Index.restore(path, view=True)
        index.expansion_search = width
        index.search(query, k)
        return time.perf_counter() - start


class Hnswlib:
    def __init__(self, dims, M, ef_construction, capacity):
        import hnswlib

        self.index = hnswlib.Index("cosine", dims)
        self.index.init_index(capacity, M, ef_construction, allow_replace_deleted=True)
        self.index.set_num_threads(os.cpu_count())

    def add(self, keys, matrix):
        self.index.add_items(matrix, keys, replace_deleted=True)

    def remove(self, keys):
        for key in keys:
            self.index.mark_deleted(int(key))

    def search(self, query, k, width, allowed=None):
        self.index.set_ef(max(width, k))
        if allowed is None:
            return self.index.knn_query(query, k, num_threads=1)[0][0]
        return self.index.knn_query(query, k, num_threads=1, filter=lambda key: bool(allowed[key]))[0][0]

    def save(self, path):
        self.index.save_index(path)

    @staticmethod
    def cold(path, dims, query, k, width):
        import hnswlib

        start = time.perf_counter()
        index = hnswlib.Index("cosine", dims)
        index.load_index(path)  # no memory-mapped loading: the whole file is read
        index.set_ef(width)
        index.knn_query(query, k)
        return time.perf_counter() - start


class Faiss:
    def __init__(self, dims, kind, matrix, **settings):
        import faiss

        self.faiss, self.kind = faiss, kind
        if kind == "faiss-hnsw":
            inner = faiss.IndexHNSWFlat(dims, settings["M"], faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = settings["ef_construction"]
            self.index = faiss.IndexIDMap2(inner)
        else:
            quantizer = faiss.IndexFlatIP(dims)
            inner = faiss.IndexIVFFlat(quantizer, dims, settings["nlist"], faiss.METRIC_INNER_PRODUCT)
            sample = matrix[np.random.default_rng(0).choice(len(matrix), min(len(matrix), settings["nlist"] * 64), replace=False)]
            inner.train(sample)
            self.index = faiss.IndexIDMap2(inner)
        self.inner = inner

    def add(self, keys, matrix):
        self.index.add_with_ids(matrix, keys.astype(np.int64))

    def remove(self, keys):
        self.index.remove_ids(np.asarray(keys, dtype=np.int64))  # raises for HNSW

    def _params(self, width, selector=None):
        if self.kind == "faiss-hnsw":
            return self.faiss.SearchParametersHNSW(efSearch=width, sel=selector)
        return self.faiss.SearchParametersIVF(nprobe=width, sel=selector)

    def search(self, query, k, width, allowed=None):
        selector = None
        if allowed is not None:
            selector = self.faiss.IDSelectorBitmap(np.packbits(allowed, bitorder="little"))
        return self.index.search(query[None, :], k, params=self._params(max(width, k), selector))[1][0]

    def save(self, path):
        self.faiss.write_index(self.index, path)

    @staticmethod
    def cold(path, dims, query, k, width):
        import faiss

        start = time.perf_counter()
        index = faiss.read_index(path, faiss.IO_FLAG_MMAP)
        inner = faiss.downcast_index(index.index)
        params = (faiss.SearchParametersHNSW(efSearch=width) if isinstance(inner, faiss.IndexHNSW)
                  else faiss.SearchParametersIVF(nprobe=width))
        index.search(query[None, :], k, params=params)
        return time.perf_counter() - start


def make(name, dims, matrix):
    library, settings, _ = LIBRARIES[name]
    if library == "usearch":
        return Usearch(dims, **settings)
    if library == "hnswlib":
        return Hnswlib(dims, capacity=len(matrix) + len(matrix) // 100 + 1, **settings)
    return Faiss(dims, library, matrix, **settings)


def worker(args):
    """One library in this process: prints a JSON line of its measurements."""
    data = np.load(args.data, mmap_mode="r")
    matrix = np.ascontiguousarray(data["base"] if isinstance(data, np.lib.npyio.NpzFile) else data)
    queries, truth = np.load(args.query_file), np.load(args.truth)
    filtered_truth = np.load(args.filtered_truth)
    n, dims = matrix.shape
    keys = np.arange(n, dtype=np.uint64)
    library, _, widths = LIBRARIES[args.worker]
    result = {"library": args.worker, "rss_before_mb": rss_mb()}
    start = time.perf_counter()
    index = make(args.worker, dims, matrix)
    for begin in range(0, n, 100_000):
        index.add(keys[begin : begin + 100_000], matrix[begin : begin + 100_000])
    result["build_s"] = time.perf_counter() - start
    if library.startswith("faiss"):  # queries on one thread, as the others answer one query
        import faiss

        faiss.omp_set_num_threads(1)
    result["build_peak_rss_mb"] = peak_rss_mb()
    path = str(data_dir() / f"ann-lib-{args.worker}-{n}.index")
    index.save(path)
    result["file_mb"] = os.path.getsize(path) / 2**20

    # Exact reference in this process: numpy over the same matrix (normalised rows).
    exact = []
    for q in queries[: args.timed]:
        t = time.perf_counter()
        scores = matrix @ q
        np.argpartition(scores, n - K)[n - K :]
        exact.append(time.perf_counter() - t)
    result["exact_ms"] = 1e3 * float(np.median(exact))

    sweep = []
    for width in widths:
        recalls, times = [], []
        for q, want in zip(queries, truth):
            t = time.perf_counter()
            got = index.search(q, K, width)
            times.append(time.perf_counter() - t)
            recalls.append(len(set(np.asarray(got, dtype=np.int64).tolist()) & set(want.tolist())) / K)
        sweep.append({"width": width, "recall": float(np.mean(recalls)), "ms": 1e3 * float(np.median(times))})
    result["sweep"] = sweep

    allowed = np.zeros(n, dtype=bool)
    allowed[::SELECTIVITY] = True
    chosen = next((s for s in sweep if s["recall"] >= 0.95), sweep[-1])
    recalls, times = [], []
    for q, want in zip(queries, filtered_truth):
        t = time.perf_counter()
        got = index.search(q, K, chosen["width"], allowed)
        times.append(time.perf_counter() - t)
        recalls.append(len(set(np.asarray(got, dtype=np.int64).tolist()) & set(want.tolist())) / K)
    result["filtered"] = {"width": chosen["width"], "recall": float(np.mean(recalls)), "ms": 1e3 * float(np.median(times))}

    # Incremental: delete 1% of the items, then add 1% new ones (perturbed copies).
    step = max(1, n // (n // 100))
    gone = keys[::step][: n // 100]
    t = time.perf_counter()
    try:
        index.remove(gone)
        result["delete_us"] = 1e6 * (time.perf_counter() - t) / len(gone)
    except Exception as ex:
        result["delete_us"] = f"no ({type(ex).__name__})"
    fresh = matrix[gone.astype(np.int64)] + np.float32(0.01)
    fresh /= np.linalg.norm(fresh, axis=1, keepdims=True)
    t = time.perf_counter()
    try:
        index.add(np.arange(n, n + len(gone), dtype=np.uint64), fresh)
        result["add_us"] = 1e6 * (time.perf_counter() - t) / len(gone)
    except Exception as ex:
        result["add_us"] = f"no ({type(ex).__name__})"
    result["width"] = chosen["width"]
    result["path"] = path
    print(json.dumps(result), flush=True)


def cold_worker(args):
    library, _, _ = LIBRARIES[args.cold]
    cls = {"usearch": Usearch, "hnswlib": Hnswlib}.get(library, Faiss)
    query = np.load(args.query_file)[-1]
    t = time.perf_counter()
    if library == "usearch":
        import usearch.index  # noqa: F401
    elif library == "hnswlib":
        import hnswlib  # noqa: F401
    else:
        import faiss  # noqa: F401
    imported = time.perf_counter() - t
    seconds = cls.cold(args.path, query.shape[0], query, K, args.width)
    print(json.dumps({"import_s": imported, "load_and_query_s": seconds, "rss_mb": rss_mb()}), flush=True)


def prepare(args):
    import _realistic

    if args.random:
        rng = np.random.default_rng(0)
        base = rng.standard_normal((args.size, 384), dtype=np.float32)
        base /= np.linalg.norm(base, axis=1, keepdims=True)
        queries = rng.standard_normal((args.queries, 384), dtype=np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        name = "random"
    else:
        base, queries = _realistic.dataset(args.size, args.queries)
        name = "realistic"
    stem = data_dir() / f"ann-lib-{name}-{args.size}"
    paths = {key: f"{stem}-{key}.npy" for key in ("base", "queries", "truth", "filtered")}
    if not os.path.exists(paths["filtered"]):
        np.save(paths["base"], base)
        np.save(paths["queries"], queries)
        truth, filtered = [], []
        allowed = np.arange(0, len(base), SELECTIVITY)
        for q in queries:
            scores = base @ q
            top = np.argpartition(scores, len(base) - K)[len(base) - K :]
            truth.append(top[np.argsort(-scores[top])])
            sub = scores[allowed]
            top = np.argpartition(sub, len(sub) - K)[len(sub) - K :]
            filtered.append(allowed[top[np.argsort(-sub[top])]])
        np.save(paths["truth"], np.array(truth))
        np.save(paths["filtered"], np.array(filtered))
    return name, paths


def parse_size(text):
    text = text.lower()
    return int(float(text[:-1]) * {"k": 1e3, "m": 1e6}[text[-1]]) if text[-1] in "km" else int(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=parse_size, default=parse_size("1M"))
    parser.add_argument("--random", action="store_true", help="uniform random unit vectors instead of realistic ones")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--timed", type=int, default=20, help="queries timed for the exact reference")
    parser.add_argument("--libraries", default=",".join(LIBRARIES))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--cold", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--width", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--query-file", help=argparse.SUPPRESS)
    parser.add_argument("--truth", help=argparse.SUPPRESS)
    parser.add_argument("--filtered-truth", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.cold:
        return cold_worker(args)

    print(f"ANN libraries at {args.size:,} x 384 ({'random' if args.random else 'realistic'} vectors); "
          + environment_line())
    name, paths = prepare(args)
    rows, sweeps = [], []
    for library in args.libraries.split(","):
        print(f"{library} ...", flush=True)
        out = subprocess.run(
            [sys.executable, __file__, "--worker", library, "--data", paths["base"], "--query-file", paths["queries"],
             "--truth", paths["truth"], "--filtered-truth", paths["filtered"], "--timed", str(args.timed)],
            capture_output=True, text=True)
        if out.returncode:
            print(out.stderr[-3000:])
            continue
        result = json.loads(out.stdout.strip().splitlines()[-1])
        colds = []
        for _ in range(3):  # the first may read the file from disk; the page cache serves the rest
            cold = subprocess.run(
                [sys.executable, __file__, "--cold", library, "--path", result["path"], "--query-file", paths["queries"],
                 "--width", str(result["width"])], capture_output=True, text=True)
            colds.append(json.loads(cold.stdout.strip().splitlines()[-1]) if cold.returncode == 0 else None)
        good = [c for c in colds if c]
        best = min(good, key=lambda c: c["load_and_query_s"]) if good else None
        os.remove(result["path"])
        chosen = next((s for s in result["sweep"] if s["width"] == result["width"]), None)
        for s in result["sweep"]:
            sweeps.append([library, s["width"], f"{s['recall']:.3f}", f"{s['ms']:.2f} ms",
                           f"{result['exact_ms'] / s['ms']:.0f}x"])
        fmt = lambda v: f"{v:.0f} µs" if isinstance(v, float) else v  # noqa: E731
        rows.append([
            library, f"{result['build_s']:.0f} s", f"{result['file_mb']:,.0f} MiB",
            f"{result['build_peak_rss_mb'] - result['rss_before_mb']:,.0f} MiB",
            result["width"], f"{chosen['recall']:.3f}", f"{chosen['ms']:.2f} ms",
            f"{result['exact_ms'] / chosen['ms']:.0f}x",
            f"{result['filtered']['recall']:.3f} / {result['filtered']['ms']:.1f} ms",
            fmt(result["delete_us"]), fmt(result["add_us"]),
            f"{best['load_and_query_s'] * 1e3:.0f} ms ({best['rss_mb']:,.0f} MiB)" if best else "failed",
        ])
        print(json.dumps(result), flush=True)
    table(["library", "build", "file", "build memory", "width", "recall@10", "query", "vs exact numpy",
           "1% filter recall / time", "delete", "add", "cold load+1st query (RSS)"], rows,
          f"Libraries at {args.size:,} {name} vectors (width: the narrowest reaching recall@10 0.95)")
    table(["library", "width", "recall@10", "query median", "vs exact numpy"], sweeps, "Recall and time per width")


if __name__ == "__main__":
    sys.exit(main())
