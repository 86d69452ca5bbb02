"""Quantised indexes (quantized.py, `embedkit index`): the index always matches the collection's
float32 vectors, whoever writes them, and searches with it agree with exact search."""

import json
import logging
import subprocess
import sys

import numpy as np
import pytest

import embedkit
from conftest import TableModel
from embedkit import EmbedkitError, models, quantized, search, storage
from embedkit.items import Item

DIMS = 64


# Returns the vector its table holds for each text: embed_multi writes chosen vectors.
TABLE = models.register(TableModel("test-quantized-table", DIMS))


def plain_client(path, *statements):
    """Run (sql, params) statements in another process with Python's own sqlite3 module, which
    cannot load sqlite-vec here: a client like the sqlite3 shell, that knows nothing of vec0."""
    script = (
        "import sqlite3, sys, json\n"
        "conn = sqlite3.connect(sys.argv[1])\n"
        "assert not hasattr(conn, 'enable_load_extension') or not conn.execute(\"select 1 from pragma_function_list where name = 'vec_version'\").fetchone()\n"
        "for sql, params in json.loads(sys.argv[2]):\n"
        "    conn.execute(sql, [bytes.fromhex(p[1]) if isinstance(p, list) else p for p in params])\n"
        "    conn.commit()\n"
    )
    encoded = [[sql, [["hex", p.hex()] if isinstance(p, bytes) else p for p in params]] for sql, params in statements]
    subprocess.run([sys.executable, "-c", script, path, json.dumps(encoded)], check=True)


