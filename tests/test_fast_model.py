"""all-MiniLM-L6-v2-int8: the default model's weights on ONNX Runtime with int8 weights.

The model is really prepared (torch export, fusion, quantisation) into a temporary cache
directory once per session, and compared with the real torch model.
"""

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
import sqlite_utils

from embedkit import models
from embedkit.models import onnx_int8
from embedkit.models.onnx_int8 import OnnxInt8Model

DATA = os.path.join(os.path.dirname(__file__), "data", "eval")
MODEL = "all-MiniLM-L6-v2-int8"


def eval_texts():
    """The small eval set's documents and queries: real prose of several lengths."""
    texts = []
    for name, field in (("corpus.jsonl", "text"), ("queries.jsonl", "text")):
        with open(os.path.join(DATA, name), encoding="utf-8") as f:
            texts += [json.loads(line)[field] for line in f if line.strip()]
    return texts


# Longer than the model reads (cut at 256 word pieces), unicode, one word, nothing at all.
EDGE = [
    "SQLite keeps the whole database in one file, and readers never block writers in WAL mode. " * 30,
    "Crème brûlée, naïve café: 日本語のテキスト 😀",
    "bread",
    "",
]


@contextlib.contextmanager
def captured_stderr():
    stream = io.StringIO()
    with contextlib.redirect_stderr(stream):
        yield stream


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    """A cache directory holding the prepared model, and what the first load printed."""
    cache = tmp_path_factory.mktemp("embedkit-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMBEDKIT_CACHE_DIR", str(cache))
        model = OnnxInt8Model()
        with captured_stderr() as stderr:
            model.load()
        model_path, manifest_path = model.paths()
    return {"cache": cache, "model": model, "stderr": stderr.getvalue(), "path": model_path, "manifest": manifest_path}


@pytest.fixture
def int8(prepared):
    return prepared["model"]


@pytest.fixture
def cache_env(prepared, monkeypatch):
    """EMBEDKIT_CACHE_DIR pointing at the prepared cache, for models loaded by the test."""
    monkeypatch.setenv("EMBEDKIT_CACHE_DIR", str(prepared["cache"]))
    return prepared["cache"]


def cosines(a, b):
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_first_use_prepares_once_and_says_so(prepared):
    assert prepared["model"].last_load == "prepared"
    lines = prepared["stderr"].splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"embedkit: preparing {MODEL} once") and str(prepared["cache"]) in lines[0]
    assert lines[1].startswith(f"embedkit: {MODEL} is ready (")
    assert os.path.dirname(prepared["path"]) == os.path.join(str(prepared["cache"]), "onnx")
    manifest = json.loads(open(prepared["manifest"], encoding="utf-8").read())
    assert manifest["bytes"] == os.path.getsize(prepared["path"])
    # Every layer's attention became one fused op: the speed depends on it.
    assert manifest["fusions"]["Attention"] == 6
    assert manifest["probe_cosine_min"] >= onnx_int8.PROBE_MIN
    # Nothing left behind but the model, its manifest and the lock.
    names = sorted(os.listdir(os.path.dirname(prepared["path"])))
    assert names == sorted(os.path.basename(p) for p in (prepared["path"], prepared["manifest"], prepared["path"] + ".lock"))


def test_later_loads_reuse_the_cache(prepared, cache_env):
    before = os.stat(prepared["path"]).st_mtime_ns
    model = OnnxInt8Model()
    with captured_stderr() as stderr:
        vector = model.embed(["reused"])
    assert model.last_load == "cached"
    assert stderr.getvalue() == ""
    assert os.stat(prepared["path"]).st_mtime_ns == before
    assert np.allclose(vector, prepared["model"].embed(["reused"]), atol=1e-6)


def test_vectors_agree_with_the_torch_model(int8, minilm):
    texts = eval_texts() + EDGE
    fast = int8.embed(texts)
    reference = minilm.embed(texts)
    assert fast.shape == (len(texts), 384) and fast.dtype == np.float32
    assert np.allclose(np.linalg.norm(fast, axis=1), 1, atol=1e-5)
    agreement = cosines(fast, reference)
    # Measured: mean 0.993, min 0.977 over 990 texts (docs paragraphs, queries, abstracts).
    assert agreement.mean() >= 0.985, agreement
    assert agreement.min() >= 0.96, agreement


def test_a_texts_vector_does_not_depend_on_its_company(int8):
    texts = eval_texts() + EDGE
    together = int8.embed(texts)
    alone = np.concatenate([int8.embed([text]) for text in texts])
    assert np.allclose(together, alone, atol=1e-6)
    assert np.array_equal(int8.embed([]), np.zeros((0, 384), dtype=np.float32))


def test_search_ranks_like_the_torch_model(int8, minilm):
    corpus = eval_texts()[:20]
    queries = ["how do I back up a sqlite database", "making bread at home", "repair a punctured bicycle tire"]
    fast = int8.embed(queries) @ int8.embed(corpus).T
    reference = minilm.embed(queries) @ minilm.embed(corpus).T
    # Measured: scores differ by at most 0.026; near ties (0.43 and 0.43) may swap.
    assert np.abs(fast - reference).max() <= 0.05
    assert np.array_equal(np.argsort(-fast, axis=1)[:, :2], np.argsort(-reference, axis=1)[:, :2])


