"""Realistic vectors for the scale benchmarks (ann.py, routing.py).

Real text gathered on this machine, cut into chunks of at most CHUNK_CHARS characters, each
distinct chunk once:

- Debian package descriptions (the Translation-en lists of `apt-get update -o
  Acquire::Languages=en`, else `apt-cache dumpavail`'s short lines): a description's short
  line and long text, packed into chunks;
- manual pages (/usr/share/man, man1-man8, English): roff requests dropped, paragraphs
  packed into chunks;
- documentation files (/usr/share/doc: READMEs, NEWS, changelogs, plain text and gzip);
- the first paragraph of every public docstring of the Python standard library and numpy
  (as benchmarks/quantized.py gathers them).

They are embedded with all-MiniLM-L6-v2-int8 (embedkit's fast model) and cached in
benchmarks/data/realistic-texts.json and realistic-vectors-<count>.npy; the embedding is
resumable (partial results are saved every SAVE_EVERY texts).

To reach sizes past the real chunks, synthetic() draws from a generator fitted to them:
each synthetic vector is a real vector (chosen at random) plus Gaussian noise in the top
PCA_DIMS principal directions of the real vectors, scaled per direction to NOISE x that
direction's standard deviation, plus isotropic noise in the rest, then renormalised. So the
synthetic points form clouds around real ones, with the anisotropy of real embeddings (a few
directions carry most of the variance), and the distances from a point to its nearest
neighbours match the real set's (NOISE is chosen so: see fit_report()).
"""

import gzip
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import data_dir  # noqa: E402

CHUNK_CHARS = 600
MIN_CHARS = 40
SAVE_EVERY = 5_000
MODEL = "all-MiniLM-L6-v2-int8"
PCA_DIMS = 64
NOISE = 0.35


def _pack(paragraphs, limit=CHUNK_CHARS):
    """Paragraphs joined into chunks of at most limit characters (long ones cut at words)."""
    chunk = ""
    for paragraph in paragraphs:
        paragraph = " ".join(paragraph.split())
        while len(paragraph) > limit:
            cut = paragraph.rfind(" ", 0, limit)
            cut = cut if cut > limit // 2 else limit
            if chunk:
                yield chunk
                chunk = ""
            yield paragraph[:cut]
            paragraph = paragraph[cut:].strip()
        if not paragraph:
            continue
        if chunk and len(chunk) + 1 + len(paragraph) > limit:
            yield chunk
            chunk = ""
        chunk = f"{chunk} {paragraph}".strip()
    if chunk:
        yield chunk


def debian_descriptions():
    # The long descriptions are in the Translation-en lists, which `apt-get update -o
    # Acquire::Languages=en` fetches; without them, the short lines `apt-cache dumpavail` has.
    lists = sorted(Path("/var/lib/apt/lists").glob("*_i18n_Translation-en*"))
    if lists:
        helper = ["/usr/lib/apt/apt-helper", "cat-file", *map(str, lists)]
        text = subprocess.run(helper, capture_output=True, text=True).stdout
    else:
        text = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True).stdout
    for block in text.split("\n\n"):
        match = re.search(r"^Description(?:-en)?: (.*(?:\n .*)*)", block, re.M)
        if match:
            lines = [line[1:] if line.startswith(" ") else line for line in match.group(1).split("\n")]
            yield from _pack([" ".join(line for line in lines if line.strip() != ".")])


_ROFF_ESCAPES = re.compile(r"\\f[BIRP]|\\f\(..|\\\(..|\\[&|^e-]|\\s[-+]?\d")


def man_pages():
    root = Path("/usr/share/man")
    for section in sorted(root.glob("man[1-8]")):
        for path in sorted(section.iterdir()):
            try:
                raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
            except (OSError, EOFError):
                continue
            paragraphs, current = [], []
            for line in raw.decode("utf-8", "replace").splitlines():
                if line.startswith((".", "'")):
                    request = line[1:3]
                    if request in ("PP", "P ", "LP", "SH", "SS", "TP", "IP", "Pp", "Sh"):
                        paragraphs.append(" ".join(current))
                        current = []
                    # Bold/italic macros carry text; other requests do not.
                    if request in ("B ", "I ", "BR", "IR", "BI", "RB", "RI", "IB", "Nm", "Nd", "Ar", "Fl"):
                        current.append(line[3:].replace('"', ""))
                    continue
                current.append(_ROFF_ESCAPES.sub("", line))
            paragraphs.append(" ".join(current))
            yield from _pack(p for p in paragraphs if len(p.split()) >= 5)


def doc_files():
    root = Path("/usr/share/doc")
    for path in sorted(root.rglob("*")):
        name = path.name.lower()
        if not path.is_file() or path.is_symlink() or name == "copyright" or path.stat().st_size > 2_000_000:
            continue
        if not (name.endswith((".txt", ".md", ".rst", ".gz")) or name.startswith(("readme", "news", "changelog"))):
            continue
        try:
            raw = gzip.decompress(path.read_bytes()) if name.endswith(".gz") else path.read_bytes()
        except (OSError, EOFError):
            continue
        if b"\0" in raw[:4096]:
            continue
        text = raw.decode("utf-8", "replace")
        yield from _pack(re.split(r"\n\s*\n", text))