def unit_vectors(count, seed, dims=DIMS):
    matrix = np.random.default_rng(seed).standard_normal((count, dims)).astype(np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def write_rows(db, name, rows):
    """(id, vector) rows straight into the collection's table."""
    with storage.transaction(db.conn):
        db.conn.executemany(
            f"insert into {storage.quote(name)} (id, embedding, content_hash, updated) values (?, ?, ?, ?) "
            "on conflict (id) do update set embedding = excluded.embedding",
            [(id, np.asarray(vector, dtype="<f4").tobytes(), "hash-" + id, storage.now()) for id, vector in rows],
        )


@pytest.fixture
def coll(db):
    """A collection of 300 random unit vectors (test-quantized-table model, 64 dimensions)."""
    collection = db.create_collection("vecs", model="test-quantized-table")
    write_rows(db, "vecs", [(f"item{i:03d}", v) for i, v in enumerate(unit_vectors(300, 1))])
    return collection


def index_codes(db, name):
    vec = storage.quote(quantized.names(name)["vec"])
    return dict(db.conn.execute(f"select id, embedding from {vec}").fetchall())


def expected_codes(db, collection):
    index = quantized.settings(collection)
    rows = db.conn.execute(f"select id, embedding from {storage.quote(collection.table)}").fetchall()
    return {id: quantized._encode(index, np.frombuffer(blob, "<f4")[None, :])[0].tobytes() for id, blob in rows}


def assert_in_sync(db, collection):
    """After a search the log is empty and the index holds exactly the codes of the current rows."""
    query = unit_vectors(1, 99)[0]
    assert quantized.top_n(collection, query, 3) is not None
    assert quantized.status(collection)["pending"] == 0
    assert index_codes(db, collection.name) == expected_codes(db, collection)


def exact(collection, query, n, exclude=None):
    search.forget(collection.db.key)
    search._searched.clear()  # the sqlite-vec scan, not a cached matrix
    return search.top_n(collection, query, n, exclude, exact=True)


def assert_same_hits(got, want):
    assert [id for id, _ in got] == [id for id, _ in want]
    for (_, a), (_, b) in zip(got, want):
        assert a == pytest.approx(b, abs=1e-6)


# Building, status, dropping


@pytest.mark.parametrize("mode", quantized.MODES)
def test_build_indexes_every_row_and_reports_status(db, coll, mode):
    assert quantized.status(coll) == {"collection": "vecs", "quantize": None}
    status = quantized.build(coll, mode)
    assert status == {
        "collection": "vecs", "quantize": mode, "dimensions": DIMS, "rows": 300, "items": 300, "pending": 0,
        "oversample": quantized.OVERSAMPLE[mode], "built": status["built"], "usable": True,
    }
    assert index_codes(db, "vecs") == expected_codes(db, coll)
    settings = json.loads(db.conn.execute("select settings from _embedkit_collections where name = 'vecs'").fetchone()[0])
    assert settings["index"]["quantize"] == mode
    assert settings["index"]["dimensions"] == DIMS
    assert (settings["index"]["scale"] is None) == (mode == "bit")


def test_bit_codes_are_what_sqlite_vec_quantises_to(db, coll):
    quantized.build(coll, "bit")
    different = db.conn.execute(
        f"select count(*) from vecs join {storage.quote(quantized.names('vecs')['vec'])} as codes using (id) "
        "where codes.embedding != vec_quantize_binary(vecs.embedding)"
    ).fetchone()[0]
    assert different == 0


def test_int8_codes_use_the_range_of_the_data(db, coll):
    quantized.build(coll, "int8")
    codes = np.frombuffer(b"".join(index_codes(db, "vecs").values()), dtype=np.int8)
    assert np.abs(codes).max() >= 100  # not vec_quantize_int8's 'unit' range, which would leave ~±40 here


def test_all_objects_are_hidden_from_datasette_and_named_after_the_collection(db, coll):
    before = {row[0] for row in db.conn.execute("select name from sqlite_master")}
    quantized.build(coll, "bit")
    # and sqlite_sequence, SQLite's own, which vec0's AUTOINCREMENT makes on first use
    added = {row[0] for row in db.conn.execute("select name from sqlite_master")} - before - {"sqlite_sequence"}
    assert added and all(
        name.startswith("_embedkit_index_vecs:") or name.startswith("sqlite_autoindex__embedkit_index_vecs:")
        for name in added
    ), added
    triggers = {row[0] for row in db.conn.execute("select name from sqlite_master where type = 'trigger'")} & added
    assert triggers == {"_embedkit_index_vecs:insert", "_embedkit_index_vecs:update", "_embedkit_index_vecs:delete"}


def test_drop_removes_everything_and_writes_go_on(db, coll, db_path):
    before = {row[0] for row in db.conn.execute("select name from sqlite_master")}
    quantized.build(coll, "int8")
    assert quantized.drop(coll) is True
    assert {row[0] for row in db.conn.execute("select name from sqlite_master")} - {"sqlite_sequence"} == before
    assert quantized.status(coll) == {"collection": "vecs", "quantize": None}
    assert quantized.top_n(coll, unit_vectors(1, 5)[0], 5) is None
    assert quantized.drop(coll) is False
    plain_client(db_path, ("delete from vecs where id = ?", ["item000"]))
    assert "item000" not in coll


def test_rebuild_in_another_mode(db, coll):
    quantized.build(coll, "int8")
    write_rows(db, "vecs", [("extra", unit_vectors(1, 7)[0])])
    status = quantized.build(coll, "bit", oversample=30)
    assert (status["quantize"], status["rows"], status["pending"], status["oversample"]) == ("bit", 301, 0, 30)
    assert index_codes(db, "vecs") == expected_codes(db, coll)


def test_deleting_the_collection_drops_its_index(db, coll):
    before = {row[0] for row in db.conn.execute("select name from sqlite_master")}
    quantized.build(coll, "bit")
    db.delete_collection("vecs")
    left = {row[0] for row in db.conn.execute("select name from sqlite_master")}
    assert not any("_embedkit_index_" in name for name in left), left
    assert not any("vecs" in name for name in left - before)
    again = db.create_collection("vecs", model="test-quantized-table")
    assert quantized.status(again) == {"collection": "vecs", "quantize": None}
    write_rows(db, "vecs", [("a", unit_vectors(1, 3)[0])])  # no trigger of the old index is left
    assert quantized.top_n(again, unit_vectors(1, 3)[0], 1) is None


def test_indexes_of_collections_with_related_names_do_not_collide(db):
    # vec0 names its shadow tables NAME_chunks, NAME_info, ...: with "_" as the separator the
    # index of "docs_chunks" would be one of the tables of the index of "docs".
    rows = [(f"i{i}", v) for i, v in enumerate(unit_vectors(50, 2))]
    collections = {}
    for name in ("docs", "docs_chunks", "docs_log", "docs_info"):
        collections[name] = db.create_collection(name, model="test-quantized-table")
        write_rows(db, name, rows[: 10 + len(name)])
        quantized.build(collections[name], "bit")
    for name, collection in collections.items():
        assert quantized.status(collection)["rows"] == 10 + len(name)
    quantized.drop(collections["docs"])
    assert quantized.status(collections["docs_chunks"])["rows"] == 21
    db.delete_collection("docs_log")
    assert quantized.status(collections["docs_info"])["rows"] == 19


models.register(TableModel("test-quantized-nodims", None))


def test_build_refuses_a_collection_without_dimensions_or_a_bad_mode(db):
    empty = db.create_collection("empty", model="test-quantized-nodims")
    with pytest.raises(EmbedkitError, match="no vectors yet"):
        quantized.build(empty, "bit")
    with pytest.raises(EmbedkitError, match="unknown quantisation 'int4'"):
        quantized.build(empty, "int4")


def test_an_empty_collection_can_be_indexed_and_fills_up(db):
    empty = db.create_collection("later", model="test-quantized-table")
    assert quantized.build(empty, "int8")["rows"] == 0
    vectors = unit_vectors(20, 4)
    write_rows(db, "later", [(f"i{i}", v) for i, v in enumerate(vectors)])
    assert_same_hits(quantized.top_n(empty, vectors[3], 5), exact(empty, vectors[3], 5))
    assert_in_sync(db, empty)


# Searching


@pytest.mark.parametrize("mode", quantized.MODES)
def test_results_equal_exact_search_when_every_item_is_a_candidate(coll, mode):
    quantized.build(coll, mode)
    for query in unit_vectors(10, 11):
        got = quantized.top_n(coll, query, 10, oversample=40)  # 400 candidates >= 300 items
        assert_same_hits(got, exact(coll, query, 10))


def test_int8_default_finds_the_exact_top_10(coll):
    quantized.build(coll, "int8")
    for query in unit_vectors(20, 12):
        assert_same_hits(quantized.top_n(coll, query, 10), exact(coll, query, 10))


def test_scores_are_exact_cosine_and_ties_go_by_id(db):
    collection = db.create_collection("ties", model="test-quantized-table")
    vector = unit_vectors(1, 8)[0]
    others = unit_vectors(30, 9)
    write_rows(db, "ties", [("b", vector * 3), ("a", vector), ("c", vector * 0.5)] + [(f"o{i}", v) for i, v in enumerate(others)])
    quantized.build(collection, "bit")
    hits = quantized.top_n(collection, vector * 2, 4)
    assert [id for id, _ in hits[:3]] == ["a", "b", "c"]
    assert all(score == pytest.approx(1.0, abs=1e-6) for _, score in hits[:3])
    best_other = max(float(np.dot(o, vector)) for o in others)
    assert hits[3][1] == pytest.approx(best_other, abs=1e-6)
    assert all(isinstance(score, float) for _, score in hits)


def test_exclude_and_candidates(coll):
    quantized.build(coll, "int8")
    target = coll.vector("item010")
    hits = quantized.top_n(coll, target, 5, exclude="item010")
    assert "item010" not in [id for id, _ in hits] and len(hits) == 5
    assert_same_hits(hits, exact(coll, target, 5, exclude="item010"))
    ids = quantized.candidates(coll, target, 7)
    assert len(ids) == 7 and ids[0] == "item010"
    assert "item010" not in quantized.candidates(coll, target, 7, exclude="item010")


def test_no_index_or_too_many_candidates_means_exact(coll):
    query = unit_vectors(1, 13)[0]
    assert quantized.top_n(coll, query, 5) is None
    assert quantized.candidates(coll, query, 5) is None
    quantized.build(coll, "bit")
    assert quantized.top_n(coll, query, 0) == []
    too_many = quantized.MAX_CANDIDATES // quantized.OVERSAMPLE["bit"] + 1
    assert quantized.top_n(coll, query, too_many) is None
    assert quantized.top_n(coll, query, 100, oversample=4) is not None


def test_minilm_recall_at_10_against_exact(tmp_path, minilm):
    """Real embeddings of 500 varied short texts: each mode's default oversampling finds at
    least 95% of the exact top 10, averaged over 40 queries."""
    texts, queries = varied_texts(500, seed=1), varied_texts(40, seed=2)
    with embedkit.Database(str(tmp_path / "real.db")) as db:
        collection = db.create_collection("texts")
        collection.embed_multi([Item(f"t{i:03d}", text) for i, text in enumerate(texts)])
        query_vectors = minilm.embed(queries)
        truth = [[id for id, _ in exact(collection, q, 10)] for q in query_vectors]
        for mode in quantized.MODES:
            quantized.build(collection, mode)
            found = [[id for id, _ in quantized.top_n(collection, q, 10)] for q in query_vectors]
            recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)])
            assert recall >= 0.95, (mode, recall)


