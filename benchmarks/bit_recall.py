"""How many Hamming candidates a 1-bit index needs to hold the true top 10 of random vectors.

Why the bit goal of benchmarks/quantized.py (>= 10x faster at recall@10 >= 0.95 on 1M random
vectors) is out of reach for any bit index: 1M x 384 seeded random unit vectors (those of
search.py and quantized.py), sign bits, queries ranked by Hamming distance in numpy. For each
query, the Hamming rank of its exact top 10 tells how many candidates a coarse pass must return
for the rescoring to find 9 and 10 of them. sqlite-vec returns at most 4,096 per query.

    python benchmarks/bit_recall.py [--count 1000000] [--queries 20]
"""

import argparse

import numpy as np
from _common import environment_line, table

SQLITE_VEC_K_MAX = 4096


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--dimensions", type=int, default=384)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(environment_line())
    rng = np.random.default_rng(args.seed)
    matrix = rng.standard_normal((args.count, args.dimensions), dtype=np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    words = np.packbits(matrix > 0, axis=1).view(np.uint64)
    rows = []
    for _ in range(args.queries):
        query = rng.standard_normal(args.dimensions, dtype=np.float32)
        query /= np.linalg.norm(query)
        exact = np.argpartition(-(matrix @ query), 10)[:10]
        distance = np.bitwise_count(words ^ np.packbits(query > 0).view(np.uint64)).sum(axis=1)
        rank = np.empty(args.count, dtype=np.int64)
        rank[np.argsort(distance, kind="stable")] = np.arange(1, args.count + 1)
        ranks = np.sort(rank[exact])
        rows.append((int(ranks[8]), int(ranks[9]), int(np.sum(ranks <= SQLITE_VEC_K_MAX))))
    rows.sort()
    table(["candidates for 9 of 10", "for 10 of 10", f"of 10 within {SQLITE_VEC_K_MAX:,}"],
          [[f"{a:,}", f"{b:,}", c] for a, b, c in rows],
          title=f"{args.count:,} random unit {args.dimensions}-d vectors, {args.queries} queries, sign bits")
    within = np.mean([c for _, _, c in rows]) / 10
    print(f"\nmedian candidates for 9 of 10: {int(np.median([a for a, _, _ in rows])):,}; "
          f"recall@10 with sqlite-vec's most ({SQLITE_VEC_K_MAX:,}) candidates, rescored exactly: {within:.3f}")


if __name__ == "__main__":
    main()
