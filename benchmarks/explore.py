"""Explore: clusters and classification by example against known labels, and times at 100k items.

Data: Debian package descriptions with their sections, from this machine's apt lists, embedded
with all-MiniLM-L6-v2-int8 (benchmarks/debian_packages.py builds benchmarks/data/explore.db;
run `apt-get update` first on a machine without lists). The labelled set: at most 400
packages of each of 21 topical sections (debian_packages.SECTIONS).

Quality, on the labelled set copied into a fresh database:
- clustering (Collection.cluster, seeded k-means) against the sections: adjusted Rand index
  and NMI, with k = the number of sections and with -k auto;
- classification by example (Collection.classify: one centroid per label from N examples per
  section, N = 5 and 20) against scikit-learn's logistic regression trained on the same
  examples' vectors, both scored on every other item of the set: accuracy, mean and spread
  over SEEDS draws of the examples.

Times at 100,000 items (the `packages` collection: every package's description, then short
descriptions alone up to 100,000), in this process, on this machine's cores:
- Collection.cluster(k=20) and cluster(k="auto"), from reading the vectors to writing the tables
  (goal <= 60 s);
- Collection.map to HTML and to PNG (goal <= 30 s).

    nice -n 10 python benchmarks/debian_packages.py   # once: builds the data (slow: embeds 100k texts)
    nice -n 10 python benchmarks/explore.py
    nice -n 10 python benchmarks/explore.py --quality-only
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import data_dir, environment_line, table  # noqa: E402
from debian_packages import MODEL, SECTIONS  # noqa: E402

import embedkit  # noqa: E402
from embedkit import storage  # noqa: E402
from embedkit.explore.classify import Example  # noqa: E402
from embedkit.explore.loading import load  # noqa: E402

SEEDS = 5
PER_LABEL = (5, 20)


def labelled_copy(source, path) -> "embedkit.Collection":
    """The labelled set as the collection `labelled` of a new database at path."""
    db = embedkit.Database(path)
    collection = db.create_collection("labelled", model=MODEL)
    db.conn.execute("attach database ? as source", [str(source)])
    with storage.transaction(db.conn):
        db.conn.execute(
            "insert into labelled (id, embedding, content, metadata, content_hash, updated) "
            "select id, embedding, content, metadata, content_hash, updated from source.packages "
            "where json_extract(metadata, '$.set') = 'labelled'"
        )
    db.conn.execute("detach database source")
    return collection


def sections(collection) -> dict:
    return {id: metadata["section"] for id, metadata in zip(*_ids_metadata(collection))}


def _ids_metadata(collection):
    items = load(collection, metadata=True)
    return items.ids, items.metadata


def clustering_quality(collection, truth):
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    rows = []
    for k in (len(SECTIONS), "auto"):
        start = time.perf_counter()
        result = collection.cluster(k=k, seed=0)
        seconds = time.perf_counter() - start
        assigned = dict(collection.db.conn.execute("select id, cluster from labelled_clusters"))
        ids = sorted(truth)
        labels, found = [truth[id] for id in ids], [assigned[id] for id in ids]
        rows.append([f"k={k}" + (f" (chose {result.k})" if k == "auto" else ""),
                     f"{adjusted_rand_score(labels, found):.3f}", f"{normalized_mutual_info_score(labels, found):.3f}",
                     f"{seconds:.1f} s"])
    table(["clustering (seed 0)", "ARI", "NMI", "time"], rows,
          f"Clustering {len(truth):,} package descriptions against their {len(SECTIONS)} sections")
    return result


def classification_quality(collection, truth):
    from sklearn.linear_model import LogisticRegression

    items = load(collection)
    position = {id: i for i, id in enumerate(items.ids)}
    by_label = {}
    for id in sorted(truth):
        by_label.setdefault(truth[id], []).append(id)
    rows = []
    for n in PER_LABEL:
        ours, baseline = [], []
        for seed in range(SEEDS):
            rng = np.random.default_rng(seed)
            examples = {label: list(rng.choice(ids, n, replace=False)) for label, ids in sorted(by_label.items())}
            chosen = {id for ids in examples.values() for id in ids}
            test = [id for id in sorted(truth) if id not in chosen]
            collection.classify([Example(label, id=id) for label, ids in examples.items() for id in ids])
            predicted = dict(collection.db.conn.execute("select id, label from labelled_labels"))
            ours.append(np.mean([predicted[id] == truth[id] for id in test]))
            train = [id for ids in examples.values() for id in ids]
            model = LogisticRegression(max_iter=2000).fit(items.matrix[[position[id] for id in train]],
                                                          [truth[id] for id in train])
            guesses = model.predict(items.matrix[[position[id] for id in test]])
            baseline.append(np.mean([g == truth[id] for g, id in zip(guesses, test)]))
        rows.append([f"{n} per label", f"{np.mean(ours):.3f} ± {np.std(ours):.3f}",
                     f"{np.mean(baseline):.3f} ± {np.std(baseline):.3f}", f"{np.mean(ours) / np.mean(baseline):.2f}x"])
    table(["examples", "embedkit classify (centroids)", "logistic regression", "ratio"], rows,
          f"Classification accuracy on the other items, {SEEDS} draws of examples ({len(SECTIONS)} labels)")


def _timed(fn):
    """(wall seconds, CPU seconds of this process, result). While other work keeps the cores busy
    the wall time grows; the CPU time is what the call costs, about its wall time on idle cores
    for the parts that run on one thread (k-means, naming, PCA)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def times(path):
    db = embedkit.Database(path)
    collection = db.collection("packages")
    count = collection.count()
    import sklearn  # noqa: F401  (imported before timing: its import is not clustering's cost)
    from matplotlib import pyplot  # noqa: F401

    rows = []
    for k in (20, "auto"):
        wall, cpu, result = _timed(lambda k=k: collection.cluster(k=k, seed=0))
        rows.append([f"cluster k={k}" + (f" (chose {result.k})" if k == "auto" else ""), f"{wall:.1f} s",
                     f"{cpu:.1f} s", "60 s", f"{wall / 60:.2f}"])
    with tempfile.TemporaryDirectory() as directory:
        for suffix in ("html", "png"):
            target = os.path.join(directory, f"map.{suffix}")
            wall, cpu, _ = _timed(lambda target=target: collection.map(target))
            rows.append([f"map -o map.{suffix} ({os.path.getsize(target) / 2**20:.1f} MiB)", f"{wall:.1f} s",
                         f"{cpu:.1f} s", "30 s", f"{wall / 30:.2f}"])
    load = os.getloadavg()[0]
    table([f"at {count:,} items", "wall", "CPU", "goal", "wall/goal"], rows,
          f"Times on {os.cpu_count()} cores (load average {load:.1f} at the end: other work shares them)")
    db.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quality-only", action="store_true")
    parser.add_argument("--times-only", action="store_true")
    args = parser.parse_args()
    source = data_dir() / "explore.db"
    if not source.exists():
        raise SystemExit(f"{source} is missing: run python benchmarks/debian_packages.py first")
    print(environment_line())
    if not args.times_only:
        with tempfile.TemporaryDirectory() as directory:
            collection = labelled_copy(source, os.path.join(directory, "labelled.db"))
            truth = sections(collection)
            clustering_quality(collection, truth)
            classification_quality(collection, truth)
            collection.db.close()
    if not args.quality_only:
        times(source)


if __name__ == "__main__":
    main()
