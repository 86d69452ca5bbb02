"""Exact search: every path in search.py against brute force, ties, caching and invalidation."""

import json
import logging
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

import embedkit
from conftest import TableModel
from embedkit import EmbedkitError, Item, models, search, storage

DIMS = 128


TABLE = models.register(TableModel("test-search-table", DIMS))


class PlainClient:
    """Runs each statement in a separate Python process with the stdlib sqlite3 module."""

    SCRIPT = (
        "import sqlite3, sys, json; args = json.loads(sys.argv[3]); "
        "conn = sqlite3.connect(sys.argv[1]); "
        "conn.execute(sys.argv[2], [bytes.fromhex(a[1]) if isinstance(a, list) else a for a in args]); "
        "conn.commit()"
    )

    def __init__(self, path):
        self.path = path

    def execute(self, sql, params=()):
        encoded = [["hex", p.hex()] if isinstance(p, bytes) else p for p in params]
        subprocess.run([sys.executable, "-c", self.SCRIPT, self.path, sql, json.dumps(encoded)], check=True)


@pytest.fixture
def table_model():
    TABLE.table.clear()
    TABLE.calls = 0
    return TABLE


@pytest.fixture
def paths(monkeypatch):
    """Records which search path answered each query (the real functions still run)."""
    seen = []
    for name in ("_sqlite_vec_top", "_chunked_top", "_load"):
        real = getattr(search, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            seen.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(search, name, spy)
    return seen


def brute_force(ids, matrix, query, n, exclude=None):
    """[(id, score)]: cosine in float64 over every row, best first, ties by id."""
    matrix = np.asarray(matrix, dtype=np.float64)
    query = np.asarray(query, dtype=np.float64)
    scores = matrix @ query / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(query))
    ranked = sorted((-score, id) for id, score in zip(ids, scores.tolist()) if id != exclude)
    return [(id, -negative) for negative, id in ranked[:n]]


def assert_same(results, expected):
    assert [e.id for e in results] == [id for id, _ in expected]
    for entry, (_, score) in zip(results, expected):
        assert entry.score == pytest.approx(score, abs=1e-5)


def open_db(path, kind):
    """An embedkit Database over pysqlite3 (sqlite-vec loads) or the stdlib sqlite3 (it cannot)."""
    if kind == "sqlite-vec":
        db = embedkit.Database(path)
        assert storage.has_sqlite_vec(db.conn)
    else:
        db = embedkit.Database(sqlite3.connect(path))
        assert not storage.has_sqlite_vec(db.conn)
    return db


@pytest.fixture
def random_collection(db_path, table_model):
    """2000 random vectors, some of them identical, in collection 'random'."""
    rng = np.random.default_rng(20261123)
    matrix = rng.standard_normal((2000, DIMS)).astype(np.float32)
    matrix[rng.integers(0, 2000, 300)] *= 5  # lengths differ: cosine must normalise
    ids = [f"r{i:04d}" for i in rng.permutation(2000)]  # insertion order is not id order
    table_model.table.update({f"text {id}": row for id, row in zip(ids, matrix)})
    with embedkit.Database(db_path) as db:
        stats = db.create_collection("random", model="test-search-table").embed_multi(
            [Item(id, f"text {id}") for id in ids], batch_size=500
        )
        assert stats.embedded == 2000
    return ids, matrix


QUERIES = np.random.default_rng(99).standard_normal((4, DIMS)).astype(np.float32)


@pytest.mark.parametrize("kind", ["sqlite-vec", "stdlib"])
def test_random_vectors_match_brute_force_on_every_path(db_path, random_collection, paths, kind, monkeypatch):
    ids, matrix = random_collection
    db = open_db(db_path, kind)
    random = db.collection("random")
    expected_paths = {"sqlite-vec": [["_sqlite_vec_top"], ["_load"], []], "stdlib": [["_load"], [], []]}[kind]
    for query in QUERIES:
        search.forget(db.key)
        search._searched.clear()
        for want in expected_paths:
            paths.clear()
            assert_same(random.similar_by_vector(query, 10), brute_force(ids, matrix, query, 10))
            assert paths == want
    # the chunked path: too big to cache
    monkeypatch.setattr(search, "CACHE_MB", 0)
    monkeypatch.setattr(search, "CHUNK_ROWS", 137)
    search.forget(db.key)
    for query in QUERIES:
        paths.clear()
        assert_same(random.similar_by_vector(query, 25), brute_force(ids, matrix, query, 25))
        assert paths == (["_sqlite_vec_top"] if kind == "sqlite-vec" else ["_chunked_top"])
    assert search._cache.get((db.key, "random")) is None
    db.close()


