"""An embed-multi run killed or interrupted half way leaves a valid database that a re-run completes;
on Ctrl-C or SIGTERM it keeps the documents it finished and says so; on a terminal it shows progress."""

import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

import pdfs
from embedserver import EmbedServer
from terminal import run_on_a_terminal

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


def interrupt_part_way(command, env, sig, started, timeout=45):
    """(exit status, stderr) of command sent sig once started() says it has committed something."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while not started():
            assert process.poll() is None, "embed-multi finished before it could be interrupted"
            assert time.monotonic() < deadline, "nothing was committed in time"
            time.sleep(0.01)
        assert process.poll() is None, "embed-multi finished before it could be interrupted"
        process.send_signal(sig)
        _, stderr = process.communicate(timeout=60)
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


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM], ids=["kill-9", "ctrl-c", "sigterm"])
def test_an_interrupted_run_is_completed_by_a_re_run(job, sig):
    command, database, env = job
    returncode, stderr = interrupt_part_way(command, env, sig, lambda: committed_rows(database))
    done = check_consistent(database)
    assert 0 < done < ITEMS
    if sig == signal.SIGKILL:
        assert returncode == -signal.SIGKILL
    else:
        # What was committed is kept and said, in one line; the exit status is the shell's for the signal.
        assert returncode == 128 + sig
        assert stderr.splitlines() == [f"interrupted: {done} items kept; re-run to continue"]

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
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


# ---------------------------------------------------------------- documents


WORDS = ("state space model router token layer weight ternary attention window memory cache chunk page "
         "sentence paragraph vector index query score rank batch commit signal process file").split()


def sentence(rng):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randrange(8, 16))).capitalize() + f" {rng.random():.6f}."


@pytest.fixture
def papers(tmp_path):
    """Eight PDFs of four pages of distinct text each (no chunk is shared between them)."""
    rng = random.Random(14)
    folder = tmp_path / "pdfs"
    folder.mkdir()
    return [
        str(pdfs.text_pdf(folder / f"paper{n}.pdf",
                          ["\n\n".join(" ".join(sentence(rng) for _ in range(6)) for _ in range(4)) for _ in range(4)]))
        for n in range(8)
    ]


def documents_committed(database):
    if not os.path.exists(database):
        return 0
    conn = sqlite3.connect(database, timeout=5)
    try:
        return conn.execute("select count(*) from _embedkit_sources").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def whole_documents(database):
    """{source: chunks} of the documents recorded, each checked to have all its chunks and no others."""
    conn = sqlite3.connect(database)
    try:
        assert conn.execute("pragma integrity_check").fetchall() == [("ok",)]
        recorded = dict(conn.execute("select source, items from _embedkit_sources where collection = 'papers'"))
        stored = dict(conn.execute(
            "select json_extract(metadata, '$.source'), count(*) from papers group by 1"))
    finally:
        conn.close()
    assert stored == recorded
    return recorded


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_pdf_run_keeps_whole_documents_and_a_re_run_continues(papers, tmp_path, minilm, sig):
    # minilm: the default model prepared before the clock starts
    database = str(tmp_path / "papers.db")
    command = [EMBEDKIT, "embed-multi", "papers", *papers, "--batch-size", "8", "-d", database]
    env = {k: v for k, v in os.environ.items() if k != "EMBEDKIT_DATABASE"}
    env.setdefault("OMP_NUM_THREADS", "1")
    returncode, stderr = interrupt_part_way(command, env, sig, lambda: documents_committed(database), timeout=180)
    kept = whole_documents(database)
    assert 0 < len(kept) < len(papers)
    assert returncode == 128 + sig
    assert stderr.splitlines() == [
        f"interrupted: {len(kept)} document{'s' * (len(kept) > 1)} kept; re-run to continue"
    ]

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    total = whole_documents(database)
    assert set(total) == set(papers) and all(total[source] == count for source, count in kept.items())
    assert summary(rerun.stderr) == (
        f"{sum(total.values()) - sum(kept.values())} embedded, 0 reused, 0 updated, {sum(kept.values())} unchanged, 0 failed"
    )


# ---------------------------------------------------------------- progress


def test_progress_by_document_and_chunk_on_a_terminal_and_none_when_piped(papers, tmp_path):
    with EmbedServer(latency=0.05) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("EMBEDKIT_DATABASE", "OPENAI_"))}
        env.update(OPENAI_BASE_URL=server.openai_url, OPENAI_API_KEY="sk-test", EMBEDKIT_USER_DIR=str(tmp_path / "user"))
        command = [EMBEDKIT, "embed-multi", "papers", *papers[:3], "-m", "openai/test-embed", "--batch-size", "2"]
        status, shown = run_on_a_terminal([*command, "-d", str(tmp_path / "terminal.db")], env)
        piped = subprocess.run([*command, "-d", str(tmp_path / "piped.db")], env=env, capture_output=True, text=True,
                               timeout=120)
    assert status == 0, shown
    frames = [frame.strip() for frame in re.split(r"[\r\n]", shown) if frame.strip()]
    chunks = int(piped.stderr.split()[0])
    assert any(re.search(r"Reading +\[[#-]+\] +0/3", frame) for frame in frames)
    assert any(re.search(r"Reading +\[#+\] +3/3", frame) for frame in frames)
    # Chunks go up batch by batch, and documents as each is stored whole.
    seen = [(int(m[1]), int(m[2])) for frame in frames
            if (m := re.search(r"Embedding +\[[#-]+\] +(\d+)/%d .*?(\d)/3 documents" % chunks, frame))]
    assert len({chunk for chunk, _ in seen}) > 3 and {documents for _, documents in seen} >= {1, 2, 3}
    assert seen == sorted(seen) and seen[-1] == (chunks, 3)
    assert frames[-1] == f"{chunks} embedded, 0 reused, 0 updated, 0 unchanged, 0 failed"
    # Piped, only the summary.
    assert piped.returncode == 0 and piped.stderr.splitlines() == [frames[-1]]
