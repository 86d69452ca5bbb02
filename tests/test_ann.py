"""The approximate index (ann.py, `embedkit index --ann`): it follows every write whoever makes
it, answers with exact scores, keeps filters returning n, and never stops exact search working."""

import importlib.util
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

import embedkit
import test_quantized as quantized_tests
from conftest import TableModel
from embedkit import EmbedkitError, ann, check, models, search, sideindex, storage
from embedkit.errors import ReadOnlyDatabase
from embedkit.filters import Filter

if importlib.util.find_spec("usearch") is None:  # not imported here: ann loads it in its own way
    pytest.skip("needs the 'ann' extra (usearch)", allow_module_level=True)

DIMS = 32
COUNT = 2_000
TABLE = models.register(TableModel("test-ann-table", DIMS))


def unit_vectors(count, seed, dims=DIMS):
    return quantized_tests.unit_vectors(count, seed, dims)


def write_rows(db, name, rows):
    """(id, vector, metadata) rows straight into the collection's table."""
    with storage.transaction(db.conn):
        db.conn.executemany(
            f"insert into {storage.quote(name)} (id, embedding, metadata, content_hash, updated) values (?, ?, ?, ?, ?) "
            "on conflict (id) do update set embedding = excluded.embedding, metadata = excluded.metadata",
            [(id, np.asarray(v, dtype="<f4").tobytes(), json.dumps(m), "hash-" + id, storage.now()) for id, v, m in rows],
        )


plain_client = quantized_tests.plain_client  # Python's own sqlite3 in another process


@pytest.fixture
def coll(db):
    """COUNT random unit vectors; metadata shard = i % 100 (a filter on one shard keeps 1%)."""
    collection = db.create_collection("vecs", model="test-ann-table")
    write_rows(db, "vecs", [(f"item{i:04d}", v, {"shard": i % 100}) for i, v in enumerate(unit_vectors(COUNT, 1))])
    return collection


def exact(collection, query, n, exclude=None, filter=None):
    """Exact top n by numpy over every row (the reference)."""
    query = query / np.linalg.norm(query)
    return search._chunked_top(collection, query.astype(np.float32), n, exclude, filter)


def ids(hits):
    return [hit.id if isinstance(hit, embedkit.Entry) else hit[0] for hit in hits]


def recall(collection, queries, n=10, **kwargs):
    found = [len(set(ids(ann.top_n(collection, q, n, **kwargs))) & set(ids(exact(collection, q, n, **kwargs)))) / n
             for q in queries]
    return float(np.mean(found))


def test_build_status_and_exact_scores(db, coll):
    status = ann.build(coll)
    assert (status["library"], status["items"], status["indexed"], status["pending"], status["usable"]) == (
        "usearch", COUNT, COUNT, 0, True)
    assert status["file"] == os.path.join(db.path + "-ann", os.path.basename(status["file"]))
    assert os.path.getsize(status["file"]) == status["bytes"] > 0
    queries = unit_vectors(20, 2)
    assert recall(coll, queries) >= 0.95
    for query in queries[:5]:
        for id, score in ann.top_n(coll, query, 10):  # scores are exact cosine similarities
            assert score == pytest.approx(float(coll.vector(id) @ query), abs=1e-6)


def test_exclude_leaves_the_item_out(coll):
    ann.build(coll)
    vector = coll.vector("item0007")
    hits = ann.top_n(coll, vector, 5, exclude="item0007")
    assert "item0007" not in ids(hits) and len(hits) == 5
    assert ids(ann.top_n(coll, vector, 1)) == ["item0007"]


def test_inserts_updates_and_deletes_are_followed(db, coll):
    ann.build(coll)
    query = unit_vectors(1, 3)[0]
    before = ids(ann.top_n(coll, query, 10))
    # A new item equal to the query, an old one moved onto it, and the best one deleted.
    write_rows(db, "vecs", [("new", query, {"shard": 1}), ("item0100", query * 0.5 + unit_vectors(1, 4)[0] * 0.01, {})])
    coll.delete([before[0]])
    hits = ann.top_n(coll, query, 10)
    assert hits[0] == ("new", pytest.approx(1.0, abs=1e-6))
    assert hits[1][0] == "item0100" and before[0] not in ids(hits)
    assert ids(hits) == ids(exact(coll, query, 10))
    assert ann.status(coll)["pending"] == 3
    assert ann.sync(coll) == 3
    status = ann.status(coll)
    assert (status["pending"], status["indexed"], status["items"]) == (0, COUNT, COUNT)
    assert ids(ann.top_n(coll, query, 10)) == ids(hits)