def test_similar_by_id_excludes_the_item_on_every_path(db_path, random_collection, paths, monkeypatch):
    ids, matrix = random_collection
    probe = ids[1234]
    query = matrix[ids.index(probe)]
    expected = brute_force(ids, matrix, query, 12, exclude=probe)
    for kind in ("sqlite-vec", "stdlib"):
        db = open_db(db_path, kind)
        random = db.collection("random")
        for _ in range(3):
            results = random.similar_by_id(probe, 12)
            assert probe not in [e.id for e in results]
            assert_same(results, expected)
        db.close()
    monkeypatch.setattr(search, "CACHE_MB", 0)
    monkeypatch.setattr(search, "CHUNK_ROWS", 100)
    db = open_db(db_path, "stdlib")
    paths.clear()
    assert_same(db.collection("random").similar_by_id(probe, 12), expected)
    assert paths == ["_chunked_top"]
    db.close()


def make_ties(db_path, table_model):
    """Five identical vectors whose ids sort differently from their insertion order, plus others."""
    rng = np.random.default_rng(5)
    tie = rng.standard_normal(DIMS).astype(np.float32)
    ids, rows = [], []
    for id in ["tie-d", "tie-b", "tie-e", "tie-a", "tie-c"]:
        ids.append(id)
        rows.append(tie)
    for i in range(300):
        ids.append(f"other-{i:03d}")
        rows.append(rng.standard_normal(DIMS).astype(np.float32))
    ids.append("scaled")  # same direction, another length: the same cosine
    rows.append(tie * 4)  # a power of two: the cosine is bit-for-bit the same
    table_model.table.update({f"content of {id}": row for id, row in zip(ids, rows)})
    with embedkit.Database(db_path) as db:
        db.create_collection("ties", model="test-search-table").embed_multi(
            [Item(id, f"content of {id}") for id in ids], batch_size=50
        )
    return tie


@pytest.mark.parametrize(
    "kind, cache_mb",
    [("sqlite-vec", None), ("stdlib", None), ("sqlite-vec", 0), ("stdlib", 0)],
)
def test_ties_are_broken_by_id_on_every_path(db_path, table_model, monkeypatch, kind, cache_mb):
    tie = make_ties(db_path, table_model)
    if cache_mb is not None:
        monkeypatch.setattr(search, "CACHE_MB", cache_mb)
        monkeypatch.setattr(search, "CHUNK_ROWS", 2)  # ties spread over many chunks
    db = open_db(db_path, kind)
    ties = db.collection("ties")
    everyone = ["scaled", "tie-a", "tie-b", "tie-c", "tie-d", "tie-e"]
    for _ in range(3):  # sqlite-vec, then cached (or chunked every time)
        results = ties.similar_by_vector(tie, 3)
        assert [e.id for e in results] == ["scaled", "tie-a", "tie-b"]
        assert all(e.score == pytest.approx(1.0, abs=1e-6) for e in results)
        assert [e.id for e in ties.similar_by_vector(tie, 6)] == everyone
        assert [e.id for e in ties.similar_by_id("tie-b", 4)] == ["scaled", "tie-a", "tie-c", "tie-d"]
        assert [e.id for e in ties.similar_by_id("scaled", 2)] == ["tie-a", "tie-b"]
    db.close()