TOPICS = {
    "cooking": ("the soup|a sourdough loaf|the risotto|fresh pasta|the curry|a lemon tart|roast chicken|the stew",
                "needs|tastes better with|burns without|is ruined by|can be frozen with|goes well with",
                "more salt|slow simmering|a hot oven|fresh basil|brown butter|an overnight rest|toasted spices"),
    "gardening": ("the tomatoes|young seedlings|the rose bushes|a compost heap|the lawn|potted herbs|fruit trees",
                  "need|suffer from|thrive with|are damaged by|grow faster with|should be protected from",
                  "morning sun|deep watering|aphids|late frost|mulch|clay soil|careful pruning"),
    "programming": ("the compiler|a memory leak|the unit tests|this regular expression|the database query|a race condition|the build script",
                    "fails on|is slowed down by|was fixed by|breaks with|is caused by|needs",
                    "null pointers|an index|a mutex|type hints|recursion|a cache|the garbage collector"),
    "finance": ("the bond market|a savings account|mortgage rates|the stock price|quarterly earnings|the pension fund|inflation",
                "fell after|rose with|depends on|was hit by|recovered from|is driven by",
                "interest rate cuts|a recession|strong exports|the central bank|tax changes|weak demand|currency swings"),
    "astronomy": ("the telescope|a distant galaxy|the comet|Jupiter's moons|a neutron star|the solar eclipse|dark matter",
                  "was observed with|emits|is hidden by|was discovered through|orbits near|is measured with",
                  "infrared light|gravitational lensing|radio waves|a spectrograph|the Kuiper belt|x-rays|cosmic dust"),
    "football": ("the striker|our goalkeeper|the home team|a young midfielder|the coach|the referee|the away fans",
                 "scored against|was booked after|trained with|celebrated|complained about|was praised for",
                 "a late penalty|the offside rule|a header|extra time|the derby|a red card|the league title"),
    "medicine": ("the vaccine|a new antibiotic|the patient|chronic back pain|the blood test|a heart murmur|seasonal flu",
                 "is treated with|was detected by|responds to|worsens with|is prevented by|was linked to",
                 "physiotherapy|an MRI scan|beta blockers|rest and fluids|a low dose|antibodies|a biopsy"),
    "travel": ("the night train|a budget airline|the old town|our hotel|the ferry to the island|a mountain hut|the museum",
               "was delayed by|is popular for|can be reached by|was closed for|is cheaper with|is famous for",
               "a strike|sunset views|a rail pass|fog|early booking|local food|a guided tour"),
    "music": ("the orchestra|a jazz trio|the new album|the lead guitarist|the choir|a string quartet|the drummer",
              "performed|recorded|is known for|improvised over|rehearsed|was inspired by",
              "a minor key|a Bach fugue|folk melodies|a live audience|syncopated rhythms|a slow ballad|an encore"),
    "weather": ("the storm|a heatwave|morning fog|the monsoon|heavy snow|a cold front|the hurricane",
                "brought|was followed by|caused|ended with|is expected with|was worse than",
                "flooded streets|power cuts|clear skies|record temperatures|strong winds|hail|a drought"),
}


