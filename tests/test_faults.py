"""Faults of the database file, and bad data other programs wrote, through the installed
`embedkit` command: each gives one line (`Error: FILE: what happened; what to do`), exit
status 1, and leaves the data as it was; reads go on where they can; `check` finds the damage
and `--fix` repairs what embedkit derives.

Set EMBEDKIT_FAULT_TABLE=PATH to have the suite write its table (fault, command, exit status,
message, data intact) to PATH.
"""

import contextlib
import json
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid

import numpy as np
import pytest

from conftest import command_env

EMBEDKIT = os.path.join(os.path.dirname(sys.executable), "embedkit")
MODEL = "openai/test-embed"
ITEMS = 60
# Root ignores file permissions: as root, commands that must meet a read-only file run with
# root's privileges dropped (uid 0 without capabilities is held to the permission bits like any
# user; nobody could not even run this Python, which lives under /root here).
UNPRIVILEGED = (
    ["setpriv", "--securebits=+noroot,+noroot_locked", "--bounding-set=-all", "--inh-caps=-all", "--"]
    if os.geteuid() == 0
    else []
)

RESULTS: list = []


@pytest.fixture(scope="module", autouse=True)
def fault_table():
    yield
    path = os.environ.get("EMBEDKIT_FAULT_TABLE")
    if path:
        with open(path, "w") as f:
            f.write("| fault | command | exit | message | data intact |\n| --- | --- | --- | --- | --- |\n")
            for fault, command, status, message, intact in RESULTS:
                f.write(f"| {fault} | `{command}` | {status} | {message} | {intact} |\n")


@pytest.fixture
def env(tmp_path, embed_service):
    return command_env(tmp_path, embed_service)


@pytest.fixture
def run(tmp_path, env):
    def run(*args, status=None, prefix=(), extra_env=None, preexec_fn=None, timeout=120, cwd=None):
        result = subprocess.run([*prefix, EMBEDKIT, *map(str, args)], cwd=cwd or tmp_path, env={**env, **(extra_env or {})},
                                capture_output=True, text=True, timeout=timeout, preexec_fn=preexec_fn)
        if status is not None:
            assert result.returncode == status, (result.stdout, result.stderr)
        return result

    return run


def posts_file(path, count=ITEMS, start=0, words=8):
    with open(path, "w") as f:
        for i in range(start, start + count):
            text = f"post {i} about " + " ".join(f"topic{(i * 7 + k) % 23}" for k in range(words))
            f.write(json.dumps({"id": f"p{i:04d}", "text": text, "metadata": {"n": i}}) + "\n")
    return path


@pytest.fixture
def posts(run, tmp_path):
    """A database of ITEMS posts (stored text), its related lists and an int8 index."""
    run("embed-multi", "posts", posts_file(tmp_path / "posts.jsonl"), "-m", MODEL, "--store", status=0)
    run("related", "posts", "-n", 3, status=0)
    run("index", "posts", "--quantize", "int8", status=0)
    return tmp_path / "embeddings.db"


def rows(path, table="posts"):
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return dict(conn.execute(f'select id, embedding from "{table}"').fetchall())
    finally:
        conn.close()


def integrity(path) -> str:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("pragma integrity_check").fetchone()[0]
    finally:
        conn.close()


