"""Related items: every item's top-10 with Collection.compute_related, against numpy.

Seeded random unit 384-d float32 vectors (100k by default) are written straight into a
collection (as search.py does), then, each in a child process so that its memory is its own:

(a) the full run: Collection.compute_related(n=10) over every item. Reported: wall seconds
    of the call and the memory it added at its peak: the child's peak resident set during the
    call minus its resident set just before (database open, embedkit and numpy imported). On
    Linux the peak is VmHWM of /proc/self/status, reset just before the call by writing 5 to
    /proc/self/clear_refs; elsewhere ru_maxrss of getrusage (which a child inherits from its
    parent at fork, hence the child reset on Linux). Goal: <= 5 minutes at 100k.
(b) the re-run after 1% of the items changed (new vectors, new content hash, as a re-embed
    writes them): the incremental path. Compared with (a).
(c) a re-run with nothing changed.

References, measured in this process on the same vectors, on --sample rows and extrapolated
to all rows (numpy on one block of rows is linear in the rows):
- numpy brute force: M[rows] @ M.T, self excluded, argpartition top-10 and a sort per row;
- the matrix products alone (M[rows] @ M.T), the floor for any exact method.

Checked: for the sample rows, embedkit's stored top-10 ids equal numpy's (up to neighbours
tied within 1e-5, whose order rounding to 6 decimals may settle otherwise), after (a) and (b).

    python benchmarks/related.py                  # 100k items
    python benchmarks/related.py --items 20000 --sample 500
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import data_dir, environment_line, fmt_seconds, offline_env, table  # noqa: E402
from search import COLLECTION, build_database, item_id  # noqa: E402

import embedkit  # noqa: E402
from embedkit import related, storage  # noqa: E402
from embedkit.items import content_hash  # noqa: E402

K = 10


def unit_rows(rng, count, dims) -> np.ndarray:
    matrix = np.empty((count, dims), dtype=np.float32)
    for start in range(0, count, 100_000):
        block = rng.standard_normal((min(100_000, count - start), dims), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        matrix[start : start + len(block)] = block
    return matrix


def change_items(path, matrix, positions, rng):
    """New vectors and content for the items at positions, as re-embedding changed texts writes them."""
    fresh = unit_rows(rng, len(positions), matrix.shape[1])
    matrix[positions] = fresh
    with embedkit.Database(path) as db:
        with storage.transaction(db.conn):
            db.conn.executemany(
                f"update {storage.quote(COLLECTION)} set embedding = ?, content = ?, content_hash = ?, updated = ? "
                "where id = ?",
                [(fresh[k].tobytes(), f"changed item {i}", content_hash(f"changed item {i}"), storage.now(), item_id(i))
                 for k, i in enumerate(positions)],
            )


# The child: one compute_related, its wall time and memory ---------------------------------------


def proc_status(field):
    """A kB field of /proc/self/status (Linux), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak() -> str:
    """Start the peak resident set afresh; says how the peak will be measured."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident set (Linux >= 4.0)
        if proc_status("VmHWM") is not None:
            return "VmHWM"
    except OSError:
        pass
    return "ru_maxrss"


def child(path, n):
    with embedkit.Database(path) as db:
        collection = db.collection(COLLECTION)
        collection.count()
        how = reset_peak()
        before = proc_status("VmRSS") if how == "VmHWM" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        stats = collection.compute_related(n=n)
        seconds = time.perf_counter() - start
        peak = proc_status("VmHWM") if how == "VmHWM" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "rss_before_kb": before, "rss_peak_kb": peak, "peak_by": how,
                      "stats": vars(stats)}))


def run_child(path, n):
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", path, "--n", str(n)], env=offline_env(),
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.splitlines()[-1])
    result["process_seconds"] = wall
    return result


# The numpy references ----------------------------------------------------------------------------


def numpy_top(matrix, rows, k=K):
    """Top-k (positions, scores) of each of rows against every row, self excluded."""
    scores = matrix[rows] @ matrix.T
    scores[np.arange(len(rows)), rows] = -np.inf
    top = np.argpartition(-scores, k, axis=1)[:, : k + 1]  # one more, to tell ties at the edge
    top_scores = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1), np.take_along_axis(top_scores, order, axis=1)


def time_references(matrix, sample, repeat):
    """Best-of-repeat seconds of the numpy brute force and of the products alone on sample rows."""
    brute = products = float("inf")
    for r in range(repeat):
        for side in ((0, 1) if r % 2 == 0 else (1, 0)):
            start = time.perf_counter()
            if side == 0:
                numpy_top(matrix, sample)
                brute = min(brute, time.perf_counter() - start)
            else:
                matrix[sample] @ matrix.T
                products = min(products, time.perf_counter() - start)
    return brute, products


def check_sample(path, matrix, sample, n):
    """embedkit's stored lists of the sample rows against numpy's top-n; returns rows checked."""
    positions, scores = numpy_top(matrix, sample, n)
    with embedkit.Database(path) as db:
        table = storage.quote(related.table_name(db.collection(COLLECTION)))
        for row, top, top_scores in zip(sample, positions, scores):
            got = db.conn.execute(f"select other_id, score from {table} where id = ? order by rank",
                                  [item_id(int(row))]).fetchall()
            expected = [item_id(int(j)) for j in top[:n]]
            assert len(got) == n, (row, got)
            assert all(abs(score - float(s)) < 1e-5 for (_, score), s in zip(got, top_scores)), (row, got, top_scores)
            if [id for id, _ in got] != expected:
                # only neighbours whose scores are within 1e-5 of each other may swap places
                edge = float(top_scores[n - 1])
                differ = {id for id, _ in got} ^ set(expected)
                assert all(abs(float(matrix[row] @ matrix[int(id[3:])]) - edge) < 1e-5 for id in differ), (row, got)
                assert sorted(id for id, _ in got if id not in differ) == sorted(set(expected) - differ)
    return len(sample)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000, help="collection size (default: 100000)")
    parser.add_argument("--dims", type=int, default=384, help="vector dimensions (default: 384)")
    parser.add_argument("--n", type=int, default=K, help="related items per item (default: 10)")
    parser.add_argument("--sample", type=int, default=1000, help="rows the numpy references time and the check uses (default: 1000)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of the numpy references; the best counts (default: 3)")
    parser.add_argument("--change", type=float, default=0.01, help="share of items changed before the re-run (default: 0.01)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", metavar="DB", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.n)

    print(f"embedkit related benchmark: top-{args.n} related items of every item")
    print(environment_line())
    print(f"EMBEDKIT_RELATED_BLOCK_MB={related.BLOCK_MB}; memory: the child's peak resident set during the call "
          "minus its resident set before it")
    rng = np.random.default_rng(args.seed)
    n_items = args.items
    t0 = time.perf_counter()
    matrix = unit_rows(rng, n_items, args.dims)
    path = str(data_dir() / f"related-{n_items}-d{args.dims}-s{args.seed}.db")
    build_database(path, matrix, rebuild=True)  # a fresh file: no related lists from an earlier run
    print(f"{n_items:,} vectors x {args.dims} dims generated and written to {path} in {time.perf_counter() - t0:.1f}s",
          flush=True)
    sample = np.sort(rng.choice(n_items, min(args.sample, n_items), replace=False))
    scale = n_items / len(sample)

    brute, products = time_references(matrix, sample, args.repeat)
    print(f"numpy on {len(sample):,} rows: brute force {fmt_seconds(brute).strip()}, products {fmt_seconds(products).strip()}",
          flush=True)

    full = run_child(path, args.n)
    print(f"(a) full run: {full['seconds']:.1f}s, {full['stats']}", flush=True)
    assert full["stats"]["computed"] == n_items
    checked = check_sample(path, matrix, sample, args.n)

    changed = np.sort(rng.choice(n_items, max(1, int(n_items * args.change)), replace=False))
    change_items(path, matrix, changed, rng)
    incremental = run_child(path, args.n)
    print(f"(b) re-run after {len(changed):,} changed: {incremental['seconds']:.1f}s, {incremental['stats']}", flush=True)
    stats = incremental["stats"]
    assert stats["computed"] < n_items and stats["computed"] + stats["patched"] + stats["unchanged"] == n_items
    checked += check_sample(path, matrix, sample, args.n)
    unchanged = run_child(path, args.n)
    assert unchanged["stats"]["computed"] == 0 and unchanged["stats"]["unchanged"] == n_items
    print(f"stored top-{args.n} of {checked:,} sampled lists agree with numpy (after (a) and (b)); "
          f"peak measured with {full['peak_by']}, resident set before the full run {full['rss_before_kb'] / 1024:,.0f} MiB")

    mib = lambda run: (run["rss_peak_kb"] - run["rss_before_kb"]) / 1024  # noqa: E731
    rows = [
        ["(a) full run", f"{full['seconds']:.1f} s", f"{full['process_seconds']:.1f} s", f"{mib(full):,.0f} MiB",
         f"{full['seconds'] / (brute * scale):.2f}x", f"{full['seconds'] / (products * scale):.2f}x"],
        [f"(b) re-run, {args.change:.0%} changed", f"{incremental['seconds']:.1f} s",
         f"{incremental['process_seconds']:.1f} s", f"{mib(incremental):,.0f} MiB",
         f"{incremental['seconds'] / (brute * scale):.3f}x", f"{incremental['seconds'] / (products * scale):.3f}x"],
        ["(c) re-run, nothing changed", fmt_seconds(unchanged["seconds"]).strip(),
         f"{unchanged['process_seconds']:.1f} s", f"{mib(unchanged):,.0f} MiB", "", ""],
    ]
    table(["run", "compute_related", "child process", "peak memory added", "vs numpy brute force",
           "vs numpy products"], rows,
          f"{n_items:,} items x {args.dims} dims, top-{args.n} each")
    table(["reference", "sample rows", "measured (best of %d)" % args.repeat, f"extrapolated to {n_items:,} rows"], [
        ["numpy M[rows] @ M.T + argpartition + sort", f"{len(sample):,}", fmt_seconds(brute), f"{brute * scale:.1f} s"],
        ["numpy M[rows] @ M.T alone", f"{len(sample):,}", fmt_seconds(products), f"{products * scale:.1f} s"],
    ], "References (this process, the same vectors)")
    ratio = incremental["seconds"] / full["seconds"]
    print(f"\nincremental re-run / full run: {ratio:.3f} ({full['seconds'] / incremental['seconds']:.1f}x faster); "
          f"lists computed {stats['computed']:,}, patched {stats['patched']:,}, unchanged {stats['unchanged']:,}")
    goal = "met" if full["seconds"] <= 300 else "MISSED"
    print(f"goal: full run <= 5 minutes at 100k: {goal if n_items >= 100_000 else '(not measured below 100k)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