def test_writes_by_a_plain_sqlite3_client_are_followed(db, coll, db_path):
    ann.build(coll)
    query = unit_vectors(1, 5)[0]
    best = ids(ann.top_n(coll, query, 3))
    plain_client(
        db_path,
        ("delete from vecs where id = ?", [best[0]]),
        ("insert into vecs (id, embedding, content_hash, updated) values ('plain', ?, 'h', 'now')",
         [query.astype("<f4").tobytes()]),
        ("update vecs set id = 'renamed' where id = ?", [best[1]]),
    )
    hits = ann.top_n(coll, query, 3)
    assert ids(hits) == ["plain", "renamed", best[2]] == ids(exact(coll, query, 3))
    assert ann.status(coll)["pending"] == 4  # the deleted, the new, and both names of the renamed


def test_too_many_changes_are_folded_in_by_a_writer_and_refused_by_a_reader(db, coll, db_path, caplog):
    ann.build(coll)
    first_file = ann.status(coll)["file"]
    query = unit_vectors(1, 6)[0]
    # More changes than a search scores beside the index: item i takes the vector of item i + 999.
    plain_client(db_path, ("update vecs set embedding = (select embedding from vecs as other "
                           "where other.rowid = vecs.rowid + 999) where rowid <= ?", [ann.MIN_PENDING + 1]))
    reader = embedkit.Database(storage.sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, isolation_level=None))
    readable = reader.collection("vecs")
    sideindex._notices.clear()
    with caplog.at_level(logging.WARNING, logger="embedkit"):
        assert ann.top_n(readable, query, 10) is None
        assert ann.top_n(readable, query, 10) is None
    notices = [r.getMessage() for r in caplog.records if "approximate index" in r.getMessage()]
    assert len(notices) == 1 and "searching exactly" in notices[0], notices
    hits = ann.top_n(coll, query, 10)  # a writer folds the changes into a new file first
    status = ann.status(coll)
    assert status["pending"] == 0 and status["file"] != first_file and not os.path.exists(first_file)
    assert len(set(ids(hits)) & set(ids(exact(coll, query, 10)))) >= 9
    assert ann.top_n(readable, query, 10) == hits  # and the reader uses the new file


def test_filters_return_n_when_enough_items_match(db, coll):
    ann.build(coll)
    queries = unit_vectors(10, 8)
    one_shard = Filter({"shard": 7})  # 20 of 2,000 items
    for query in queries:
        hits = ann.top_n(coll, query, 10, filter=one_shard)
        assert len(hits) == 10 and all(coll.get(id).metadata["shard"] == 7 for id in ids(hits))
    assert recall(coll, queries, filter=one_shard) >= 0.95
    assert len(ann.top_n(coll, queries[0], 10, filter=Filter(where="id in ('item0001', 'item0002')"))) == 2
    assert ann.top_n(coll, queries[0], 10, filter=Filter({"shard": 1000})) == []


def test_a_filter_matching_too_few_nearby_items_means_exact(db, coll, monkeypatch):
    ann.build(coll)
    monkeypatch.setattr(ann, "MAX_CANDIDATES", 100)
    query = unit_vectors(1, 9)[0]
    assert ann.top_n(coll, query, 10, filter=Filter({"shard": 7})) is None