def test_real_model_search_matches_brute_force(db_path, minilm, paths):
    texts = [
        "The cat sat on the mat.",
        "Dogs love to chase balls in the park.",
        "A kitten is sleeping on the sofa.",
        "The stock market fell sharply today.",
        "Investors are worried about inflation.",
        "Central banks raised interest rates again.",
        "I baked a chocolate cake for her birthday.",
        "This bread recipe needs yeast and flour.",
        "Fresh pasta is made with eggs.",
        "The football match ended in a draw.",
        "She won the tennis tournament.",
        "The marathon runners crossed the finish line.",
        "Python is a popular programming language.",
        "SQLite stores a whole database in one file.",
        "Vectors can be compared with cosine similarity.",
        "The train to London was delayed.",
        "Flights were cancelled because of the storm.",
        "We took a ferry across the bay.",
        "The patient was given antibiotics.",
        "Regular exercise improves heart health.",
        "The doctor recommended more sleep.",
        "Mountains were covered in fresh snow.",
        "The river flooded after heavy rain.",
        "A heatwave hit the city this summer.",
        "The museum opened a new dinosaur exhibit.",
        "He is reading a novel about pirates.",
        "The orchestra played Beethoven's fifth symphony.",
        "Solar panels turn sunlight into electricity.",
        "Electric cars need charging stations.",
        "The garden is full of roses and tulips.",
    ]
    ids = [f"t{i:02d}" for i in range(len(texts))]
    with embedkit.Database(db_path) as db:
        docs = db.create_collection("texts")
        docs.embed_multi([Item(id, text) for id, text in zip(ids, texts)], store=True)
        matrix = np.array([docs.vector(id) for id in ids])
    queries = ["a small cat", "money and the economy", "cooking food", "sports results", "travel by sea", "weather"]
    query_vectors = minilm.embed(queries)
    for kind in ("sqlite-vec", "stdlib"):
        db = open_db(db_path, kind)
        docs = db.collection("texts")
        for round in range(2):  # first and second query at the same version
            for query, vector in zip(queries, query_vectors):
                expected = brute_force(ids, matrix, vector, 5)
                assert_same(docs.similar_by_vector(vector, 5), expected)
                if round and kind == "stdlib":  # the model embeds queries the same way
                    assert_same(docs.similar(query, 5), expected)
        assert [e.content for e in docs.similar("a small cat", 2)] == [texts[0], texts[2]]
        assert_same(docs.similar_by_id("t13", 29), brute_force(ids, matrix, matrix[13], 29, exclude="t13"))
        db.close()
    assert {"_sqlite_vec_top", "_load"} <= set(paths)


def test_results_carry_content_and_metadata(db, letters):
    docs = db.create_collection("docs", model="test-letters")
    docs.embed_multi([Item("1", "aaa", {"k": 1}), Item("2", "eee")], store=True)
    docs.embed("3", "ooo", {"k": 3})
    results = docs.similar("aaa", 3)
    assert results[0].to_dict() == {"id": "1", "score": pytest.approx(1.0), "content": "aaa", "metadata": {"k": 1}}
    assert {e.id: (e.content, e.metadata) for e in results} == {
        "1": ("aaa", {"k": 1}),
        "2": ("eee", None),
        "3": (None, {"k": 3}),
    }


@pytest.mark.parametrize("kind", ["sqlite-vec", "stdlib"])
def test_n_larger_than_the_collection_and_empty_collections(db_path, letters, kind):
    with embedkit.Database(db_path) as setup:
        setup.create_collection("empty", model="test-letters")
        setup.create_collection("small", model="test-letters").embed_multi(
            [Item("1", "aaa"), Item("2", "a e"), Item("3", "eee")]
        )
    db = open_db(db_path, kind)
    small, empty = db.collection("small"), db.collection("empty")
    for _ in range(3):
        assert [e.id for e in small.similar("a", 100)] == ["1", "2", "3"]
        assert [e.id for e in small.similar_by_id("1", 100)] == ["2", "3"]
        assert small.similar("a", 0) == [] and small.similar("a", -1) == []
        assert empty.similar("a", 10) == []
        assert empty.similar_by_vector([1] * 8, 1) == []
    with pytest.raises(EmbedkitError, match="no item with id 'missing'"):
        small.similar_by_id("missing")
    db.close()


@pytest.mark.parametrize(
    "vector, message",
    [
        ([0] * 8, "the query vector is all zeros"),
        ([1] * 7, "the query vector has 7 dimensions, expected 8"),
        ([1] * 9, "the query vector has 9 dimensions, expected 8"),
        ([1] * 7 + [float("nan")], "the query vector contains NaN"),
    ],
)
def test_bad_query_vectors_are_errors(db, letters, vector, message):
    docs = db.create_collection("docs", model="test-letters")
    docs.embed("1", "aaa")
    for _ in range(2):
        with pytest.raises(EmbedkitError, match=message):
            docs.similar_by_vector(vector)


def test_empty_query_text_is_an_error(db, letters):
    docs = db.create_collection("docs", model="test-letters")
    docs.embed("1", "aaa")
    for text in ("", "   "):
        with pytest.raises(EmbedkitError, match="the query text is empty"):
            docs.similar(text)
    assert letters.calls == 1