def docstrings():
    import importlib.util

    spec = importlib.util.spec_from_file_location("quantized_bench", Path(__file__).with_name("quantized.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.docstrings()


# source -> (chunks, the most taken from it: a seeded sample keeps the mix varied and the
# embedding within about half an hour on 2 CPUs)
SOURCES = {"debian": (debian_descriptions, 50_000), "man": (man_pages, 40_000), "doc": (doc_files, 25_000),
           "python": (docstrings, 15_000)}


def texts() -> list:
    """The distinct real chunks, gathered once and cached (what is installed changes them)."""
    path = data_dir() / "realistic-texts.json"
    if path.exists():
        return json.loads(path.read_text())
    seen, gathered = set(), []
    rng = np.random.default_rng(0)
    for name, (source, most) in SOURCES.items():
        start, found = time.perf_counter(), []
        for chunk in source():
            if len(chunk) >= MIN_CHARS and sum(c.isalpha() for c in chunk) > len(chunk) // 2 and chunk not in seen:
                seen.add(chunk)
                found.append(chunk)
        taken = [found[i] for i in sorted(rng.choice(len(found), min(most, len(found)), replace=False))]
        gathered += taken
        print(f"  {name}: {len(taken):,} of {len(found):,} chunks in {time.perf_counter() - start:.0f}s", flush=True)
    rng.shuffle(gathered)  # any prefix is a mix of the sources
    path.write_text(json.dumps(gathered))
    return gathered


def real_vectors(limit=None) -> np.ndarray:
    """Unit float32 vectors of texts() (the first limit of them), embedded once and cached."""
    chunks = texts()
    if limit is not None:
        chunks = chunks[:limit]
    path = data_dir() / f"realistic-vectors-{len(chunks)}.npy"
    if path.exists():
        return np.load(path)
    partial = data_dir() / f"realistic-vectors-{len(chunks)}.partial.npy"
    done = np.load(partial) if partial.exists() else np.empty((0, 384), np.float32)
    import embedkit

    model = embedkit.models.get_model(MODEL)
    print(f"embedding {len(chunks) - len(done):,} of {len(chunks):,} chunks with {MODEL} ...", flush=True)
    start = time.perf_counter()
    while len(done) < len(chunks):
        batch = chunks[len(done) : len(done) + SAVE_EVERY]
        done = np.concatenate([done, np.asarray(model.embed(batch), dtype=np.float32)])
        np.save(partial, done)
        rate = (len(done)) / (time.perf_counter() - start)
        print(f"  {len(done):,} / {len(chunks):,} ({rate:.0f}/s)", flush=True)
    done /= np.linalg.norm(done, axis=1, keepdims=True)
    np.save(path, done)
    partial.unlink()
    return done


def synthetic(real: np.ndarray, count: int, seed=0, noise=NOISE) -> np.ndarray:
    """count unit vectors drawn around the real ones (see the module's docstring)."""
    rng = np.random.default_rng(seed)
    mean = real.mean(axis=0)
    # The principal directions and their spreads, from a sample.
    sample = real[rng.choice(len(real), min(len(real), 50_000), replace=False)] - mean
    _, singular, axes = np.linalg.svd(sample, full_matrices=False)
    spread = singular / np.sqrt(len(sample) - 1)
    top, top_spread = axes[:PCA_DIMS], spread[:PCA_DIMS]
    rest = float(np.sqrt(np.mean(spread[PCA_DIMS:] ** 2)))
    out = np.empty((count, real.shape[1]), np.float32)
    for start in range(0, count, 100_000):
        m = min(100_000, count - start)
        base = real[rng.integers(0, len(real), m)]
        along = rng.standard_normal((m, PCA_DIMS), dtype=np.float32) * (noise * top_spread)
        iso = rng.standard_normal((m, real.shape[1]), dtype=np.float32) * (noise * rest)
        iso -= (iso @ top.T) @ top  # isotropic noise only outside the top directions
        block = base + along @ top + iso
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start : start + m] = block
    return out


def dataset(size, queries, seed=0):
    """(base, queries): `queries` real vectors held out as queries, and `size` base vectors: the
    other real ones, then synthetic() ones drawn around them up to size."""
    real = real_vectors()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(real))
    held, rest = real[order[:queries]], real[order[queries:]]
    if size <= len(rest):
        return np.ascontiguousarray(rest[:size]), held
    return np.concatenate([rest, synthetic(rest, size - len(rest), seed)]), held


def fit_report(real: np.ndarray, made: np.ndarray, sample=500, k=10, seed=0, size=50_000) -> dict:
    """How alike the two sets' neighbourhoods are: mean cosine to the 1st and 10th nearest
    neighbour within each set (among samples of equal size), and mean cosine between points."""
    rng = np.random.default_rng(seed)
    size = min(len(real), len(made), size)
    report = {}
    for name, matrix in (("real", real[rng.choice(len(real), size, replace=False)]),
                         ("synthetic", made[rng.choice(len(made), size, replace=False)])):
        probes = matrix[:sample]
        scores = probes @ matrix.T
        scores[np.arange(len(probes)), np.arange(len(probes))] = -np.inf
        top = -np.sort(-np.partition(scores, scores.shape[1] - k, axis=1)[:, -k:], axis=1)
        report[name] = {"nn1": float(top[:, 0].mean()), f"nn{k}": float(top[:, -1].mean()),
                        "mean": float(np.mean(probes[:500] @ matrix[:5000].T))}
    return report


if __name__ == "__main__":
    found = texts()
    print(f"{len(found):,} chunks, mean {np.mean([len(t) for t in found]):.0f} characters")
    vectors = real_vectors()
    print(vectors.shape)