def test_a_build_killed_midway_leaves_exact_search_working(db, coll, db_path):
    script = (
        "import os, sys, signal\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "import conftest, embedkit\n"
        "from conftest import TableModel\n"
        "from embedkit import ann, models\n"
        "models.register(TableModel('test-ann-table', 32))\n"
        "coll = embedkit.Database(sys.argv[1]).collection('vecs')\n"
        "ann.build(coll, progress=lambda n, total: os.kill(os.getpid(), signal.SIGKILL))\n"
    )
    tests = os.path.dirname(__file__)
    result = subprocess.run([sys.executable, "-c", script, db_path, tests], capture_output=True)
    assert result.returncode == -9, result.stderr
    assert ann.settings(coll) is None and ann.status(coll) == {"collection": "vecs", "library": None}
    assert ann.top_n(coll, unit_vectors(1, 10)[0], 3) is None
    query = unit_vectors(1, 10)[0]
    assert ids(coll.similar_by_vector(query, 3, exact=True)) == ids(exact(coll, query, 3))
    coll.delete(["item0000"])  # writes go on
    status = ann.build(coll)  # and a new build cleans up after the dead one
    assert status["indexed"] == COUNT - 1 and status["pending"] == 0
    leftovers = [name for (name,) in db.conn.execute("select name from sqlite_master where type = 'table' and name like '%ann_vecs:keys%'")]
    assert leftovers == [ann.settings(coll)["keys"]]
    assert os.listdir(db_path + "-ann") == [os.path.basename(status["file"])]