def varied_texts(count, seed):
    """count short texts, deterministic for a seed: two sentences on one of ten topics."""
    rng = np.random.default_rng(seed)
    topics = [tuple(part.split("|") for part in parts) for parts in TOPICS.values()]
    texts = []
    for _ in range(count):
        subjects, verbs, objects = topics[int(rng.integers(len(topics)))]
        sentences = [
            f"{subjects[int(rng.integers(len(subjects)))]} {verbs[int(rng.integers(len(verbs)))]} "
            f"{objects[int(rng.integers(len(objects)))]}"
            for _ in range(2)
        ]
        texts.append(". ".join(s[0].upper() + s[1:] for s in sentences) + ".")
    return texts


# Keeping in sync


def test_embedkit_writes_are_followed(db, table_model):
    collection = db.create_collection("live", model="test-quantized-table")
    vectors = unit_vectors(80, 21)
    for i, v in enumerate(vectors):
        table_model.table[f"text {i}"] = v
    collection.embed_multi([Item(f"i{i}", f"text {i}") for i in range(40)])
    quantized.build(collection, "bit")
    collection.embed_multi([Item(f"i{i}", f"text {i + 20}") for i in range(30, 60)])  # 10 changed, 20 new
    collection.delete([f"i{i}" for i in range(0, 10)])
    collection.embed_multi([Item("i12", "text 12", {"tag": "x"})])  # metadata only: nothing logged
    status = quantized.status(collection)
    assert status["pending"] == 10 + 20 + 10  # one row each
    assert quantized.sync(collection) == 40
    assert quantized.sync(collection) == 0
    assert_in_sync(db, collection)
    for query in vectors[::7]:
        assert_same_hits(quantized.top_n(collection, query, 10, oversample=40), exact(collection, query, 10))