def test_cache_is_invalidated_by_writes_from_any_connection(db_path, table_model, paths):
    rng = np.random.default_rng(1)
    rows = {f"v{i:03d}": rng.standard_normal(DIMS).astype(np.float32) for i in range(200)}
    table_model.table.update({id: row for id, row in rows.items()})
    db = embedkit.Database(db_path)
    coll = db.create_collection("c", model="test-search-table")
    coll.embed_multi([Item(id, id) for id in rows])
    query = rng.standard_normal(DIMS).astype(np.float32)

    def check():
        ids = sorted(rows)
        expected = brute_force(ids, [rows[id] for id in ids], query, 5)
        for _ in range(2):
            assert_same(coll.similar_by_vector(query, 5), expected)

    check()
    assert (db.key, "c") in search._cache
    version = coll.version()

    # Another program with the stdlib sqlite3 (no embedkit, no extensions): the triggers
    # still run. It has to be another process: two copies of SQLite in one process must
    # not open the same file (https://sqlite.org/howtocorrupt.html#multiple_copies).
    plain = PlainClient(db_path)
    # UPDATE: an existing row becomes the best match
    plain.execute("update c set embedding = ? where id = 'v100'", [(query * 2).astype("<f4").tobytes()])
    rows["v100"] = query * 2
    assert coll.version() == version + 1
    paths.clear()
    check()
    assert coll.similar_by_vector(query, 1)[0].id == "v100"
    assert "_load" in paths  # rebuilt, not served stale

    # DELETE
    plain.execute("delete from c where id in ('v100', 'v007')")
    del rows["v100"], rows["v007"]
    check()
    assert "v100" not in [e.id for e in coll.similar_by_vector(query, 200)]
    assert len(coll.similar_by_vector(query, 1000)) == 198

    # INSERT
    plain.execute(
        "insert into c (id, embedding, content_hash, updated) values ('new', ?, 'x', '2026-11-23T00:00:00Z')",
        [(-query).astype("<f4").tobytes()],
    )
    plain.execute(
        "insert into c (id, embedding, content_hash, updated) values ('best', ?, 'y', '2026-11-23T00:00:00Z')",
        [query.astype("<f4").tobytes()],
    )
    rows["new"], rows["best"] = -query, query
    check()
    assert coll.similar_by_vector(query, 1)[0].id == "best"
    assert coll.similar_by_vector(-query, 1)[0].id == "new"

    # another embedkit connection writing through the API
    other = embedkit.Database(db_path)
    table_model.table["twin"] = query * 0.5
    other.collection("c").embed("twin", "twin")
    rows["twin"] = query * 0.5
    check()
    assert [e.id for e in coll.similar_by_vector(query, 2)] == ["best", "twin"]

    # deleted and created again under the same name, from the other connection
    other.delete_collection("c")
    recreated = other.create_collection("c", model="test-search-table")
    table_model.table["only"] = -query
    recreated.embed("only", "only")
    assert [(e.id, round(e.score, 5)) for e in coll.similar_by_vector(query, 5)] == [("only", -1.0)]
    assert [(e.id, round(e.score, 5)) for e in coll.similar_by_vector(query, 5)] == [("only", -1.0)]
    other.close()
    db.close()


@pytest.mark.parametrize("kind", ["sqlite-vec", "stdlib"])
def test_a_search_inside_a_rolled_back_transaction_is_never_served_later(db_path, letters, kind):
    with embedkit.Database(db_path) as setup:
        setup.create_collection("docs", model="test-letters").embed_multi([Item("1", "aaa"), Item("2", "eee")])
    db = open_db(db_path, kind)
    docs = db.collection("docs")
    for _ in range(2):
        assert [e.id for e in docs.similar("ooo", 5)] == ["1", "2"]
    with pytest.raises(RuntimeError):
        with storage.transaction(db.conn):
            docs.embed("x", "ooo")
            for _ in range(3):  # a transaction sees its own writes
                assert docs.similar("ooo", 1)[0].id == "x"
            version_inside = docs.version()
            raise RuntimeError("roll back")
    assert "x" not in docs
    docs.embed("y", "iii")  # committed: the version number the rolled-back write had
    assert docs.version() == version_inside
    for _ in range(3):
        results = docs.similar("ooo", 5)
        assert [e.id for e in results] == ["1", "2", "y"]
        assert all(e.score == pytest.approx(0.1) for e in results)
    db.close()


UNUSABLE = {  # what another program may write into a collection's embedding column
    "nan": np.array([np.nan, 1, 1, 1, 1, 1, 1, 1], dtype="<f4").tobytes(),
    "inf": np.array([np.inf, 1, 1, 1, 1, 1, 1, 1], dtype="<f4").tobytes(),
    "zeros": bytes(4 * 8),
    "short": np.ones(7, dtype="<f4").tobytes(),
    "text": "[1, 1, 1, 1, 1, 1, 1, 1]",
    "null": None,
}


