"""Re-running embed-multi over unchanged input: nothing is embedded, the model is never loaded.

Each round: `embedkit embed-multi bench texts.jsonl --store` (a subprocess) into a fresh
database -- the first run, which loads the model and embeds every text -- then the same
command again (--reruns times) over the unchanged input. Goal: re-run >= 50x faster.

Proof of zero model calls on a re-run:
- the CLI re-run, run through a small wrapper (`python -c`) that invokes the click command
  and then reports the default model's call counter and whether torch or
  sentence_transformers were ever imported;
- the Python API re-run in this process: Collection.embed_multi(...) leaves model.calls
  unchanged and the model unloaded (this process never imports torch).

    python benchmarks/rerun.py
    python benchmarks/rerun.py --count 300 --rounds 1
"""

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (  # noqa: E402
    embedkit_command,
    environment_line,
    offline_env,
    run_timed,
    synthetic_texts,
    table,
)

import embedkit  # noqa: E402
from embedkit import models  # noqa: E402

HEAVY = ("torch", "sentence_transformers", "transformers")

WRAPPER = """
import json, sys
from embedkit.cli import cli
from embedkit import models
try:
    cli.main(args=sys.argv[1:], prog_name="embedkit", standalone_mode=False)
finally:
    model = models.get_model()
    print(json.dumps({
        "model_calls": model.calls,
        "model_loaded": model.loaded,
        "imported": sorted(m for m in %r if m in sys.modules),
    }))
""" % (HEAVY,)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000, help="texts to embed (default: 1000)")
    parser.add_argument("--rounds", type=int, default=2, help="fresh-database rounds; the best counts (default: 2)")
    parser.add_argument("--reruns", type=int, default=3, help="re-runs per round (default: 3)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print("embedkit re-run benchmark: embed-multi over unchanged input")
    print(environment_line())
    texts = synthetic_texts(args.count, args.seed)
    tmp = tempfile.TemporaryDirectory(prefix="embedkit-bench-rerun-")
    jsonl = os.path.join(tmp.name, "texts.jsonl")
    with open(jsonl, "w", encoding="utf-8") as f:
        for i, text in enumerate(texts):
            f.write(json.dumps({"id": f"doc{i:05d}", "content": text}) + "\n")
    print(f"{len(texts)} synthetic texts in {jsonl}")

    first, again = [], []
    unchanged = f"0 embedded, 0 reused, 0 updated, {len(texts)} unchanged, 0 failed"
    for r in range(args.rounds):
        path = os.path.join(tmp.name, f"round-{r}.db")
        command = [*embedkit_command(), "embed-multi", "bench", jsonl, "--store", "-d", path]
        seconds, proc = run_timed(command, env=offline_env())
        assert f"{len(texts)} embedded" in proc.stderr, proc.stderr
        first.append(seconds)
        print(f"  round {r + 1}: first run {seconds:.2f} s  ({proc.stderr.strip().splitlines()[-1]})", flush=True)
        for _ in range(args.reruns):
            seconds, proc = run_timed(command, env=offline_env())
            assert unchanged in proc.stderr, proc.stderr
            again.append(seconds)
            print(f"  round {r + 1}: re-run    {seconds:.3f} s ({proc.stderr.strip().splitlines()[-1]})", flush=True)

    # The CLI re-run through a wrapper that reports what happened inside the process.
    wrapper_args = ["embed-multi", "bench", jsonl, "--store", "-d", path]
    seconds, proc = run_timed([sys.executable, "-c", WRAPPER, *wrapper_args], env=offline_env())
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert unchanged in proc.stderr, proc.stderr
    assert report == {"model_calls": 0, "model_loaded": False, "imported": []}, report
    print(f"CLI re-run (wrapper, {seconds:.3f} s): model calls {report['model_calls']}, model loaded "
          f"{report['model_loaded']}, torch/sentence_transformers/transformers imported: {report['imported'] or 'none'}")

    # The Python API re-run, in this process.
    model = models.get_model()
    calls = model.calls
    db = embedkit.Database(path)
    coll = db.collection("bench")
    items = [embedkit.Item(f"doc{i:05d}", text) for i, text in enumerate(texts)]
    api_times = []
    for _ in range(args.reruns):
        start = time.perf_counter()
        stats = coll.embed_multi(items, store=True)
        api_times.append(time.perf_counter() - start)
        assert stats.summary() == unchanged, stats.summary()
    db.close()
    heavy = [m for m in HEAVY if m in sys.modules]
    assert model.calls == calls and not model.loaded and not heavy, (model.calls, model.loaded, heavy)
    print(f"Python API re-run: {stats.summary()}; model calls {model.calls - calls}, model loaded {model.loaded}, "
          f"heavy modules imported: {heavy or 'none'}")

    best_first, best_again = min(first), min(again)
    rows = [
        ["first run (CLI, fresh database)", f"{best_first:.2f} s", "1.0x"],
        ["re-run, unchanged input (CLI)", f"{best_again:.3f} s", f"{best_first / best_again:.0f}x faster"],
        ["re-run, unchanged input (Python API, in-process)", f"{min(api_times) * 1e3:.1f} ms",
         f"{best_first / min(api_times):.0f}x faster"],
    ]
    table(["embed-multi bench texts.jsonl --store", "best wall", "vs first run"], rows,
          f"{len(texts)} texts, best of {args.rounds} first runs and {args.rounds * args.reruns} CLI re-runs")
    ratio = best_first / best_again
    print(f"goal re-run >= 50x faster: {'met' if ratio >= 50 else 'MISSED'} ({ratio:.0f}x); model calls on re-run: 0")
    seconds, _ = run_timed([*embedkit_command(), "--version"])
    print(f"for scale: `embedkit --version` takes {seconds:.3f} s")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