@pytest.fixture
def table_model():
    TABLE.table.clear()
    TABLE.calls = 0
    return TABLE


def test_writes_by_a_client_without_sqlite_vec_are_followed(db, coll, db_path):
    quantized.build(coll, "int8")
    new = unit_vectors(5, 31)
    plain_client(
        db_path,
        ("insert into vecs (id, embedding, content_hash, updated) values (?, ?, 'h', 'now')", ["fresh", new[0].tobytes()]),
        ("update vecs set embedding = ? where id = ?", [new[1].tobytes(), "item001"]),
        ("update vecs set id = ? where id = ?", ["renamed", "item002"]),
        ("delete from vecs where id = ?", ["item003"]),
        ("insert or replace into vecs (id, embedding, content_hash, updated) values (?, ?, 'h', 'now')",
         ["item004", new[2].tobytes()]),
        ("update vecs set metadata = '{\"a\":1}' where id = ?", ["item005"]),
    )
    assert quantized.status(coll)["pending"] == 1 + 1 + 2 + 1 + 1
    assert_in_sync(db, coll)
    assert set(index_codes(db, "vecs")) == {row[0] for row in db.conn.execute("select id from vecs")}
    for query in [*new[:3], *unit_vectors(5, 32)]:
        assert_same_hits(quantized.top_n(coll, query, 10), exact(coll, query, 10))


@pytest.mark.parametrize("who", ["embedkit", "plain"])
def test_vacuum_renumbering_rowids_changes_nothing(db, coll, db_path, who):
    quantized.build(coll, "int8")
    # Deleting from the front and adding at the back leaves gaps that VACUUM closes.
    coll.delete([f"item{i:03d}" for i in range(0, 300, 3)])
    write_rows(db, "vecs", [(f"late{i}", v) for i, v in enumerate(unit_vectors(30, 41))])
    quantized.sync(coll)
    rowids = dict(db.conn.execute("select id, rowid from vecs").fetchall())
    # VACUUM may renumber the rowids of a table without an INTEGER PRIMARY KEY (SQLite 3.53
    # happens to keep them): renumber them the way it would, without a change of id or vector.
    renumber = "update vecs set rowid = 1000000 - rowid"
    if who == "embedkit":
        db.conn.execute(renumber)
        db.conn.execute("vacuum")
    else:
        plain_client(db_path, (renumber, []), ("vacuum", []))
    after = dict(db.conn.execute("select id, rowid from vecs").fetchall())
    assert set(after) == set(rowids) and all(after[id] != rowids[id] for id in after)
    assert quantized.status(coll)["pending"] == 0
    assert_in_sync(db, coll)
    for query in unit_vectors(10, 42):
        assert_same_hits(quantized.top_n(coll, query, 10), exact(coll, query, 10))


