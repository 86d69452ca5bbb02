"""An index never makes a search slower (issue 24): warm and one-off query times with no index,
an int8 or bit quantised index, and the approximate index, on the same collection.

A collection of --size realistic vectors (see _realistic.py; default 100k) is written once;
then for each index in turn (built in a copy of the database's collection, dropped after):

- warm: one process, the same Database, --queries queries after three warm-up queries (and
  search.wait_for_cache(), so the background matrix is ready): the median time, and whether
  results equal exact search's;
- one-off: `embedkit similar bench ID -n 10` in a new process each time, wall time (start-up
  included), median of --cli-repeat, against the same command with --exact run interleaved
  with it (the no-index path, in the same moments);
- the second query of a new process against its first (the matrix is built beside it now,
  not in it).

Goal: with any index built, warm median <= 1.1x the no-index warm median, and one-off no
slower than without an index.

    python benchmarks/routing.py
    python benchmarks/routing.py --size 20k --queries 50
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
from embedkit import ann, quantized, search  # noqa: E402

K = 10
COLLECTION = "bench"


bench = search_benchmark()


def build(coll, index):
    quantized.drop(coll)
    ann.drop(coll)
    if index in quantized.MODES:
        quantized.build(coll, index)
    elif index == "ann":
        ann.build(coll)


def first_and_second(path, queries):
    """A new process's first and second query (seconds each), in-process timing."""
    script = (
        "import sys, time, json, numpy as np, embedkit\n"
        "coll = embedkit.Database(sys.argv[1]).collection(sys.argv[2])\n"
        "times = []\n"
        "for q in json.loads(sys.argv[3]):\n"
        "    start = time.perf_counter(); coll.similar_by_vector(np.array(q, dtype=np.float32), 10)\n"
        "    times.append(time.perf_counter() - start)\n"
        "print(json.dumps(times))\n"
    )
    out = subprocess.run([sys.executable, "-c", script, path, COLLECTION, json.dumps([q.tolist() for q in queries])],
                         capture_output=True, text=True, env=offline_env())
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=bench.parse_size, default=bench.parse_size("100k"))
    parser.add_argument("--queries", type=int, default=200, help="warm queries per index (default: 200)")
    parser.add_argument("--cli-repeat", type=int, default=6, help="one-off CLI runs per index, and as many --exact (default: 6)")
    parser.add_argument("--indexes", default="none,int8,bit,ann")
    args = parser.parse_args()

    print("embedkit routing: warm and one-off queries with and without indexes")
    print(environment_line())
    matrix, queries = _realistic.dataset(args.size, args.queries + 10)
    path = str(data_dir() / f"routing-{args.size}.db")
    seconds, built = bench.build_database(path, matrix)
    print(f"{args.size:,} realistic vectors in {path}" + (f" (written in {seconds:.0f}s)" if built else " (reused)"), flush=True)
    truth = [bench.ids_of(bench.numpy_top(matrix, q)) for q in queries]

    rows, base = [], {}
    for index in args.indexes.split(","):
        with embedkit.Database(path) as db:
            start = time.perf_counter()
            build(db.collection(COLLECTION), index)
            build_seconds = time.perf_counter() - start
        print(f"{index}: built in {build_seconds:.0f}s", flush=True)

        # One-off: the CLI in a new process (start-up included), by a stored item's id, interleaved
        # with the same command made exact: the no-index reference, measured in the same moments.
        cli, reference = [], []
        for r in range(args.cli_repeat):
            command = [*embedkit_command(), "similar", COLLECTION, bench.item_id(r * 997), "-n", "10", "-d", path]
            for exact, times in ((False, cli), (True, reference))[:: 1 if r % 2 else -1]:
                seconds, _ = bench.run_timed(command + ["--exact"] * exact)
                times.append(seconds)
        pair = np.array([first_and_second(path, queries[-2:]) for _ in range(3)])

        # Warm: one process, one Database.
        with embedkit.Database(path) as db:
            coll = db.collection(COLLECTION)
            for q in queries[-3:]:
                coll.similar_by_vector(q, K)
            search.wait_for_cache()
            times, same, recalls = [], 0, []
            for q, want in zip(queries, truth):
                start = time.perf_counter()
                hits = coll.similar_by_vector(q, K)
                times.append(time.perf_counter() - start)
                got = [e.id for e in hits]
                same += got == want
                recalls.append(len(set(got) & set(want)) / K)
            build(coll, "none")
        warm, one_off, exact_one_off = float(np.median(times)), float(np.median(cli)), float(np.median(reference))
        base.setdefault("warm", warm)
        rows.append([
            index, fmt_seconds(warm), f"{warm / base['warm']:.2f}x", f"{np.mean(recalls):.3f}",
            f"{same} of {len(queries)}", fmt_seconds(one_off), fmt_seconds(exact_one_off),
            f"{one_off / exact_one_off:.2f}x",
            f"{fmt_seconds(float(np.median(pair[:, 0]))).strip()} / {fmt_seconds(float(np.median(pair[:, 1]))).strip()}",
            "met" if warm <= 1.1 * base["warm"] and one_off <= exact_one_off * 1.05 else "MISSED",
        ])
        print(rows[-1], flush=True)
    table(["index", "warm median", "vs no index", "recall@10", "top 10 = exact", "one-off CLI median",
           "same, --exact", "ratio", "new process: 1st / 2nd query", "goal (warm <= 1.1x, one-off <= 1x)"], rows,
          f"{args.size:,} realistic vectors, {args.queries} warm queries, {args.cli_repeat} CLI runs")


if __name__ == "__main__":
    sys.exit(main())
