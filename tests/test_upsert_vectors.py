"""Collection.upsert_vectors: vectors made elsewhere, stored fast and checked like embeddings."""

import numpy as np
import pytest

import embedkit
from embedkit import fulltext, quantized, storage
from embedkit.errors import EmbedkitError


def fts_ok(collection):
    """FTS5's own check of an external-content index against the table's text."""
    fts = storage.quote(fulltext.table_name(collection.name))
    collection.db.conn.execute(f"insert into {fts} ({fts}, rank) values ('integrity-check', 1)")
    return fulltext.problem(collection.db.conn, collection.name, collection.table) is None


def triggers(db):
    return sorted(row[0] for row in db.conn.execute("select name from sqlite_master where type = 'trigger'"))


def unit_rows(count, dimensions=8, seed=0):
    return np.random.default_rng(seed).standard_normal((count, dimensions)).astype(np.float32)


@pytest.fixture
def vectors_only(db):
    return db.create_collection("vecs", model=False)


def test_vectors_round_trip_bit_for_bit(vectors_only):
    matrix = unit_rows(300)
    matrix[0, :3] = [-0.0, np.float32(1e-42), np.float32(3.4e38)]  # a negative zero, a subnormal, a huge value
    ids = [f"v{i}" for i in range(300)]
    stats = vectors_only.upsert_vectors(ids, matrix)
    assert (stats.added, stats.updated, stats.unchanged) == (300, 0, 0)
    for position in (0, 1, 299):
        assert vectors_only.vector(ids[position]).tobytes() == matrix[position].tobytes()
    # Lists of numbers and BLOBs are taken too; a BLOB is stored as it is.
    vectors_only.upsert_vectors(["list", "blob"], [[1.5, -2, 0, 0, 0, 0, 0, 1], matrix[5].tobytes()])
    assert vectors_only.vector("list").tolist() == [1.5, -2, 0, 0, 0, 0, 0, 1]
    assert vectors_only.vector("blob").tobytes() == matrix[5].tobytes()
    assert vectors_only.dimensions == 8


def test_bad_vectors_are_refused_and_nothing_is_written(vectors_only, db):
    vectors_only.upsert_vectors(["first"], unit_rows(1))
    version, before = vectors_only.version(), triggers(db)
    matrix = unit_rows(1000)
    ids = [f"v{i}" for i in range(1000)]
    bad_nan = matrix.copy()
    bad_nan[500, 3] = np.nan
    zero = matrix.copy()
    zero[7] = 0
    cases = [
        (ids, bad_nan, "the vector of 'v500' contains NaN or infinite values"),
        (ids, zero, "the vector of 'v7' is all zeros"),
        (ids, unit_rows(1000, 9), "the vector of 'v0' has 9 dimensions, expected 8"),
        (["a", "b"], [[1.0] * 8, [1.0] * 7], "the vector of 'b' has 7 dimensions, expected 8"),
        (["a", "a"], unit_rows(2), "duplicate id 'a'"),
        (["a", ""], unit_rows(2), "an id must be a non-empty string"),
        (["a", None], unit_rows(2), "an id must be a non-empty string"),
        (["a"], [["x"] * 8], "the vector of 'a' is not a list of numbers"),
        (["a"], [b"12345"], "the vector of 'a': a float32 vector BLOB needs a positive multiple of 4 bytes"),
        (["a", "b"], unit_rows(3), "3 vectors for 2 ids"),
    ]
    for bad_ids, bad_vectors, message in cases:
        with pytest.raises(EmbedkitError, match=message):
            vectors_only.upsert_vectors(bad_ids, bad_vectors)
        assert vectors_only.count() == 1 and vectors_only.version() == version
        assert triggers(db) == before
    with pytest.raises(EmbedkitError, match="the metadata of 'a' must be a dict"):
        vectors_only.upsert_vectors(["a"], unit_rows(1), metadata=["tag"])
    with pytest.raises(EmbedkitError, match="the content of 'a' is not text"):
        vectors_only.upsert_vectors(["a"], unit_rows(1), content=[3])
    assert vectors_only.count() == 1 and fts_ok(vectors_only)