def test_writes_inside_a_transaction_are_searched_consistently(db, coll):
    quantized.build(coll, "int8")
    vector = unit_vectors(1, 51)[0]
    with storage.transaction(db.conn):
        write_rows(db, "vecs", [("inside", vector)])
        assert quantized.top_n(coll, vector, 1)[0][0] == "inside"
        db.conn.execute("delete from vecs where id = 'inside'")
        assert quantized.top_n(coll, vector, 1)[0][0] != "inside"
    assert_in_sync(db, coll)


def test_a_read_only_connection_uses_a_current_index_and_falls_back_when_behind(db, coll, db_path, caplog):
    quantized.build(coll, "bit")
    query = unit_vectors(1, 61)[0]
    conn = storage.sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, isolation_level=None)
    reader = embedkit.Database(conn)
    readable = reader.collection("vecs")
    assert quantized.top_n(readable, query, 5, oversample=40) == quantized.top_n(coll, query, 5, oversample=40)
    plain_client(db_path, ("delete from vecs where id = ?", [quantized.top_n(coll, query, 1, oversample=80)[0][0]]))
    quantized._notices.clear()
    with caplog.at_level(logging.WARNING, logger="embedkit"):
        assert quantized.top_n(readable, query, 5) is None
        assert quantized.top_n(readable, query, 5) is None
    notices = [r.getMessage() for r in caplog.records if "quantised index" in r.getMessage()]
    assert len(notices) == 1 and "cannot apply them" in notices[0] and "searching exactly" in notices[0]
    assert quantized.sync(readable) is None
    assert quantized.status(readable)["pending"] == 1  # nothing was half-applied
    conn.close()
    assert_in_sync(db, coll)  # a writable connection catches up


def test_without_sqlite_vec_the_index_is_not_used(db, coll, db_path, monkeypatch, caplog):
    quantized.build(coll, "bit")
    monkeypatch.setattr(storage, "load_sqlite_vec", lambda conn: False)
    monkeypatch.setattr(storage, "_vec_notice_given", False)
    with caplog.at_level(logging.WARNING, logger="embedkit"):
        assert quantized.top_n(coll, unit_vectors(1, 71)[0], 5) is None
    assert "sqlite-vec is not available" in caplog.text
    assert quantized.status(coll)["rows"] is None and quantized.status(coll)["usable"] is False
    with pytest.raises(EmbedkitError, match="need sqlite-vec"):
        quantized.build(coll, "int8")
    assert quantized.sync(coll) is None


@pytest.mark.parametrize("when", ["before the build", "after it"])
@pytest.mark.parametrize(
    "value, problem",
    [(np.array([np.nan] + [1.0] * 63, "<f4").tobytes(), "NaN or infinite values"),
     (np.array([np.inf] + [1.0] * 63, "<f4").tobytes(), "NaN or infinite values"),
     (np.ones(3, "<f4").tobytes(), "12 bytes, not 256"),
     (bytes(256), "all zeros")],
    ids=["nan", "inf", "short", "zeros"],
)
def test_unusable_vectors_are_left_out_and_n_results_still_come_back(db, coll, db_path, caplog, when, value, problem):
    """A NaN written by another client once made an int8 index return 0, 2 and 9 results for
    n = 1, 3 and 10: it is left out of the index (said once, naming it), and every n is met."""
    insert = ("insert into vecs (id, embedding, content_hash, updated) values ('bad', ?, 'h', 'now')", [value])
    if when == "before the build":
        plain_client(db_path, insert)
        quantized.build(coll, "int8")
    else:
        quantized.build(coll, "int8")
        plain_client(db_path, insert)
    with caplog.at_level(logging.WARNING, logger="embedkit"):
        for seed in range(5):
            query = unit_vectors(1, 200 + seed)[0]
            for n in (1, 3, 10, 50):
                hits = quantized.top_n(coll, query, n)
                assert len(hits) == n and "bad" not in [id for id, _ in hits]
                assert_same_hits(hits, exact(coll, query, n))
    assert quantized.status(coll) | {"built": None} == {
        "collection": "vecs", "quantize": "int8", "dimensions": 64, "rows": 300, "items": 301, "pending": 0,
        "oversample": 4, "built": None, "usable": True}
    warnings = [r.getMessage() for r in caplog.records if "cannot be used" in r.getMessage()]
    assert warnings and f"'bad' ({problem})" in warnings[0]
    plain_client(db_path, ("delete from vecs where id = 'bad'", []))
    assert_in_sync(db, coll)


