"""How big the core and full installs are, and how fast a cold `embedkit` starts in each.

Builds the wheel from this checkout, installs it into fresh virtual environments (the core
alone, and with every extra), and measures:

- installed size: the environment's bytes on disk minus those of an empty environment (pip
  and setuptools), per install; goal: core <= 150 MB;
- start-up: `embedkit --version`, against `python -c pass` in the same environment;
- a cold search: `embedkit similar COLL ID` on a 100,000 x 384 collection from a new process;
  goal <= 0.25 s.

    python benchmarks/install.py [--runs 7] [--items 100000]

The full install takes torch==2.13.0 (the CPU build on this machine), as the README's
development line does.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import HERE, data_dir, table

ROOT = HERE.parent


def run(command, **kwargs):
    return subprocess.run(command, check=True, capture_output=True, text=True, **kwargs)


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def venv(path: Path, *packages) -> Path:
    if path.exists():
        shutil.rmtree(path)
    run([sys.executable, "-m", "venv", str(path)])
    if packages:
        run([str(path / "bin" / "pip"), "install", "-q", *packages])
    return path


def wall(command, runs, env=None) -> float:
    """Median wall seconds of a command over runs, after one warm-up (page cache)."""
    times = []
    for i in range(runs + 1):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, env=env)
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


BUILD_COLLECTION = """
import sys, numpy as np, embedkit
from embedkit import storage
path, n = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
with embedkit.Database(path) as db:
    # An HTTP model's name: nothing is embedded here, the vectors are written as they are.
    collection = db.create_collection("bench", model="openai/text-embedding-3-small")
    with storage.transaction(db.conn):
        for start in range(0, n, 10_000):
            block = rng.standard_normal((min(10_000, n - start), 384)).astype("<f4")
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            db.conn.executemany(
                "insert into bench (id, embedding, content, metadata, content_hash, updated) "
                "values (?, ?, null, null, ?, '2026-01-01T00:00:00Z')",
                [(f"item{start + i}", row.tobytes(), f"{start + i:032x}") for i, row in enumerate(block)],
            )
        db.conn.execute("update _embedkit_collections set dimensions = 384 where name = 'bench'")
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--items", type=int, default=100_000)
    args = parser.parse_args()
    work = data_dir() / "install"
    work.mkdir(exist_ok=True)

    print("building the wheel ...", file=sys.stderr)
    dist = work / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    builder = venv(work / "build", "build")
    run([str(builder / "bin" / "python"), "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)])
    wheel = next(dist.glob("*.whl"))

    print("installing: empty, core, full ...", file=sys.stderr)
    empty = venv(work / "empty")
    core = venv(work / "core", str(wheel))
    full = venv(work / "full", f"{wheel}[all]", "torch==2.13.0")
    base = du(empty)
    sizes = {name: du(path) - base for name, path in (("core", core), ("full", full))}

    database = work / "bench.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    print(f"writing {args.items:,} vectors ...", file=sys.stderr)
    run([str(core / "bin" / "python"), "-c", BUILD_COLLECTION, str(database), str(args.items)])

    env = {k: v for k, v in os.environ.items() if k != "EMBEDKIT_DATABASE"}
    rows = []
    for name, path in (("core", core), ("full", full)):
        python, embedkit = str(path / "bin" / "python"), str(path / "bin" / "embedkit")
        nothing = wall([python, "-c", "pass"], args.runs, env)
        version = wall([embedkit, "--version"], args.runs, env)
        similar = wall([embedkit, "similar", "bench", "item123", "-n", "10", "-d", str(database)], args.runs, env)
        rows.append([name, f"{sizes[name] / 1e6:,.0f} MB", f"{nothing:.3f} s", f"{version:.3f} s",
                     f"{version / nothing:.1f}x", f"{similar:.3f} s", f"{similar / nothing:.1f}x"])
    table(["install", "installed size", "python -c pass", "embedkit --version", "vs python",
           f"similar ID at {args.items // 1000}k (cold)", "vs python"], rows,
          f"median of {args.runs} runs each; sizes are the environment minus an empty one")
    print(f"core / full size: {sizes['core'] / sizes['full']:.3f}  (goal: core <= 150 MB: "
          f"{'met' if sizes['core'] <= 150e6 else 'NOT met'})")


if __name__ == "__main__":
    main()