def test_an_interrupted_build_leaves_nothing_behind(db, coll, db_path):
    ann.build(coll)
    before = ann.status(coll)

    def interrupt(n, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ann.build(coll, progress=interrupt)
    assert ann.status(coll) == before
    assert os.listdir(db_path + "-ann") == [os.path.basename(before["file"])]


def test_a_missing_file_means_exact_with_a_notice(db, coll, caplog):
    status = ann.build(coll)
    os.remove(status["file"])
    ann._forget_view(status["file"])
    sideindex._notices.clear()
    with caplog.at_level(logging.WARNING, logger="embedkit"):
        assert ann.top_n(coll, unit_vectors(1, 11)[0], 3) is None
    assert any("is missing" in r.getMessage() for r in caplog.records)
    assert ann.status(coll)["usable"] is False


def test_drop_removes_the_file_tables_and_triggers(db, coll, db_path):
    ann.build(coll)
    assert ann.drop(coll) is True
    assert ann.drop(coll) is False
    assert not os.path.exists(db_path + "-ann")
    left = db.conn.execute("select name from sqlite_master where name like '_embedkit_ann_%'").fetchall()
    assert left == []
    coll.delete(["item0001"])  # no trigger left to fail


UNUSABLE = {
    "nan": (np.array([np.nan] + [1.0] * (DIMS - 1), "<f4").tobytes(), "NaN or infinite values"),
    "zeros": (bytes(DIMS * 4), "all zeros"),
    "short": (np.ones(3, "<f4").tobytes(), f"12 bytes, not {DIMS * 4}"),
}


@pytest.mark.parametrize("when", ["before the build", "logged", "folded in"])
@pytest.mark.parametrize("kind", list(UNUSABLE))
def test_unusable_vectors_are_left_out_and_n_results_still_come_back(db, coll, db_path, caplog, when, kind):
    """Another client spoils the vector of the item every query here finds first: wherever the
    index meets it (building, scoring the changes beside the file, folding them into a new
    file), it is left out, said once naming it, and n results still come back."""
    value, problem = UNUSABLE[kind]
    query = unit_vectors(COUNT, 1)[0]  # item0000's vector
    spoil = ("update vecs set embedding = ? where id = 'item0000'", [value])
    with caplog.at_level(logging.WARNING, logger="embedkit"):
        if when == "before the build":
            plain_client(db_path, spoil)
            ann.build(coll)
        else:
            ann.build(coll)
            plain_client(db_path, spoil)
            if when == "folded in":
                assert ann.sync(coll) == 1
        status = ann.status(coll)
        assert (status["indexed"], status["pending"]) == (
            (COUNT - 1, 0) if when != "logged" else (COUNT, 1))
        for n in (1, 10, 50):
            hits = ann.top_n(coll, query, n)
            assert len(hits) == n and "item0000" not in ids(hits)
            assert len(set(ids(hits)) & set(ids(exact(coll, query, n)))) >= int(0.9 * n)
    warnings = [r.getMessage() for r in caplog.records if "cannot be used" in r.getMessage()]
    assert warnings and f"'item0000' ({problem})" in warnings[0]


def test_a_read_only_database_searches_but_never_builds_folds_or_drops(db, coll, db_path, caplog):
    ann.build(coll)
    reader = embedkit.Database(db_path, read_only=True)
    readable = reader.collection("vecs")
    for write in (ann.build, ann.sync, ann.drop):
        with pytest.raises(ReadOnlyDatabase):
            write(readable)
    query = unit_vectors(1, 6)[0]
    assert ann.top_n(readable, query, 10) == ann.top_n(coll, query, 10)
    plain_client(db_path, ("update vecs set embedding = (select embedding from vecs as other "
                           "where other.rowid = vecs.rowid + 999) where rowid <= ?", [ann.MIN_PENDING + 1]))
    sideindex._notices.clear()
    with caplog.at_level(logging.WARNING, logger="embedkit"):
        assert ann.top_n(readable, query, 10) is None
        assert ids(readable.similar_by_vector(query, 10)) == ids(exact(readable, query, 10))
    notices = [r.getMessage() for r in caplog.records if "approximate index" in r.getMessage()]
    assert len(notices) == 1 and "read-only here" in notices[0], notices
    assert ann.status(readable)["pending"] == ann.MIN_PENDING + 1  # nothing was folded in
    reader.close()


def test_check_finds_a_missing_file_and_fix_rebuilds_it(db, coll):
    assert check.run(db).ok
    status = ann.build(coll)
    assert check.run(db).ok
    os.remove(status["file"])
    ann._forget_view(status["file"])
    report = check.run(db)
    assert [p.line() for p in report.problems] == [
        f"vecs: approximate index: its file {status['file']} is missing; run embedkit check --fix, which rebuilds it"]
    check.run(db, fix=True)
    assert check.run(db).ok and ann.status(coll)["usable"] is True


def test_an_in_memory_database_cannot_have_one():
    db = embedkit.Database(":memory:")
    coll = db.create_collection("vecs", model="test-ann-table")
    write_rows(db, "vecs", [("a", unit_vectors(1, 1)[0], {})])
    with pytest.raises(EmbedkitError, match="in-memory database cannot have one"):
        ann.build(coll)


# The command line


@pytest.fixture
def cli_db(db_path, monkeypatch):
    with embedkit.Database(db_path) as db:
        db.create_collection("vecs", model="test-ann-table")
        write_rows(db, "vecs", [(f"item{i:03d}", v, {}) for i, v in enumerate(unit_vectors(50, 12))])
    monkeypatch.setenv("EMBEDKIT_DATABASE", db_path)
    return db_path


def test_cli_build_status_drop(invoke, cli_db):
    assert json.loads(invoke("index", "vecs").stdout)["ann"] is None
    result = invoke("index", "vecs", "--ann")
    assert result.exit_code == 0, result.stderr
    built = json.loads(result.stdout)
    assert (built["library"], built["indexed"], built["pending"], built["usable"]) == ("usearch", 50, 0, True)
    plain_client(cli_db, ("delete from vecs where id = 'item001'", []))
    status = json.loads(invoke("index", "vecs").stdout)
    assert status["quantize"] is None
    assert (status["ann"]["indexed"], status["ann"]["items"], status["ann"]["pending"]) == (50, 49, 1)
    result = invoke("index", "vecs", "--ann", "--drop")
    assert result.exit_code == 0 and "Dropped the approximate index of vecs" in result.stderr
    assert json.loads(invoke("index", "vecs").stdout)["ann"] is None
    result = invoke("index", "vecs", "--ann", "--drop")
    assert result.exit_code == 1 and "collection 'vecs' has no approximate index" in result.stderr
    result = invoke("index", "vecs", "--ann", "--quantize", "int8")
    assert result.exit_code == 1 and "one index at a time" in result.stderr


# Routing (search.top_n): which path answers, and that an index never slows a warm process


def spy(monkeypatch, module, name, answered):
    real = getattr(module, name)

    def record(*args, **kwargs):
        hits = real(*args, **kwargs)
        answered.append((name, hits is not None))
        return hits

    monkeypatch.setattr(module, name, record)


def test_similar_uses_the_index_unless_exact(db, coll, monkeypatch):
    ann.build(coll)
    answered = []
    spy(monkeypatch, ann, "top_n", answered)
    query = unit_vectors(1, 13)[0]
    hits = coll.similar_by_vector(query, 10)
    assert answered == [("top_n", True)]
    assert [(e.id, e.score) for e in hits] == ann.top_n(coll, query, 10)
    answered.clear()
    exact_hits = coll.similar_by_vector(query, 10, exact=True)
    assert answered == []
    assert [e.id for e in exact_hits] == ids(exact(coll, query, 10))
    filtered = coll.similar_by_vector(query, 5, metadata={"shard": 3})
    assert answered == [("top_n", True)] and len(filtered) == 5


def test_a_warm_matrix_answers_small_collections_and_the_index_large_ones(db, coll, monkeypatch):
    ann.build(coll)
    query = unit_vectors(1, 14)[0]
    for _ in range(2):
        coll.similar_by_vector(query, 10, exact=True)  # the second builds the matrix beside it
    search.wait_for_cache()
    answered = []
    spy(monkeypatch, ann, "top_n", answered)
    assert ids(coll.similar_by_vector(query, 10)) == ids(exact(coll, query, 10))
    assert answered == []  # 2,000 x 32: the matrix is faster than the index
    monkeypatch.setattr(search, "ANN_BEATS_MATRIX", 1_000)
    coll.similar_by_vector(query, 10)
    assert answered == [("top_n", True)]
    answered.clear()
    coll.similar_by_vector(query, 10, metadata={"shard": 3})  # a filter narrows the matrix instead
    assert answered == []


@pytest.mark.parametrize("mode", ["int8", "bit"])
def test_an_index_never_keeps_a_warm_process_off_the_matrix(db, coll, db_path, monkeypatch, mode):
    """Issue 24: with a quantised index built, the cached matrix still answers once it exists,
    with the results of exact search; a one-off query uses the index."""
    from embedkit import quantized

    quantized.build(coll, mode)
    answered = []
    spy(monkeypatch, quantized, "top_n", answered)
    for name in ("_sqlite_vec_top", "_cached_top"):
        spy(monkeypatch, search, name, answered)
    query = unit_vectors(1, 15)[0]
    search.forget(db.key)
    search._searched.clear()
    coll.similar_by_vector(query, 10)
    assert answered == [("top_n", True)]  # one-off: the index
    for _ in range(3):
        answered.clear()
        hits = coll.similar_by_vector(query, 10)
        search.wait_for_cache()
    assert answered == [("_cached_top", True)]  # warm: the matrix, never the index
    assert [(e.id, round(e.score, 5)) for e in hits] == [(id, round(s, 5)) for id, s in exact(coll, query, 10)]


def test_deleting_the_collection_deletes_its_index(db, coll, db_path):
    ann.build(coll)
    db.delete_collection("vecs")
    assert not os.path.exists(db_path + "-ann")
    assert db.conn.execute("select name from sqlite_master where name like '_embedkit_ann_%'").fetchall() == []


def test_datasette_searches_through_the_index(db, coll, db_path, monkeypatch):
    import asyncio

    from datasette.app import Datasette

    ann.build(coll)
    answered = []
    spy(monkeypatch, ann, "top_n", answered)
    plain_client(db_path, ("delete from vecs where id = 'item0002'", []))  # pending: scored beside the file
    ds = Datasette([db_path])
    response = asyncio.run(ds.client.get("/embeddings/vecs/-/similar.json?id=item0001&n=5"))
    assert response.status_code == 200, response.text
    found = [row["id"] for row in response.json()["rows"]]
    assert answered and all(ok for _, ok in answered)
    assert found == ids(exact(coll, coll.vector("item0001"), 5, exclude="item0001"))
    tables = {t["name"]: t["hidden"] for t in asyncio.run(ds.client.get("/embeddings.json")).json()["tables"]}
    assert all(hidden for name, hidden in tables.items() if name.startswith("_embedkit_ann_"))


def test_the_int8_model_loads_after_the_index_in_one_process(coll):
    """usearch loaded first once made `import onnxruntime` crash the process."""
    if importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("needs ONNX Runtime")
    script = "from embedkit import ann\nann._usearch()\nimport onnxruntime\nprint('ok')\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout == "ok\n", result.stderr[-2000:]