# The command line


@pytest.fixture
def cli_db(invoke, db_path, tmp_path, monkeypatch):
    with embedkit.Database(db_path) as db:
        db.create_collection("vecs", model="test-quantized-table")
        write_rows(db, "vecs", [(f"item{i:03d}", v) for i, v in enumerate(unit_vectors(50, 91))])
    monkeypatch.setenv("EMBEDKIT_DATABASE", db_path)
    return db_path


def test_cli_build_status_drop(invoke, cli_db):
    result = invoke("index", "vecs")
    assert result.exit_code == 0 and json.loads(result.stdout) == {"collection": "vecs", "quantize": None}
    result = invoke("index", "vecs", "--quantize", "bit")
    assert result.exit_code == 0, result.stderr
    built = json.loads(result.stdout)
    assert (built["quantize"], built["rows"], built["pending"], built["oversample"]) == ("bit", 50, 0, 10)
    plain_client(cli_db, ("delete from vecs where id = 'item001'", []))
    status = json.loads(invoke("index", "vecs").stdout)
    assert (status["rows"], status["items"], status["pending"]) == (50, 49, 1)
    result = invoke("index", "vecs", "--quantize", "int8", "--oversample", "3")
    assert (json.loads(result.stdout)["quantize"], json.loads(result.stdout)["oversample"]) == ("int8", 3)
    result = invoke("index", "vecs", "--drop")
    assert result.exit_code == 0 and result.stdout == "" and "Dropped the index of vecs" in result.stderr
    assert json.loads(invoke("index", "vecs").stdout)["quantize"] is None


@pytest.mark.parametrize(
    "args, message",
    [
        (["vecs", "--quantize", "int4"], "Invalid value for '--quantize': 'int4' is not one of 'int8', 'bit'"),
        (["nope", "--quantize", "bit"], "no collection named 'nope'"),
        (["nope"], "no collection named 'nope'"),
        (["vecs", "--drop"], "collection 'vecs' has no quantised index"),
        (["vecs", "--quantize", "bit", "--drop"], "not both"),
        (["vecs", "--oversample", "5"], "use it with --quantize"),
        (["vecs", "--quantize", "bit", "--oversample", "0"], "Invalid value for '--oversample'"),
        (["vecs", "-d", "missing.db"], "database missing.db does not exist"),
    ],
)
def test_cli_errors(invoke, cli_db, args, message):
    from conftest import dump

    before = dump(cli_db)
    result = invoke("index", *args)
    assert result.exit_code != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.stderr
    assert dump(cli_db) == before


@pytest.mark.datasette
def test_datasette_hides_the_index_and_still_serves_the_collection(db, coll, db_path):
    import asyncio

    from datasette.app import Datasette

    quantized.build(coll, "bit")
    plain_client(db_path, ("delete from vecs where id = 'item000'", []))  # a change pending
    ds = Datasette([db_path])
    response = asyncio.run(ds.client.get("/embeddings.json"))
    assert response.status_code == 200, response.text
    tables = {table["name"]: table["hidden"] for table in response.json()["tables"]}
    index_tables = [name for name in tables if name.startswith("_embedkit_index_")]
    assert len(index_tables) >= 5 and all(tables[name] for name in index_tables)
    assert tables["vecs"] is False
    response = asyncio.run(ds.client.get("/embeddings/vecs.json?_shape=array&_size=1"))
    assert response.status_code == 200 and len(response.json()) == 1


def test_similar_uses_the_index_unless_exact_or_filtered(coll, monkeypatch):
    quantized.build(coll, "int8")
    answered = []
    real = quantized.top_n

    def spy(*args, **kwargs):
        hits = real(*args, **kwargs)
        answered.append(hits is not None)
        return hits

    monkeypatch.setattr(quantized, "top_n", spy)
    query = unit_vectors(1, 21)[0]
    search.forget(coll.db.key)
    via_index = coll.similar_by_vector(query, 10)
    assert answered == [True]
    exact_results = coll.similar_by_vector(query, 10, exact=True)
    assert answered == [True]  # not asked
    assert [e.id for e in via_index] == [e.id for e in exact_results]
    coll.similar_by_vector(query, 10, where="1")
    assert answered == [True]  # filters search exactly
