"""Helpers shared by the benchmark scripts (timing, tables, data locations)."""

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"  # git-ignored (/benchmarks/data/ in .gitignore)
BIN = Path(sys.executable).parent


def search_benchmark():
    """benchmarks/search.py as a module: its database builder, ids and numpy reference."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("search_benchmark", HERE / "search.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def data_dir() -> Path:
    DATA.mkdir(exist_ok=True)
    return DATA


def embedkit_command() -> list:
    """The installed `embedkit` console script of this Python (falls back to PATH)."""
    script = BIN / "embedkit"
    if script.exists():
        return [str(script)]
    found = shutil.which("embedkit")
    if found:
        return [found]
    return [sys.executable, "-c", "from embedkit.cli import cli; cli()"]


def offline_env(**extra) -> dict:
    """Environment for subprocesses: never reach for the Hugging Face hub (no network here)."""
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    env.update(extra)
    return env


def timed(fn, *args, **kwargs):
    """(seconds, result) of one call."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def run_timed(command, env=None, check=True, **kwargs):
    """Wall seconds of a subprocess (its output captured); raises if it fails."""
    start = time.perf_counter()
    proc = subprocess.run(command, env=env or offline_env(), capture_output=True, text=True, **kwargs)
    elapsed = time.perf_counter() - start
    if check and proc.returncode != 0:
        raise SystemExit(
            f"command failed ({proc.returncode}): {' '.join(map(str, command))}\n"
            f"stdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-4000:]}"
        )
    return elapsed, proc


def median(values):
    return statistics.median(values)


def fmt_seconds(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:8.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:8.2f} ms"
    return f"{seconds:8.2f} s "


def table(headers, rows, title=None):
    """Print a plain fixed-width table."""
    rows = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(str(h)) for i, h in enumerate(headers)]
    if title:
        print(f"\n{title}")
    line = "  ".join(str(h).ljust(w) for h, w in zip(headers, widths))
    print(line)
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))))
    sys.stdout.flush()


def environment_line() -> str:
    import numpy as np

    import embedkit

    return (
        f"python {sys.version.split()[0]}, numpy {np.__version__}, embedkit {embedkit.__version__}, "
        f"{os.cpu_count()} CPUs (timings are noisy when other work runs: best of several, interleaved)"
    )


# Synthetic abstract-like texts (embed.py, rerun.py): seeded, 40-200 words each.
WORDS = """
we propose novel method model models approach framework analysis results show demonstrate data dataset
datasets performance improve improves improvement significant significantly learning deep neural network
networks training trained task tasks language languages text retrieval search semantic embedding embeddings
vector vectors similarity query queries document documents corpus benchmark benchmarks evaluation evaluate
experiments experimental state of the art baseline baselines accuracy efficient efficiency scalable large
scale small fast memory index indexing graph graphs protein proteins cell cells gene expression clinical
patients study studies cohort trial treatment outcomes risk climate temperature ocean carbon emissions
energy solar battery materials catalyst synthesis quantum spin lattice optical laser galaxy galaxies stellar
dark matter survey observations simulation simulations numerical equation equations theorem proof bound
bounds algorithm algorithms complexity optimal convergence stochastic gradient optimization sparse dense
distributed parallel hardware database databases storage sqlite transactions consistency latency throughput
robust robustness noise uncertainty estimation inference bayesian prior posterior sampling causal effect
effects policy reinforcement agent agents reward environment control robot robotic vision image images video
segmentation detection classification regression clustering representation representations pretrained
transformer attention layer layers parameters fine tuning zero shot few supervised unsupervised contrastive
in on for with by from to and or a an this that these our its their across between under over without using
based via while however moreover furthermore finally first second new existing prior recent key main
""".split()


def synthetic_texts(count, seed, min_words=40, max_words=200):
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, len(WORDS) + 1) ** 0.8  # a Zipf-ish mix, like real prose
    weights /= weights.sum()
    order = rng.permutation(len(WORDS))
    texts = []
    for i in range(count):
        words = [WORDS[order[k]] for k in rng.choice(len(WORDS), rng.integers(min_words, max_words + 1), p=weights)]
        sentences, start = [], 0
        while start < len(words):
            length = int(rng.integers(8, 25))
            sentence = words[start : start + length]
            sentences.append(" ".join(sentence).capitalize() + ".")
            start += length
        texts.append(f"Study {i}: " + " ".join(sentences))
    return texts