def one_line_error(result, *fragments, waited=False):
    """The command failed with exit 1 and one line on stderr, `Error: ...` holding fragments
    (after the line saying it waits for a lock, if it waited)."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    if waited:
        assert lines[0].startswith("embedkit: waiting for "), result.stderr
        lines = lines[1:]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def record(fault, command, result, intact):
    message = (result.stderr.strip().splitlines() or result.stdout.strip().splitlines() or [""])[-1].replace("|", "\\|")
    RESULTS.append((fault, command, result.returncode, message, intact))


def similar_ids(run, *args, **kwargs):
    result = run("similar", "posts", *args, **kwargs)
    return [json.loads(line)["id"] for line in result.stdout.splitlines()], result


# A full disk, a file size limit


def fill(run, db, start, count, **kwargs):
    inputs = db.parent.parent / f"more{start}.jsonl"  # beside the disk, not on it
    return run("embed-multi", "posts", posts_file(inputs, count, start, words=200),
               "-m", MODEL, "--store", "--batch-size", 20, "-d", db, **kwargs)


@contextlib.contextmanager
def small_tmpfs(path, size):
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); the ulimit -f test stands in for it")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_disk_is_one_line_and_keeps_what_was_finished(run, posts, tmp_path):
    disk = tmp_path / "disk"
    # Room for a few transactions, in 64 KiB pages (each written to the log, then the file).
    with small_tmpfs(disk, os.path.getsize(posts) + 2_000_000):
        db = disk / "embeddings.db"
        shutil.copy(posts, db)
        before = rows(db)
        result = fill(run, db, 1000, 1000)
        line = one_line_error(result, f"{db}: the disk is full", "free some space and re-run")
        kept = rows(db)
        intact = integrity(db) == "ok" and all(kept[id] == vector for id, vector in before.items())
        assert intact and len(kept) > len(before)  # the batches finished before the disk filled
        assert (len(kept) - len(before)) % 20 == 0  # whole batches only
        record("full disk (a tmpfs 2 MB larger than the database)", "embed-multi", result, "yes")
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        fill(run, db, 1000, 1000, status=0)  # the re-run finishes the rest
        assert len(rows(db)) == len(before) + 1000
        assert "Traceback" not in line


def limit_file_size(limit):
    def preexec():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing

    return preexec


def test_a_file_size_limit_is_one_line_and_keeps_what_was_finished(run, posts):
    before = rows(posts)
    limit = os.path.getsize(posts) + 300_000
    result = fill(run, posts, 1000, 400, preexec_fn=limit_file_size(limit))
    one_line_error(result, f"{posts}: the file could not be written or read (disk I/O error",
                   f"files may not grow beyond {limit:,} bytes here (ulimit -f)")
    kept = rows(posts)
    assert integrity(posts) == "ok" and all(kept[id] == vector for id, vector in before.items())
    assert (len(kept) - len(before)) % 20 == 0
    record("file size limit (ulimit -f, SIGXFSZ ignored)", "embed-multi", result, "yes")
    fill(run, posts, 1000, 400, status=0)
    assert len(rows(posts)) == len(before) + 400


# Locks held by another program


@contextlib.contextmanager
def lock_held(path, seconds):
    """Another process holding the write lock (BEGIN EXCLUSIVE) for seconds."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys, time\n"
         "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
         "conn.execute('begin exclusive'); print('locked', flush=True); time.sleep(float(sys.argv[2]))\n"
         "conn.execute('commit')", str(path), str(seconds)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def test_a_short_lock_is_waited_for_and_said(run, posts, tmp_path, env):
    with lock_held(posts, 8) as holder:
        start = time.monotonic()
        writer = subprocess.Popen([EMBEDKIT, "embed-multi", "posts", posts_file(tmp_path / "new.jsonl", 5, 500), "-m",
                                   MODEL], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # reading goes on meanwhile (WAL): the lock only stops writers
        assert similar_ids(run, "p0001", "-n", 3, status=0)[0]
        assert holder.poll() is None
        _, stderr = writer.communicate(timeout=120)
        waited = time.monotonic() - start
    assert writer.returncode == 0, stderr
    assert waited > 5
    assert stderr.splitlines()[0] == (f"embedkit: waiting for {posts}: another program is writing to it (giving up "
                                      "after 60 s; --lock-timeout or EMBEDKIT_LOCK_TIMEOUT change that)")
    assert len(rows(posts)) == ITEMS + 5
    RESULTS.append(("lock held 8 s (BEGIN EXCLUSIVE)", "embed-multi", 0, stderr.splitlines()[0],
                    "yes (waited, then wrote; reads went on)"))


@pytest.mark.parametrize("how", ["option", "environment"])
def test_a_long_lock_is_one_line_after_the_lock_timeout(run, posts, tmp_path, how):
    before = rows(posts)
    args, extra = (["--lock-timeout", "2"], None) if how == "option" else ([], {"EMBEDKIT_LOCK_TIMEOUT": "2"})
    with lock_held(posts, 120):
        start = time.monotonic()
        result = run("embed-multi", "posts", posts_file(tmp_path / "new.jsonl", 5, 500), "-m", MODEL, *args,
                     extra_env=extra)
        waited = time.monotonic() - start
        one_line_error(result, "embeddings.db: another program kept the database locked (waited 2 s)",
                       "--lock-timeout SECONDS (EMBEDKIT_LOCK_TIMEOUT)", waited=True)
        related = run("related", "posts", "-n", 4, "--lock-timeout", "1")  # new lists to write
        one_line_error(related, "another program kept the database locked")
    assert 2 <= waited < 30
    assert rows(posts) == before
    record(f"lock held 120 s, --lock-timeout 2 ({how})", "embed-multi", result, "yes")


# Files that are not whole databases


def test_a_truncated_copy_is_one_line_and_check_says_so(run, posts, tmp_path):
    copy = tmp_path / "truncated.db"
    data = posts.read_bytes()
    copy.write_bytes(data[: len(data) // 2])
    damaged = copy.read_bytes()
    for args in (["collections"], ["similar", "posts", "p0001"], ["related", "posts"],
                 ["embed-multi", "posts", tmp_path / "posts.jsonl", "-m", MODEL]):
        result = run(*args, "-d", copy)
        one_line_error(result, f"{copy}: the database file is damaged (database disk image is malformed)",
                       f"run `embedkit check {copy}`", f"`sqlite3 {copy} .recover`")
        assert copy.read_bytes() == damaged
        record("truncated copy", args[0], result, "yes (file unchanged)")
    check = run("check", copy, status=1)
    assert "the file is damaged" in check.stdout and ".recover" in check.stdout
    record("truncated copy", "check", check, "yes")
    assert integrity(posts) == "ok"


def test_a_file_that_is_not_a_database_is_left_alone(run, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes, not a database\n" * 200)
    before = notes.read_bytes()
    for args in (["collections"], ["similar", "posts", "-c", "hello"], ["check"],
                 ["embed", "posts", "x", "-c", "hello", "-m", MODEL]):
        result = run(*args, "-d", notes)
        one_line_error(result, f"{notes}: this file is not a SQLite database")
        record("not a database", args[0], result, "yes (file unchanged)")
    assert notes.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]  # no journal or WAL beside it


def test_a_database_in_a_folder_that_does_not_exist(run, tmp_path):
    result = run("embed", "posts", "x", "-c", "hello", "-m", MODEL, "-d", tmp_path / "missing" / "embeddings.db")
    one_line_error(result, "missing/embeddings.db: its folder does not exist, so nothing was written",
                   "create the folder first")
    assert not (tmp_path / "missing").exists()
    record("a folder that does not exist", "embed", result, "yes (nothing created)")


def test_writes_that_meet_a_damaged_page_stop_and_point_to_check(run, posts, tmp_path):
    conn = sqlite3.connect(posts)
    root = conn.execute("select rootpage from sqlite_master where name = 'posts'").fetchone()[0]
    page_size = conn.execute("pragma page_size").fetchone()[0]
    conn.close()
    with open(posts, "r+b") as f:  # the collection table's root page: garbage
        f.seek((root - 1) * page_size)
        f.write(np.random.default_rng(1).bytes(page_size))
    for args in (["embed-multi", "posts", posts_file(tmp_path / "new.jsonl", 5, 500), "-m", MODEL],
                 ["related", "posts", "-n", 4], ["delete", "posts", "p0001"]):
        result = run(*args)
        one_line_error(result, "the database file is damaged", "run `embedkit check")
        record("damaged page (the table's root)", args[0], result, "no further damage")
    check = run("check", status=1)
    assert "SQLite finds damage" in check.stdout


# Read-only files and folders, an immutable file


def read_only_copy(posts, tmp_path, kind):
    folder = tmp_path / kind
    folder.mkdir()
    db = folder / "embeddings.db"
    shutil.copy(posts, db)
    if kind == "folder":  # a file that may be written, where SQLite may not put its journal
        folder.chmod(0o555)
    else:
        db.chmod(0o444)
    return db


@pytest.mark.skipif(os.geteuid() == 0 and not shutil.which("setpriv"), reason="needs setpriv to drop root's privileges")
@pytest.mark.parametrize("kind", ["file", "folder", "immutable"])
def test_a_read_only_database_is_read_and_never_written(run, posts, tmp_path, kind):
    expected, _ = similar_ids(run, "p0001", "-n", 5, status=0)
    expected_text, _ = similar_ids(run, "-c", "topic3 topic4", "-n", 5, status=0)
    prefix = UNPRIVILEGED
    if kind == "immutable":
        db = tmp_path / "immutable" / "embeddings.db"
        db.parent.mkdir()
        shutil.copy(posts, db)
        if subprocess.run(["chattr", "+i", str(db)], capture_output=True).returncode != 0:
            pytest.skip("chattr +i is not possible here")
        prefix = []  # not even root may write an immutable file
    else:
        db = read_only_copy(posts, tmp_path, kind)
    before, listing = db.read_bytes(), sorted(os.listdir(db.parent))
    try:
        for args, check in [
            (["similar", "posts", "p0001", "-n", 5], lambda r: [json.loads(x)["id"] for x in r.stdout.splitlines()] == expected),
            (["similar", "posts", "-c", "topic3 topic4", "-n", 5],
             lambda r: [json.loads(x)["id"] for x in r.stdout.splitlines()] == expected_text),
            (["similar", "posts", "-c", "topic3", "--keyword", "-n", 2], lambda r: len(r.stdout.splitlines()) == 2),
            (["collections"], lambda r: "posts" in r.stdout),
            (["index", "posts"], lambda r: json.loads(r.stdout)["usable"] is True),
            (["export-related", "posts", tmp_path / f"site-{kind}"], lambda r: "files" in r.stderr),
            (["check"], lambda r: "no problems found" in r.stdout),
        ]:
            result = run(*args, "-d", db, prefix=prefix)
            assert result.returncode == 0 and check(result), (args, result.stdout, result.stderr)
            assert "Traceback" not in result.stderr
        for args in (["embed-multi", "posts", tmp_path / "posts.jsonl", "-m", MODEL],
                     ["embed", "posts", "x", "-c", "hello"], ["delete", "posts", "p0001"], ["related", "posts"],
                     ["index", "posts", "--drop"], ["collections", "delete", "posts", "--yes"], ["check", "--fix"]):
            result = run(*args, "-d", db, prefix=prefix)
            what = "its folder is read-only here (SQLite writes its journal beside the file)" if kind == "folder" \
                else "the file is read-only here"
            one_line_error(result, f"{db}: {what}, so nothing was changed")
            record(f"read-only {kind}" + (" (root without privileges)" if prefix else ""), args[0], result,
                   "yes (file unchanged, nothing created)")
        assert db.read_bytes() == before
        assert sorted(os.listdir(db.parent)) == listing  # no -wal, -shm or journal left beside it
    finally:
        if kind == "immutable":
            subprocess.run(["chattr", "-i", str(db)], check=True)
        db.parent.chmod(0o755)


# Bad data written by other programs


BAD_VECTORS = {
    "bad-nan": np.array([np.nan] + [0.1] * 255, "<f4").tobytes(),
    "bad-inf": np.array([np.inf] + [0.1] * 255, "<f4").tobytes(),
    "bad-short": np.ones(100, "<f4").tobytes(),
    "bad-zero": bytes(256 * 4),
    "bad-null": None,
}


def write_bad_vectors(path):
    """With plain sqlite3, as another program might: a NaN, an infinity, a short vector, zeros and
    (through an edited schema: nothing else gets past NOT NULL) a NULL."""
    conn = sqlite3.connect(path)
    conn.execute("pragma writable_schema = 1")
    conn.execute("update sqlite_master set sql = replace(sql, 'embedding blob not null', 'embedding blob') "
                 "where name = 'posts'")
    conn.commit()
    conn.close()
    conn = sqlite3.connect(path)
    conn.executemany("insert into posts (id, embedding, content, content_hash, updated) values (?, ?, 'topic3', 'x', 'now')",
                     list(BAD_VECTORS.items()))
    conn.commit()
    conn.close()


def test_bad_vectors_are_left_out_never_a_wrong_answer(run, posts):
    write_bad_vectors(posts)
    warning = ("embedkit: collection 'posts' has 5 stored vectors that cannot be used, left out: 'bad-inf' (NaN or "
               "infinite values), 'bad-nan' (NaN or infinite values), 'bad-null' (NULL), 'bad-short' (400 bytes, not "
               f"1024), 'bad-zero' (all zeros); re-embed or delete them (`embedkit check {posts.name}` lists them all)")
    for n in (1, 3, 10, 50):
        for extra in ([], ["--exact"]):  # the int8 index, and an exact scan
            ids, result = similar_ids(run, "-c", "topic3 topic5", "-n", n, *extra, status=0)
            assert len(ids) == n and not set(ids) & set(BAD_VECTORS)
            # said by every exact scan, and by the search that brought the index up to date (the first)
            if extra or n == 1:
                assert result.stderr.strip().splitlines() == [warning]
    record("NaN, inf, short, zero and NULL vectors (plain sqlite3)", "similar -n 1/3/10/50", result,
           "yes (n results, the 5 left out, one warning)")
    rebuilt = run("index", "posts", "--quantize", "int8", status=0)
    assert json.loads(rebuilt.stdout)["rows"] == ITEMS and "'bad-nan' (NaN or infinite values)" in rebuilt.stderr
    record("the same", "index --quantize int8", rebuilt, f"yes (index of the {ITEMS} usable)")
    for n in (1, 3, 10):
        assert len(similar_ids(run, "-c", "topic3", "-n", n, status=0)[0]) == n
    one_line_error(run("similar", "posts", "bad-nan"), "the stored vector of 'bad-nan' cannot be searched by")
    related = run("related", "posts", "-n", 3, status=0)
    assert f"{ITEMS} items" in related.stderr and "'bad-short' (400 bytes, not 1024)" in related.stderr
    check = run("check", status=1)
    assert "5 cannot be used, so searches leave them out: 'bad-inf' (NaN or infinite values)" in check.stdout
    fixed = run("check", "--fix", status=1)  # never deletes a user's row: still there, still said
    assert "5 cannot be used" in fixed.stdout and len(rows(posts)) == ITEMS + 5
    record("the same", "check", check, "yes (reported, exit 1; --fix leaves the rows)")


def test_infinite_and_deeply_nested_metadata_are_refused_naming_the_item(run, posts, tmp_path):
    before = rows(posts)
    deep = {"x": 1}
    for _ in range(150):
        deep = {"d": deep}
    cases = [
        ("Infinity", '{"id": "a", "text": "hello", "metadata": {"g": Infinity}}',
         ["inputs.jsonl line 1: invalid JSON: Infinity is not a JSON number"]),
        ("1e400", '{"id": "a", "text": "hello", "metadata": {"g": 1e400}}',
         ["inputs.jsonl line 1: invalid JSON: the number 1e400 is too large"]),
        ("nested 150 deep", json.dumps({"id": "a", "text": "hello", "metadata": deep}),
         ["inputs.jsonl line 1: metadata: it is nested more than 100 levels deep"]),
        ("nested 5,000 deep", '{"id": "a", "text": "hello", "metadata": ' + '{"d": ' * 5000 + "1" + "}" * 5001,
         ["inputs.jsonl line 1: invalid JSON: it is nested too deeply to be read"]),
    ]
    for name, line, fragments in cases:
        (tmp_path / "inputs.jsonl").write_text(line + "\n")
        result = run("embed-multi", "posts", "inputs.jsonl", "-m", MODEL)
        one_line_error(result, *fragments)
        record(f"metadata {name}", "embed-multi", result, "yes (nothing written)")
    option = run("embed", "posts", "a", "-c", "hello", "--metadata", '{"g": NaN}')
    one_line_error(option, "--metadata is not valid JSON: NaN is not a JSON number")
    assert rows(posts) == before


def test_metadata_another_program_stored_as_infinity_is_never_written_out(run, posts, tmp_path):
    conn = sqlite3.connect(posts)
    conn.execute("""update posts set metadata = '{"g":Infinity}' where id = 'p0001'""")
    conn.commit()
    conn.close()
    result = run("similar", "posts", "-c", (tmp_path / "posts.jsonl").read_text().splitlines()[1], "-n", 1)
    one_line_error(result, "item 'p0001' of collection 'posts' holds metadata that is not valid JSON",
                   "`embedkit check")
    record("metadata {\"g\":Infinity} stored by another program", "similar", result, "yes")
    export = run("export-related", "posts", tmp_path / "site")
    one_line_error(export, "item 'p0001' of collection 'posts' holds metadata that is not valid JSON")
    check = run("check", status=1)
    assert "1 rows hold metadata that is not a JSON object: 'p0001' (not valid JSON)" in check.stdout


def test_check_finds_derived_parts_out_of_step_and_fix_rebuilds_them(run, posts):
    clean = run("check", "--full", status=0)
    assert clean.stdout.splitlines() == [f"{posts.name}: the file is sound (integrity_check)",
                                         f"posts: {ITEMS} items, all in step", "no problems found"]
    conn = sqlite3.connect(posts)
    conn.execute('drop trigger "_embedkit_posts_fts_ad"')  # then a delete the keyword index misses
    conn.execute("delete from posts where id = 'p0002'")
    conn.execute('delete from "_embedkit_index_posts:log"')  # the quantised index misses it too
    conn.execute('drop trigger "_embedkit_posts_update"')
    conn.commit()
    conn.close()
    found = run("check", status=1)
    for fragment in ["posts: keyword index: out of step with the table (_embedkit_posts_fts_ad missing)",
                     f"posts: quantised index: holds {ITEMS} items, the collection {ITEMS - 1} with usable vectors",
                     "posts: version triggers: _embedkit_posts_update missing"]:
        assert fragment in found.stdout
    assert found.stderr == "Error: 3 problems left\n"
    report = json.loads(run("check", "--json", status=1).stdout)
    assert [p["part"] for p in report["problems"]] == ["version triggers", "keyword index", "quantised index"]
    assert all(p["fixable"] and not p["fixed"] for p in report["problems"])
    fixed = run("check", "--fix", status=0)
    assert fixed.stdout.strip().endswith("0 problems left, 3 fixed")
    record("keyword and int8 index out of step, trigger missing", "check --fix", fixed, "yes (rebuilt)")
    assert run("check", "--full", status=0).stdout == clean.stdout.replace(f"{ITEMS} items", f"{ITEMS - 1} items")
    assert len(similar_ids(run, "-c", "topic3", "--keyword", "-n", 100, status=0)[0]) <= ITEMS - 1


def test_debug_shows_the_traceback(run, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database\n" * 100)
    quiet = run("collections", "-d", notes)
    one_line_error(quiet, "this file is not a SQLite database")
    for args, extra in (((("--debug",)), None), ((), {"EMBEDKIT_DEBUG": "1"})):
        loud = run(*args, "collections", "-d", notes, extra_env=extra)
        assert loud.returncode == 1 and "Traceback" in loud.stderr
        assert "embedkit.errors.NotADatabase" in loud.stderr and "file is not a database" in loud.stderr


# The main file holds everything once a command returns (issue 14)


def copy_of_main_file(path, tmp_path):
    """Only the .db file, as a backup, a CI cache or `datasette publish` takes it."""
    copy = tmp_path / f"copy-{uuid.uuid4().hex}.db"
    shutil.copy(path, copy)
    return copy


@pytest.mark.parametrize("reader", [False, True], ids=["alone", "with-an-open-reader"])
def test_after_every_command_the_main_file_alone_holds_everything(run, tmp_path, reader):
    db = tmp_path / "embeddings.db"
    posts_file(tmp_path / "posts.jsonl")
    steps = [
        (["embed-multi", "posts", "posts.jsonl", "-m", MODEL, "--store"], lambda c: c.execute("select count(*) from posts").fetchone()[0] == ITEMS),
        (["embed", "posts", "extra", "-c", "one more post", "--store"], lambda c: c.execute("select count(*) from posts where id = 'extra'").fetchone()[0] == 1),
        (["related", "posts", "-n", 3], lambda c: c.execute("select count(*) from posts_related").fetchone()[0] == 3 * (ITEMS + 1)),
        (["index", "posts", "--quantize", "int8"], lambda c: c.execute("select count(*) from _embedkit_collections where json_extract(settings, '$.index.quantize') = 'int8'").fetchone()[0] == 1),
        (["delete", "posts", "p0003"], lambda c: c.execute("select count(*) from posts").fetchone()[0] == ITEMS),
        (["sql", "create table mine (x)"], lambda c: c.execute("select count(*) from mine").fetchone()[0] == 0),
        (["collections", "delete", "posts", "--yes"], lambda c: c.execute("select count(*) from _embedkit_collections").fetchone()[0] == 0),
    ]
    holder = None
    try:
        for args, holds in steps:
            if reader and holder is None and db.exists():  # another program keeps a connection open
                holder = subprocess.Popen([sys.executable, "-c", "import sqlite3, sys, time\n"
                                           "conn = sqlite3.connect(sys.argv[1]); conn.execute('select 1 from sqlite_master').fetchall()\n"
                                           "print('open', flush=True); time.sleep(600)", str(db)],
                                          stdout=subprocess.PIPE, text=True)
                assert holder.stdout.readline().strip() == "open"
            run(*args, status=0)
            conn = sqlite3.connect(copy_of_main_file(db, tmp_path))
            try:
                assert conn.execute("pragma integrity_check").fetchone()[0] == "ok"
                assert holds(conn), args
            finally:
                conn.close()
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()


def test_a_python_database_is_whole_once_closed(tmp_path, env):
    script = """
import sys, embedkit
with embedkit.Database(sys.argv[1]) as db:
    posts = db.get_or_create_collection("posts", model="openai/test-embed")
    posts.embed_multi([embedkit.Item(f"p{i}", f"post number {i}") for i in range(25)])
db = embedkit.Database(sys.argv[1])
db.collection("posts").embed("late", "the last post")
db.close()
import os
os._exit(0)  # no interpreter clean-up: what close() did is all there is
"""
    db = tmp_path / "python.db"
    subprocess.run([sys.executable, "-c", script, str(db)], env=env, check=True, timeout=120)
    conn = sqlite3.connect(copy_of_main_file(db, tmp_path))
    assert conn.execute("select count(*) from posts").fetchone()[0] == 26
    conn.close()


# Many writers and a long related run


@pytest.mark.slow
def test_twenty_embed_multi_runs_during_a_related_run_over_30k_items_all_succeed(run, tmp_path, env):
    """Each writer waits for the lock while related writes its lists a transaction at a time:
    none fails (before, with one transaction of every list and a 5 s lock timeout, 2 of 20 did)."""
    db = tmp_path / "embeddings.db"
    run("embed", "posts", "seed", "-c", "the first post", "-m", MODEL, status=0)
    rng = np.random.default_rng(3)
    matrix = rng.standard_normal((30_000, 256)).astype("<f4")
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    conn = sqlite3.connect(db)
    conn.executemany("insert into posts (id, embedding, content_hash, updated) values (?, ?, ?, 'now')",
                     ((f"bulk{i:05d}", matrix[i].tobytes(), f"h{i}") for i in range(len(matrix))))
    conn.commit()
    conn.close()
    related = subprocess.Popen([EMBEDKIT, "related", "posts", "-n", "50"], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = time.monotonic()
    results, spans = [], []

    def writer(k):
        path = posts_file(tmp_path / f"w{k}.jsonl", 20, 10_000 + 20 * k)
        begin = time.monotonic()
        result = run("embed-multi", "posts", path, "-m", MODEL, timeout=900)
        spans.append((begin, time.monotonic()))
        results.append(result)

    threads = []
    for k in range(20):
        time.sleep(2)
        thread = threading.Thread(target=writer, args=(k,))
        thread.start()
        threads.append(thread)
        if k % 4 == 3:  # four at a time
            for t in threads:
                t.join()
    for t in threads:
        t.join()
    _, stderr = related.communicate(timeout=1800)
    finished = time.monotonic()
    assert related.returncode == 0, stderr
    failed = [r.stderr for r in results if r.returncode != 0]
    assert not failed, failed
    assert len(results) == 20
    during = sum(started < begin and end < finished for begin, end in spans)
    assert during >= 15, f"only {during} of the 20 runs overlapped the related run ({finished - started:.0f} s)"
    assert len(rows(db)) == 30_001 + 20 * 20
    RESULTS.append(("20 embed-multi during related -n 50 over 30k items", "embed-multi x20", 0,
                    f"all 20 exit 0; {during} ran inside the {finished - started:.0f} s related run", "yes"))
