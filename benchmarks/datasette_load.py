"""Load on the Datasette plugin: 20 concurrent clients on a real `datasette serve`.

    python benchmarks/datasette_load.py [--items 100000] [--clients 20] [--seconds 10] [--related]

A collection of N items (random unit vectors recorded as all-MiniLM-L6-v2's, so searches by
text embed with the real model) is served by `datasette`. Phases, each `--seconds` long:
similar.json?id= (warm), similar.json?q= (a distinct text each time), a table page alone, the
table page while id= searches run, and the table page while three searches by text wait on a
service that never answers. Prints p50/p95 latency, requests/s and errors per phase, and the
table page's slow-down as ratios to the table page alone, measured in the same run. With
--related the related lists are computed first (`embedkit related`), and id= is answered from
them instead of an exact search.
"""

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment_line, table  # noqa: E402

import embedkit  # noqa: E402
from embedkit import storage, vectors  # noqa: E402

WORDS = ("bread sqlite backup search index vector model table query rye caraway starter flour water "
         "publish website json api python loaf dense week shell extension file").split()


def build(path, items):
    rng = np.random.default_rng(1)
    with embedkit.Database(path) as db:
        db.create_collection("posts")  # all-MiniLM-L6-v2, 384 dimensions
        db.create_collection("remote", model="stalled")
        matrix = rng.standard_normal((items, 384)).astype(np.float32)
        vectors.normalize_rows(matrix)
        rows = [(f"p{i:06d}", vectors.encode(matrix[i]), " ".join(rng.choice(WORDS, 8)), "{}", f"h{i}", storage.now())
                for i in range(items)]
        with storage.transaction(db.conn):
            db.conn.executemany("insert into posts values (?, ?, ?, ?, ?, ?)", rows)
            db.conn.executemany("insert into remote values (?, ?, ?, ?, ?, ?)", rows[:10])
            db.conn.execute(f"update {storage.REGISTRY} set dimensions = 384")


def stalled_server():
    """A service that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held = []

    def accept():
        while True:
            connection, _ = listener.accept()
            held.append(connection)

    threading.Thread(target=accept, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}/v1"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def hammer(base, paths, clients, seconds):
    """(latencies, errors, requests/s) of `clients` clients asking for paths() for seconds."""
    latencies, errors = [], []
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=httpx.Limits(max_connections=clients)) as client:
        async def one():
            while time.monotonic() < deadline:
                started = time.perf_counter()
                try:
                    response = await client.get(paths())
                    if response.status_code != 200:
                        errors.append(response.status_code)
                except httpx.HTTPError as ex:
                    errors.append(type(ex).__name__)
                latencies.append(time.perf_counter() - started)

        started = time.monotonic()
        await asyncio.gather(*(one() for _ in range(clients)))
        took = time.monotonic() - started
    return latencies, errors, len(latencies) / took


def percentiles(latencies):
    ordered = sorted(latencies)
    return ordered[len(ordered) // 2] * 1000, ordered[int(len(ordered) * 0.95)] * 1000


async def phases(base, items, clients, seconds):
    rng = random.Random(2)
    by_id = lambda: f"/data/posts/-/similar.json?id=p{rng.randrange(items):06d}&n=10"  # noqa: E731
    by_text = lambda: "/data/posts/-/similar.json?q=" + "+".join(rng.choices(WORDS, k=4)) + f"+{rng.random():.6f}"  # noqa: E731
    table_page = lambda: f"/data/posts?_size=20&id__gt=p{rng.randrange(items):06d}"  # noqa: E731
    await hammer(base, by_id, clients, 2)  # warm: the cached matrix
    results = {}
    results["similar.json?id= (warm)"] = await hammer(base, by_id, clients, seconds)
    results["similar.json?q="] = await hammer(base, by_text, clients, seconds)
    results["table page alone (1 client)"] = await hammer(base, table_page, 1, seconds)
    background = asyncio.ensure_future(hammer(base, by_id, clients, seconds))
    results["table page, 20 clients on id="] = await hammer(base, table_page, 1, seconds)
    await background
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        stalled = [asyncio.ensure_future(client.get(f"/data/remote/-/similar.json?q=stalled+{i}")) for i in range(3)]
        await asyncio.sleep(0.2)
        results["table page, 3 stalled-model searches"] = await hammer(base, table_page, 1, seconds)
        stalled_answers = [(r.status_code, r.json()["error"]) for r in await asyncio.gather(*stalled)]
    return results, stalled_answers


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--related", action="store_true", help="compute the related lists first")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="embedkit-load-"))
    user = work / "user"
    user.mkdir()
    (user / "models.json").write_text(json.dumps({"models": {"stalled": {
        "api": "openai", "base_url": stalled_server(), "model_name": "x", "retries": 0, "dimensions": 384}}}))
    env = {**os.environ, "EMBEDKIT_USER_DIR": str(user)}
    os.environ["EMBEDKIT_USER_DIR"] = str(user)
    path = work / "data.db"
    started = time.perf_counter()
    build(path, args.items)
    print(f"built {args.items:,} items in {time.perf_counter() - started:.1f} s")
    if args.related:
        started = time.perf_counter()
        with embedkit.Database(path) as db:
            db.collection("posts").compute_related(n=10)
        print(f"computed the related lists in {time.perf_counter() - started:.1f} s")
    config = work / "metadata.json"
    config.write_text(json.dumps({"plugins": {"embedkit": {"models": ["stalled"]}}}))
    port = free_port()
    import datasette

    option = "-c" if datasette.__version__.startswith("1.") else "-m"
    server = subprocess.Popen([sys.executable, "-m", "datasette", "serve", str(path), option, str(config),
                               "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(base + "/-/versions.json", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        results, stalled = asyncio.run(phases(base, args.items, args.clients, args.seconds))
    finally:
        server.terminate()
        server.wait()
    print(environment_line())
    print(f"datasette {datasette.__version__}, {args.items:,} items, {args.clients} clients, {args.seconds:g} s a phase, "
          f"id= from {'the related lists' if args.related else 'an exact search'}")
    alone = percentiles(results["table page alone (1 client)"][0])
    rows = []
    for name, (latencies, errors, rate) in results.items():
        p50, p95 = percentiles(latencies)
        ratio = f"{p95 / alone[1]:.2f}x" if name.startswith("table page") else ""
        rows.append([name, f"{p50:.1f}", f"{p95:.1f}", f"{rate:.0f}", len(errors), ratio])
    table(["phase", "p50 ms", "p95 ms", "requests/s", "errors", "p95 vs table alone"], rows)
    print("stalled-model searches answered:", stalled)


if __name__ == "__main__":
    main()