def test_unchanged_rows_are_untouched_and_changes_kept_in_step(vectors_only, db):
    matrix = unit_rows(50)
    ids = [f"v{i}" for i in range(50)]
    texts = [f"item {i} is about {'apples' if i % 2 else 'pears'}" for i in range(50)]
    vectors_only.upsert_vectors(ids, matrix, content=texts, metadata=[{"n": i} for i in range(50)])
    updated = dict(db.conn.execute("select id, updated from vecs"))
    version = vectors_only.version()
    stats = vectors_only.upsert_vectors(ids, matrix, content=texts, metadata=[{"n": i} for i in range(50)])
    assert (stats.added, stats.updated, stats.unchanged) == (0, 0, 50)
    assert vectors_only.version() == version
    assert dict(db.conn.execute("select id, updated from vecs")) == updated
    # New text for one, a new vector for another, new metadata for a third.
    changed = matrix.copy()
    changed[1] += 1
    texts[0] = "item 0 is about plums now"
    meta = [{"n": i} for i in range(50)]
    meta[2] = {"n": 2, "tag": "x"}
    stats = vectors_only.upsert_vectors(ids, changed, content=texts, metadata=meta)
    assert (stats.added, stats.updated, stats.unchanged) == (0, 3, 47)
    assert vectors_only.version() != version
    assert vectors_only.vector("v1").tobytes() == changed[1].tobytes()
    assert vectors_only.get("v2").metadata == {"n": 2, "tag": "x"}
    assert fts_ok(vectors_only)
    assert [e.id for e in vectors_only.similar("plums", mode="keyword")] == ["v0"]
    assert "v0" not in [e.id for e in vectors_only.similar("pears", n=50, mode="keyword")]


def test_bulk_write_keeps_the_keyword_index_and_a_quantised_index_current(db):
    collection = db.create_collection("vecs", model=False)
    collection.upsert_vectors(["seed"], unit_rows(1, seed=9), content=["the first one"])
    quantized.build(collection, "int8")
    before = triggers(db)
    matrix = unit_rows(3000, seed=1)
    ids = [f"v{i}" for i in range(3000)]
    collection.upsert_vectors(ids, matrix, content=[f"text number {i} word{i}" for i in range(3000)])
    assert triggers(db) == before
    assert fts_ok(collection)
    assert [e.id for e in collection.similar("word1234", mode="keyword")] == ["v1234"]
    # The int8 index took the new rows: it finds a vector's own row first.
    assert quantized.status(collection)["pending"] == 3000
    assert collection.similar_by_vector(matrix[2021], n=1)[0].id == "v2021"
    assert quantized.status(collection)["pending"] == 0
    # Triggers still work for writes made outside embedkit.
    with db.conn:
        db.conn.execute("delete from vecs where id = 'v5'")
    assert fts_ok(collection)


def test_vectors_without_a_model_are_never_reused(db, letters):
    collection = db.create_collection("notes", model="test-letters")
    # Not said to come from the model: kept without a content hash.
    collection.upsert_vectors(["imported"], [[9.0] * 8], content=["hello world"])
    assert db.conn.execute("select content_hash from notes").fetchone()[0] is None
    stats = collection.embed_multi([embedkit.Item("other", "hello world"), embedkit.Item("imported", "hello world")],
                                   store=True)
    # Both are embedded: the imported vector is neither reused nor kept for its own text.
    assert (stats.embedded, stats.reused) == (1, 1)
    assert letters.calls == 1
    assert collection.vector("imported").tolist() == letters.embed(["hello world"])[0].tolist()


def test_vectors_said_to_come_from_the_model_count_as_embedded(db, letters):
    collection = db.create_collection("notes", model="test-letters")
    vector = letters.embed(["hello world"])[0]
    letters.calls = 0
    collection.upsert_vectors(["a"], [vector], content=["hello world"], model="test-letters")
    stats = collection.embed_multi([embedkit.Item("a", "hello world"), embedkit.Item("b", "hello world")], store=True)
    assert (stats.unchanged, stats.reused, stats.embedded) == (1, 1, 0)
    assert letters.calls == 0
    with pytest.raises(EmbedkitError, match="uses model 'test-letters'"):
        collection.upsert_vectors(["c"], [vector], model="all-MiniLM-L6-v2")


def test_a_collection_without_a_model(db):
    collection = db.create_collection("vecs", model=False)
    assert collection.model_id is None
    collection.upsert_vectors(["a", "b"], [[1.0, 0.0], [0.0, 1.0]], content=["red apples", "green pears"])
    assert [e.id for e in collection.similar_by_vector([1.0, 0.1], n=1)] == ["a"]
    assert [e.id for e in collection.similar_by_id("a")] == ["b"]
    assert [e.id for e in collection.similar("pears", mode="keyword")] == ["b"]
    with pytest.raises(EmbedkitError, match="collection 'vecs' has no model"):
        collection.similar("apples")
    with pytest.raises(EmbedkitError, match="collection 'vecs' has no model"):
        collection.embed("c", "text")
    with pytest.raises(EmbedkitError, match="has no model, so its vectors cannot come from"):
        collection.upsert_vectors(["c"], [[1.0, 1.0]], model="test-letters")
    reopened = embedkit.Database(db.path).collection("vecs")
    assert reopened.model_id is None and reopened.dimensions == 2
