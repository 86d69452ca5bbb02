"""An embed-multi run killed or interrupted half way leaves a valid database that a re-run completes."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

EMBEDKIT = os.path.join(os.path.dirname(sys.executable), "embedkit")
ITEMS = 1500
BATCH = 20
TOPICS = ["weather", "football", "cooking", "taxes", "music", "trains", "gardens", "planets", "poetry", "coffee"]


@pytest.fixture
def job(tmp_path, minilm):  # minilm: the default model prepared before the clock starts
    path = tmp_path / "items.jsonl"
    with open(path, "w") as f:
        for i in range(ITEMS):
            f.write(json.dumps({"id": f"item{i:04d}", "text": f"Note {i} about {TOPICS[i % 10]}, number {i * 7}"}) + "\n")
    database = str(tmp_path / "interrupt.db")
    command = [EMBEDKIT, "embed-multi", "items", str(path), "--batch-size", str(BATCH), "-d", database]
    env = {k: v for k, v in os.environ.items() if k != "EMBEDKIT_DATABASE"}
    # One torch thread: on a small, busy machine (the test runner, other jobs) spinning
    # OpenMP threads make the model several times slower without changing what it computes.
    env.setdefault("OMP_NUM_THREADS", "1")
    return command, database, env


def committed_rows(database):
    """Rows committed so far, read the way any other client would; None before the table exists."""
    if not os.path.exists(database):
        return None
    conn = sqlite3.connect(database, timeout=5)
    try:
        return conn.execute('select count(*) from "items"').fetchone()[0]
    except sqlite3.OperationalError:
        return None
    finally:
        conn.close()


def interrupt_part_way(command, env, database, sig):
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 45
    try:
        while time.monotonic() < deadline:
            count = committed_rows(database)
            if count:
                break
            assert process.poll() is None, "embed-multi finished before it could be interrupted"
            time.sleep(0.01)
        else:
            pytest.fail("no rows were committed in time")
        assert process.poll() is None, "embed-multi finished before it could be interrupted"
        process.send_signal(sig)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, stderr.decode()


def check_consistent(database):
    """A valid database whose rows are all complete, and only whole batches of them."""
    conn = sqlite3.connect(database)
    try:
        assert conn.execute("pragma integrity_check").fetchall() == [("ok",)]
        rows = conn.execute('select id, embedding, content_hash from "items"').fetchall()
        version_row = conn.execute("select model, dimensions from _embedkit_collections where name = 'items'").fetchone()
    finally:
        conn.close()
    assert version_row == ("all-MiniLM-L6-v2-int8", 384)
    for id, embedding, digest in rows:
        assert id.startswith("item")
        assert isinstance(embedding, bytes) and len(embedding) == 384 * 4
        assert np.linalg.norm(np.frombuffer(embedding, dtype="<f4")) == pytest.approx(1.0, abs=1e-3)
        assert isinstance(digest, bytes) and len(digest) == 16  # a BLAKE2b-128 digest
    assert len(rows) % BATCH == 0
    return len(rows)


def summary(stderr):
    return stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_an_interrupted_run_is_completed_by_a_re_run(job, sig):
    command, database, env = job
    returncode, stderr = interrupt_part_way(command, env, database, sig)
    if sig == signal.SIGKILL:
        assert returncode == -signal.SIGKILL
    else:
        assert returncode == 1
        assert "Aborted!" in stderr and "Traceback" not in stderr
    done = check_consistent(database)
    assert 0 < done < ITEMS

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert rerun.returncode == 0, rerun.stderr
    assert summary(rerun.stderr) == f"{ITEMS - done} embedded, 0 reused, 0 updated, {done} unchanged, 0 failed"
    assert check_consistent(database) == ITEMS
    conn = sqlite3.connect(database)
    ids = [row[0] for row in conn.execute('select id from "items" order by id')]
    conn.close()
    assert ids == [f"item{i:04d}" for i in range(ITEMS)]

    third = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert third.returncode == 0, third.stderr
    assert summary(third.stderr) == f"0 embedded, 0 reused, 0 updated, {ITEMS} unchanged, 0 failed"