def test_tokens_are_counted_like_the_torch_model(minilm):
    model = OnnxInt8Model()  # counting never needs the ONNX file
    texts = eval_texts() + EDGE
    assert model.count_tokens(texts) == minilm.count_tokens(texts)
    assert model.max_tokens == minilm.max_tokens == 256
    assert model.count_truncated(texts) == minilm.count_truncated(texts) == 1
    assert not model.loaded


def test_counting_tokens_prepares_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDKIT_CACHE_DIR", str(tmp_path / "cache"))
    model = OnnxInt8Model()
    assert model.count_tokens(["one two three"]) == [5]
    assert not model.loaded
    assert not (tmp_path / "cache").exists()


def test_registered_by_name_and_alias():
    model = models.get_model(MODEL)
    assert isinstance(model, OnnxInt8Model)
    assert models.get_model("all-MiniLM-L6-v2-onnx") is model
    assert models.canonical_id("all-MiniLM-L6-v2-onnx") == MODEL
    assert (model.dimensions, model.max_tokens) == (384, 256)
    assert model in [m for m, _ in models.list_models()]


def test_cli_collection_uses_its_model(invoke, cache_env, db_path, tmp_path):
    data = tmp_path / "posts.csv"
    data.write_text(
        "id,title,body\n"
        "backup,Backing up SQLite,Copy a live database safely with the .backup command.\n"
        "rye,Rye bread,A dense loaf of rye flour with caraway seeds.\n"
        "tyre,Fixing a flat tyre,Find the puncture in the inner tube and patch it.\n",
        encoding="utf-8",
    )
    result = invoke("embed-multi", "posts", data, "-m", "all-MiniLM-L6-v2-onnx", "--store")
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[-1] == "3 embedded, 0 reused, 0 updated, 0 unchanged, 0 failed"
    registry = sqlite_utils.Database(db_path)["_embedkit_collections"].get("posts")
    assert (registry["model"], registry["dimensions"]) == (MODEL, 384)
    stored = {row["id"]: np.frombuffer(row["embedding"], dtype="<f4") for row in sqlite_utils.Database(db_path)["posts"].rows}
    expected = models.get_model(MODEL).embed(["Rye bread\nA dense loaf of rye flour with caraway seeds."])[0]
    assert np.allclose(stored["rye"], expected, atol=1e-6)

    # No -m: similar embeds the query with the collection's model.
    result = invoke("similar", "posts", "-c", "baking a loaf", "-n", "1")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["id"] == "rye"
    result = invoke("similar", "posts", "-c", "bicycle repair", "-n", "1")
    assert json.loads(result.stdout)["id"] == "tyre"

    # The torch model is another model: its vectors are not the collection's.
    refused = invoke("embed-multi", "posts", data, "-m", "all-MiniLM-L6-v2")
    assert refused.exit_code != 0
    assert f"uses model '{MODEL}', not 'all-MiniLM-L6-v2'" in refused.output


def test_inference_never_imports_torch(prepared, tmp_path):
    script = (
        "import sys\n"
        "from embedkit import models\n"
        f"vectors = models.get_model({MODEL!r}).embed(['a', 'b c'])\n"
        "print(vectors.shape, 'torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    env = dict(os.environ, EMBEDKIT_CACHE_DIR=str(prepared["cache"]))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(2, 384) False False"
    assert result.stderr == ""  # loaded from the cache: nothing prepared, nothing said


def test_damaged_cache_is_prepared_again(prepared, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    shutil.copytree(prepared["cache"], cache)
    monkeypatch.setenv("EMBEDKIT_CACHE_DIR", str(cache))
    model = OnnxInt8Model()
    model_path, manifest_path = model.paths()
    assert onnx_int8._check_prepared(model_path, manifest_path) is None
    with open(model_path, "r+b") as f:  # a partial file, as a full disk or a killed copy leaves
        f.truncate(os.path.getsize(model_path) // 2)
    assert onnx_int8._check_prepared(model_path, manifest_path) == (
        f"{os.path.getsize(model_path)} bytes, not {os.path.getsize(prepared['path'])}"
    )
    with captured_stderr() as stderr:
        vectors = model.embed(["after repair"])
    assert model.last_load == "re-prepared"
    first = stderr.getvalue().splitlines()[0]
    assert first == f"embedkit: {model_path} is damaged ({os.path.getsize(prepared['path']) // 2} bytes, not {os.path.getsize(prepared['path'])}); preparing it again"
    assert onnx_int8._check_prepared(model_path, manifest_path) is None
    assert cosines(vectors, prepared["model"].embed(["after repair"]))[0] > 0.9999

    # Same size, other bytes: the checksum catches it; no manifest at all is caught too.
    with open(model_path, "r+b") as f:
        f.seek(1000)
        f.write(b"\0" * 64)
    assert onnx_int8._check_prepared(model_path, manifest_path) == "its checksum differs from the manifest's"
    os.remove(manifest_path)
    assert onnx_int8._check_prepared(model_path, manifest_path) == "no valid manifest beside it"


def test_two_threads_prepare_it_once(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDKIT_CACHE_DIR", str(tmp_path / "cache"))
    first, second = OnnxInt8Model(), OnnxInt8Model()
    errors = []

    def load(model):
        try:
            model.load()
        except Exception as ex:  # reported below, with the test's failure
            errors.append(ex)

    with captured_stderr() as stderr:
        threads = [threading.Thread(target=load, args=(model,)) for model in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors, errors
    assert sorted([first.last_load, second.last_load]) == ["cached", "prepared"]
    assert stderr.getvalue().count("preparing") == 1
    assert np.allclose(first.embed(["same file"]), second.embed(["same file"]), atol=1e-6)
