"""Embedding on a Dask cluster (models/distributed.py, `embed-multi --workers/--cluster`): a
local cluster of 2 worker processes, started by the test, embeds with the real int8 model;
the database has one writer, every item is written once, and a re-run embeds nothing."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import embedkit

if importlib.util.find_spec("distributed") is None:
    pytest.skip("needs the 'cluster' extra (Dask)", allow_module_level=True)
pytestmark = [pytest.mark.model, pytest.mark.slow]

MODEL = "all-MiniLM-L6-v2-int8"
EMBEDKIT = os.path.join(os.path.dirname(sys.executable), "embedkit")
TEXTS = [f"Note {i}: {topic} and how it relates to item {i * 7 % 13}." for i, topic in enumerate(
    ["backing up a SQLite database", "baking rye bread", "patching a bicycle tube", "tuning a violin",
     "reading a train timetable", "pruning apple trees", "writing a cover letter", "brewing green tea"] * 10)]


# Dask runs in a child process: its threads outlive a cluster's closing, and this test
# process must stay fit to load ONNX Runtime for the tests after it.
CHILD = """
import json, os, sys
import embedkit
from embedkit.items import Item
from embedkit.models import distributed, get_model

texts, path = json.loads(sys.argv[1]), sys.argv[2]
client = distributed.connect(workers=2)
local = get_model(MODEL)
model = distributed.DistributedModel(local, client)
report = {"workers": model.workers, "texts_per_call": [model.texts_per_call, local.texts_per_call]}
with embedkit.Database(path) as db:
    coll = db.create_collection("notes", model=MODEL)
    version = coll.version()
    items = [Item(f"n{i:02d}", text, {"i": i}) for i, text in enumerate(texts)]
    stats = coll.embed_multi(items, store=True, batch_size=16, model=model)
    report["first"] = [stats.embedded, stats.failed, coll.version() - version, coll.count()]
    report["pids"] = len(set(client.run(os.getpid).values()))
    calls, version = model.calls, coll.version()
    again = coll.embed_multi(items, store=True, batch_size=16, model=model)
    report["again"] = [again.embedded, again.unchanged, model.calls - calls, coll.version() - version]
    other = db.create_collection("letters", model="test-letters")
    try:
        other.embed_multi([Item("a", "text")], model=model)
    except embedkit.EmbedkitError as ex:
        report["refused"] = str(ex)
client.close()
print(json.dumps(report))
""".replace("MODEL", repr(MODEL))


def embedded_alone(texts):
    script = (
        "import json, sys\n"
        "from embedkit.models import get_model\n"
        f"print(json.dumps(get_model({MODEL!r}).embed(json.loads(sys.argv[1])).tolist()))\n"
    )
    out = subprocess.run([sys.executable, "-c", script, json.dumps(texts)], capture_output=True, text=True, check=True)
    return np.array(json.loads(out.stdout), dtype=np.float32)


def test_two_workers_embed_every_item_once_and_a_rerun_nothing(tmp_path):
    script = "from conftest import LettersModel\n" + CHILD  # registers test-letters
    env = {**os.environ, "PYTHONPATH": os.path.dirname(__file__)}
    out = subprocess.run([sys.executable, "-c", script, json.dumps(TEXTS), str(tmp_path / "e.db")],
                         capture_output=True, text=True, timeout=900, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["workers"] == 2 and report["texts_per_call"][0] == 2 * report["texts_per_call"][1]
    # Each item embedded once; the version moves once per transaction: one per batch of 16.
    assert report["first"] == [len(TEXTS), 0, len(TEXTS) // 16, len(TEXTS)]
    assert report["pids"] == 2  # both workers were there to embed
    # The re-run embeds nothing, makes no model call and writes nothing.
    assert report["again"] == [0, len(TEXTS), 0, 0]
    assert "uses model 'test-letters', not 'all-MiniLM-L6-v2-int8'" in report["refused"]
    # The vectors are the model's own, as embedded without a cluster.
    with embedkit.Database(tmp_path / "e.db") as db:
        coll = db.collection("notes")
        for i, vector in zip((0, 17, 79), embedded_alone([TEXTS[i] for i in (0, 17, 79)])):
            assert np.allclose(coll.vector(f"n{i:02d}"), vector, atol=1e-6)


def test_embed_multi_with_workers_from_the_command_line(tmp_path):
    data = tmp_path / "notes.jsonl"
    data.write_text("".join(json.dumps({"id": f"n{i:02d}", "text": text}) + "\n" for i, text in enumerate(TEXTS[:30])))
    db_path = tmp_path / "cli.db"
    command = [EMBEDKIT, "embed-multi", "notes", str(data), "-m", MODEL, "--workers", "2", "-d", str(db_path)]
    first = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    assert "30 embedded, 0 reused, 0 updated, 0 unchanged, 0 failed" in first.stderr
    second = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert "0 embedded, 0 reused, 0 updated, 30 unchanged, 0 failed" in second.stderr
    with embedkit.Database(db_path) as db:
        assert db.collection("notes").count() == 30
    both = subprocess.run([*command, "--cluster", "tcp://127.0.0.1:1"], capture_output=True, text=True)
    assert both.returncode == 1 and "not both" in both.stderr.strip().splitlines()[-1]
    unreachable = subprocess.run([*command[:-4], "--cluster", "tcp://127.0.0.1:1", "-d", str(db_path)],
                                 capture_output=True, text=True, timeout=120)
    assert unreachable.returncode == 1
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:1" in unreachable.stderr.strip().splitlines()[-1]