def write_unusable_vectors(db_path):
    """Items 'aaa', 'a e' and 'eee' and, written by plain sqlite3, one item per kind of
    unusable vector (NULL through an edited schema, as nothing else gets past NOT NULL)."""
    with embedkit.Database(db_path) as setup:
        setup.create_collection("docs", model="test-letters").embed_multi(
            [Item("1", "aaa"), Item("2", "eee"), Item("3", "a e")]
        )
    plain = sqlite3.connect(db_path)
    plain.execute("pragma writable_schema = 1")
    plain.execute("update sqlite_master set sql = replace(sql, 'embedding blob not null', 'embedding blob') "
                  "where name = 'docs'")
    plain.commit()
    plain.close()
    plain = sqlite3.connect(db_path)
    plain.executemany("insert into docs (id, embedding, content_hash, updated) values (?, ?, 'x', 'now')",
                      [(f"bad-{kind}", value) for kind, value in UNUSABLE.items()])
    plain.commit()
    assert plain.execute("pragma integrity_check").fetchone() == ("ok",)
    plain.close()


@pytest.mark.parametrize("kind, cache_mb", [("sqlite-vec", None), ("stdlib", None), ("stdlib", 0)])
def test_unusable_vectors_written_by_another_client_are_left_out(db_path, letters, monkeypatch, caplog, kind,
                                                                 cache_mb):
    write_unusable_vectors(db_path)
    if cache_mb is not None:
        monkeypatch.setattr(search, "CACHE_MB", cache_mb)
    db = open_db(db_path, kind)
    docs = db.collection("docs")
    for _ in range(3):
        # n results whenever n usable items match; never fewer, never an unusable one
        assert [e.id for e in docs.similar("aaa", 1)] == ["1"]
        assert [(e.id, round(e.score, 6)) for e in docs.similar("aaa", 5)] == [
            ("1", 1.0),
            ("3", round(4 / (10**0.5 * 2), 6)),
            ("2", 0.1),
        ]
        assert [e.id for e in docs.similar_by_id("1", 10)] == ["3", "2"]
        assert [e.id for e in docs.similar("aaa", 5, where="id like '%'")] == ["1", "3", "2"]  # filtered
    warnings = [r.getMessage() for r in caplog.records if "cannot be used" in r.getMessage()]
    assert len(warnings) == 1, warnings  # once, naming every one of them
    assert "collection 'docs' has 6 stored vectors that cannot be used" in warnings[0]
    for name, problem in [("nan", "NaN or infinite values"), ("inf", "NaN or infinite values"),
                          ("zeros", "all zeros"), ("short", "28 bytes, not 32"), ("text", "str, not a BLOB"),
                          ("null", "NULL")]:
        assert f"'bad-{name}' ({problem})" in warnings[0]
    for id in UNUSABLE:
        with pytest.raises(embedkit.EmbedkitError, match=f"the stored vector of 'bad-{id}'"):
            docs.similar_by_id(f"bad-{id}", 3)
    db.close()


def test_collections_are_cached_separately(db, letters):
    a = db.create_collection("a", model="test-letters")
    b = db.create_collection("b", model="test-letters")
    a.embed_multi([Item("a1", "aaa"), Item("a2", "eee")])
    b.embed_multi([Item("b1", "aaa"), Item("b2", "ooo")])
    for _ in range(3):
        assert [e.id for e in a.similar("ooo", 2)] == ["a1", "a2"]  # a tie, broken by id
        assert [e.id for e in a.similar("ee o", 2)] == ["a2", "a1"]
        assert [e.id for e in b.similar("ooo", 1)] == ["b2"]
        assert {e.id for e in a.similar("ooo", 5)} == {"a1", "a2"}


def test_sqlite_vec_notice_is_logged_once_per_process(db_path, letters, monkeypatch, caplog):
    monkeypatch.setattr(storage, "_vec_notice_given", False)
    with embedkit.Database(db_path) as setup:
        setup.create_collection("a", model="test-letters").embed("1", "aaa")
        setup.create_collection("b", model="test-letters").embed("1", "eee")
    caplog.set_level(logging.INFO, logger="embedkit")
    with_vec = embedkit.Database(db_path)
    with_vec.collection("a").similar("a")
    with_vec.collection("a").similar("a")
    assert [r for r in caplog.records if "sqlite-vec" in r.getMessage()] == []
    for _ in range(2):  # two connections, two collections, several queries
        plain = embedkit.Database(sqlite3.connect(db_path))
        for name in ("a", "b"):
            for _ in range(2):
                assert plain.collection(name).similar("a", 1)[0].id == "1"
        plain.close()
    notices = [r for r in caplog.records if "sqlite-vec is not available" in r.getMessage()]
    assert len(notices) == 1
    assert notices[0].levelno == logging.WARNING
    assert notices[0].name == "embedkit"
    assert "searching with numpy instead" in notices[0].getMessage()
    with_vec.close()
