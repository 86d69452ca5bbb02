"""Embedding on a Dask cluster (models/distributed.py, `embed-multi --workers/--cluster`): a
local cluster of 2 worker processes, started by the test, embeds with the real int8 model;
the database has one writer, every item is written once, and a re-run embeds nothing."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import embedkit
from embedkit.items import Item

pytest.importorskip("dask.distributed")
pytestmark = [pytest.mark.model, pytest.mark.slow]

MODEL = "all-MiniLM-L6-v2-int8"
EMBEDKIT = os.path.join(os.path.dirname(sys.executable), "embedkit")
TEXTS = [f"Note {i}: {topic} and how it relates to item {i * 7 % 13}." for i, topic in enumerate(
    ["backing up a SQLite database", "baking rye bread", "patching a bicycle tube", "tuning a violin",
     "reading a train timetable", "pruning apple trees", "writing a cover letter", "brewing green tea"] * 10)]


@pytest.fixture(scope="module")
def client():
    from embedkit.models import distributed

    cluster_client = distributed.connect(workers=2)
    yield cluster_client
    cluster_client.close()


def embedded_alone(texts):
    script = (
        "import json, sys\n"
        "from embedkit.models import get_model\n"
        f"print(json.dumps(get_model({MODEL!r}).embed(json.loads(sys.argv[1])).tolist()))\n"
    )
    out = subprocess.run([sys.executable, "-c", script, json.dumps(texts)], capture_output=True, text=True, check=True)
    return np.array(json.loads(out.stdout), dtype=np.float32)


def test_two_workers_embed_every_item_once_and_a_rerun_nothing(tmp_path, client):
    from embedkit.models import distributed, get_model

    local = get_model(MODEL)
    model = distributed.DistributedModel(local, client)
    assert model.workers == 2 and model.texts_per_call == 2 * local.texts_per_call
    with embedkit.Database(tmp_path / "e.db") as db:
        coll = db.create_collection("notes", model=MODEL)
        version = coll.version()
        items = [Item(f"n{i:02d}", text, {"i": i}) for i, text in enumerate(TEXTS)]
        stats = coll.embed_multi(items, store=True, batch_size=16, model=model)
        assert (stats.embedded, stats.failed) == (len(TEXTS), 0)
        # Every write bumps the version once (triggers): each item was written exactly once.
        assert coll.version() - version == len(TEXTS) == coll.count()
        # Both workers embedded: the batches were split between them.
        pids = client.run(lambda: __import__("os").getpid())
        assert len(set(pids.values())) == 2
        # The vectors are the model's own, as embedded without a cluster (in another process:
        # ONNX Runtime is not loaded into this one beside the cluster's threads).
        for i, vector in zip((0, 17, 79), embedded_alone([TEXTS[i] for i in (0, 17, 79)])):
            assert np.allclose(coll.vector(f"n{i:02d}"), vector, atol=1e-6)

        calls, version = model.calls, coll.version()
        again = coll.embed_multi(items, store=True, batch_size=16, model=model)
        assert (again.embedded, again.unchanged, model.calls, coll.version()) == (0, len(TEXTS), calls, version)


def test_a_model_standing_for_another_is_refused(tmp_path, client):
    from embedkit.models import distributed, get_model

    with embedkit.Database(tmp_path / "e.db") as db:
        coll = db.create_collection("notes", model="test-letters")
        with pytest.raises(embedkit.EmbedkitError, match="uses model 'test-letters', not 'all-MiniLM-L6-v2-int8'"):
            coll.embed_multi([Item("a", "text")], model=distributed.DistributedModel(get_model(MODEL), client))


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
