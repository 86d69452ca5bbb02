"""The Database and Collection Python API, and what re-running embed_multi costs."""

import json
import math
import re

import numpy as np
import pytest

import embedkit
from conftest import dump
from embedkit import EmbedkitError, Item, models, storage
from embedkit.models.onnx_int8 import int8_model
from embedkit.models.sentence_transformers import default_model


class TableModel(models.EmbeddingModel):
    """A test model that returns the vector its table holds for each text, and records every text."""

    source = "tests"

    def __init__(self, model_id, dimensions):
        super().__init__()
        self.model_id = model_id
        self.dimensions = dimensions
        self.table = {}
        self.texts = []

    def _embed(self, texts):
        self.texts.extend(texts)
        for text in texts:
            if text not in self.table:
                raise RuntimeError(f"test model has no vector for {text!r}")
        return np.array([self.table[text] for text in texts], dtype=np.float32)


@pytest.fixture
def table_model():
    return models.register(TableModel("test-collection-table", 3))


def letters_vector(text):
    text = text.lower()
    return [text.count(c) for c in "aeiou "] + [sum(ch.isdigit() for ch in text), 1]


def items(n, prefix="doc"):
    return [Item(f"{prefix}{i:04d}", f"text number {i} " + "a" * (i % 7)) for i in range(n)]


def registry(db, name):
    cursor = db.conn.execute(f"select * from {storage.REGISTRY} where name = ?", [name])
    columns = [d[0] for d in cursor.description]
    row = cursor.fetchone()
    return dict(zip(columns, row)) if row else None


def stored(db, table, id):
    row = db.conn.execute(
        f"select embedding, content, metadata, content_hash from {storage.quote(table)} where id = ?", [id]
    ).fetchone()
    return dict(zip(["embedding", "content", "metadata", "content_hash"], row)) if row else None


# Creating, finding and deleting collections


def test_create_collection_records_model_dimensions_and_prefixes(db, letters):
    docs = db.create_collection("docs", model="test-letters", query_prefix="query: ", document_prefix="passage: ")
    assert (docs.name, docs.model_id, docs.dimensions) == ("docs", "test-letters", 8)
    assert (docs.query_prefix, docs.document_prefix) == ("query: ", "passage: ")
    row = registry(db, "docs")
    assert row["table_name"] == "docs"
    assert row["model"] == "test-letters"
    assert row["dimensions"] == 8
    assert row["query_prefix"] == "query: "
    assert row["document_prefix"] == "passage: "
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", row["created"])
    assert isinstance(row["version"], int)
    assert len(docs) == 0
    assert letters.calls == 0
    assert repr(docs) == "<Collection docs model=test-letters dimensions=8>"
    # another connection sees the same collection
    with embedkit.Database(db.path) as other:
        again = other.collection("docs")
        assert (again.model_id, again.dimensions, again.query_prefix, again.document_prefix) == (
            "test-letters",
            8,
            "query: ",
            "passage: ",
        )


def test_default_model_is_recorded_without_loading_it(db, monkeypatch):
    fresh, fresh_torch = int8_model(), default_model()
    for model in (fresh, fresh_torch):
        for name in (model.model_id, *model.aliases):
            monkeypatch.setitem(models._registry, name, model)
    docs = db.create_collection("docs")
    assert (docs.model_id, docs.dimensions) == ("all-MiniLM-L6-v2-int8", 384)
    assert registry(db, "docs")["model"] == "all-MiniLM-L6-v2-int8"
    aliased = db.create_collection("aliased", model="sentence-transformers/all-MiniLM-L6-v2")
    assert aliased.model_id == "all-MiniLM-L6-v2"  # the canonical id, not the alias
    assert db.create_collection("onnx", model="all-MiniLM-L6-v2-onnx").model_id == "all-MiniLM-L6-v2-int8"
    assert not fresh.loaded and not fresh_torch.loaded
    assert fresh.calls == fresh_torch.calls == 0


def test_unknown_model_is_an_error_and_creates_nothing(db, db_path):
    before = dump(db_path)
    with pytest.raises(EmbedkitError, match="unknown model 'no-such-model'"):
        db.create_collection("docs", model="no-such-model")
    assert dump(db_path) == before
    assert db.collection_names() == []


def test_create_an_existing_collection_is_an_error(db, letters):
    db.create_collection("docs", model="test-letters")
    with pytest.raises(EmbedkitError, match="collection 'docs' already exists"):
        db.create_collection("docs", model="test-letters")


def test_get_or_create_collection(db, letters, table_model):
    created = db.get_or_create_collection("docs", "test-letters", document_prefix="d: ")
    assert created.document_prefix == "d: "
    created.embed("1", "hello")
    again = db.get_or_create_collection("docs", "test-letters")
    assert len(again) == 1 and again.document_prefix == "d: "
    assert db.get_or_create_collection("docs").model_id == "test-letters"  # no model: whatever it has
    with pytest.raises(EmbedkitError, match="collection 'docs' uses model 'test-letters', not 'test-collection-table'; a collection keeps one model"):
        db.get_or_create_collection("docs", "test-collection-table")
    with pytest.raises(EmbedkitError, match="uses model 'test-letters'"):
        db.get_or_create_collection("docs", "all-MiniLM-L6-v2")
    with pytest.raises(EmbedkitError, match="unknown model"):
        db.get_or_create_collection("docs", "no-such-model")
    assert registry(db, "docs")["model"] == "test-letters"


def test_check_model(db, letters):
    docs = db.create_collection("docs")
    docs.check_model(None)
    docs.check_model("all-MiniLM-L6-v2-int8")
    docs.check_model("all-MiniLM-L6-v2-onnx")  # an alias of the same model
    with pytest.raises(EmbedkitError, match="collection 'docs' uses model 'all-MiniLM-L6-v2-int8', not 'test-letters'"):
        docs.check_model("test-letters")
    # The torch backend of the same weights is another model.
    with pytest.raises(EmbedkitError, match="uses model 'all-MiniLM-L6-v2-int8', not 'all-MiniLM-L6-v2'"):
        docs.check_model("all-MiniLM-L6-v2")


def test_collection_lookup(db, letters):
    with pytest.raises(EmbedkitError, match=r"no collection named 'docs' in .* \(collections: none\)"):
        db.collection("docs")
    db.create_collection("b-docs", model="test-letters")
    db.create_collection("a_docs", model="test-letters")
    assert db.collection_names() == ["a_docs", "b-docs"]
    assert [c.name for c in db.collections()] == ["a_docs", "b-docs"]
    assert db.has_collection("a_docs") and not db.has_collection("docs")
    with pytest.raises(EmbedkitError, match=r"no collection named 'docs' .*\(collections: a_docs, b-docs\)"):
        db.collection("docs")


def test_a_database_without_collections_has_no_tables(db_path):
    with embedkit.Database(db_path) as db:
        assert db.collections() == []
        assert db.path.endswith("embeddings.db")
    with embedkit.Database(db_path) as db:
        assert db.conn.execute("select count(*) from sqlite_master").fetchone()[0] == 0


def test_delete_collection(db, letters):
    docs = db.create_collection("my-docs", model="test-letters")
    docs.embed_multi(items(5))
    db.create_collection("keep", model="test-letters").embed("1", "kept")
    db.delete_collection("my-docs")
    assert db.collection_names() == ["keep"]
    # table, index and triggers are gone; nothing of it is left in the schema
    leftovers = db.conn.execute("select type, name from sqlite_master where name like '%my-docs%'").fetchall()
    assert leftovers == []
    assert registry(db, "my-docs") is None
    with pytest.raises(EmbedkitError, match="no collection named 'my-docs'"):
        db.delete_collection("my-docs")
    # the name can be used again, and starts empty
    again = db.create_collection("my-docs", model="test-letters")
    assert len(again) == 0
    assert len(db.collection("keep")) == 1


VALID_NAMES = ["docs", "my-docs", "Docs_2", "9lives", "_private", "a", "x" * 64, "select", "order-by", "a--b"]
INVALID_NAMES = [
    "",
    "sqlite_x",
    "SQLite_stat1",
    "_embedkit_x",
    "_EMBEDKIT_collections",
    "_embedkit",
    "bad name",
    'a"b',
    "a'b",
    "a;b",
    "a.b",
    "a/b",
    "-docs",
    "x" * 65,
    "naïve",
    "tab\tname",
    "line\n",
    None,
    42,
]


@pytest.mark.parametrize("name", VALID_NAMES)
def test_valid_names_work_everywhere(db, letters, name):
    docs = db.create_collection(name, model="test-letters")
    stats = docs.embed_multi([Item("1", "aaa"), Item("2", "eee"), Item("3", "aa e")], store=True)
    assert stats.embedded == 3
    assert [e.id for e in docs.similar("a", 2)] == ["1", "3"]
    assert [e.id for e in docs.similar("a", 2)] == ["1", "3"]  # the cached path too
    assert docs.get("2").content == "eee"
    assert docs.delete(["2"]) == 1
    assert [e.id for e in docs] == ["1", "3"]
    # the triggers keep the version counter of exactly this collection
    before = docs.version()
    db.conn.execute(f"update {storage.quote(name)} set metadata = '{{}}'")
    assert docs.version() == before + 2
    db.delete_collection(name)
    assert not db.has_collection(name)


@pytest.mark.parametrize("name", INVALID_NAMES)
def test_invalid_names_are_rejected_before_anything_is_written(db, db_path, letters, name):
    before = dump(db_path)
    with pytest.raises(EmbedkitError, match="invalid collection name"):
        db.create_collection(name, model="test-letters")
    with pytest.raises(EmbedkitError, match="invalid collection name"):
        db.get_or_create_collection(name, model="test-letters")
    assert dump(db_path) == before


@pytest.mark.parametrize(
    "existing",
    [
        "create table things (id integer primary key, body text)",
        "create view things as select 1 as x",
        "create table Things (x)",
        "create table other (x); create index things on other (x)",
    ],
)
def test_a_name_taken_by_something_else_is_an_error(db, db_path, letters, existing):
    db.conn.executescript(existing)
    before = dump(db_path)
    with pytest.raises(EmbedkitError, match="(?i)'things' is already the name of an existing (table|view|index) in .*, not a collection"):
        db.create_collection("things", model="test-letters")
    assert dump(db_path) == before
    assert db.collection_names() == []


def test_names_differing_only_in_case_are_one_collection_to_sqlite(db, letters):
    db.create_collection("Docs", model="test-letters").embed("1", "aaa")
    with pytest.raises(EmbedkitError, match="'Docs'"):
        db.create_collection("docs", model="test-letters")
    assert db.collection_names() == ["Docs"]
    assert len(db.collection("Docs")) == 1


# Reading items


def test_count_len_iteration_get_vector_contains(db, letters):
    docs = db.create_collection("docs", model="test-letters")
    docs.embed_multi(
        [
            Item("b", "Hello world 42", {"kind": "greeting", "n": 1}),
            Item("a", "aeiou"),
            Item("c", "ccc ddd", {"nested": {"x": [1, 2]}}),
        ],
        store=True,
    )
    docs.embed("d", "not stored")
    assert docs.count() == len(docs) == 4
    entries = list(docs)
    assert [e.id for e in entries] == ["a", "b", "c", "d"]  # id order
    assert all(e.score is None for e in entries)
    assert entries[1].content == "Hello world 42"
    assert entries[1].metadata == {"kind": "greeting", "n": 1}
    assert entries[2].metadata == {"nested": {"x": [1, 2]}}
    assert entries[3].content is None and entries[3].metadata is None
    assert docs.get("b") == entries[1]
    assert docs.get("b").to_dict() == {
        "id": "b",
        "score": None,
        "content": "Hello world 42",
        "metadata": {"kind": "greeting", "n": 1},
    }
    assert docs.vector("b").tolist() == [0, 1, 0, 2, 0, 2, 2, 1]
    assert docs.vector("a").dtype == np.dtype("<f4")
    assert "a" in docs and "d" in docs
    assert "z" not in docs and "" not in docs
    assert docs.vector("z", missing_ok=True) is None
    with pytest.raises(EmbedkitError, match="no item with id 'z' in collection 'docs'"):
        docs.get("z")
    with pytest.raises(EmbedkitError, match="no item with id 'z' in collection 'docs'"):
        docs.vector("z")


def test_delete(db, letters):
    docs = db.create_collection("docs", model="test-letters")
    docs.embed_multi(items(1200))
    assert docs.delete("doc0000") == 1
    assert docs.delete("doc0000") == 0
    assert docs.delete(["doc0001", "missing", "doc0002"]) == 2
    assert docs.delete([]) == 0
    # more ids than one IN (...) chunk holds
    assert docs.delete([f"doc{i:04d}" for i in range(3, 1103)] + ["nope"] * 10) == 1100
    assert len(docs) == 1200 - 1103
    assert "doc1103" in docs and "doc1102" not in docs


# Embedding and re-running


def test_first_run_embeds_in_batches(db, letters):
    docs = db.create_collection("docs", model="test-letters")
    done = []
    stats = docs.embed_multi(items(250), batch_size=100, progress=lambda n, total: done.append((n, total)))
    assert (stats.embedded, stats.reused, stats.updated, stats.unchanged, stats.failed) == (250, 0, 0, 0, 0)
    assert stats.summary() == "250 embedded, 0 reused, 0 updated, 0 unchanged, 0 failed"
    assert letters.calls == 3
    assert sum(n for n, _ in done) == 250
    assert {total for _, total in done} == {250}
    assert len(docs) == 250
    for item in items(250)[::37]:
        assert docs.vector(item.id).tolist() == letters_vector(item.content)
        assert stored(db, "docs", item.id)["content"] is None  # not stored unless asked


@pytest.mark.parametrize("store", [False, True])
def test_rerun_with_the_same_input_calls_no_model_and_writes_nothing(db, db_path, letters, store):
    docs = db.create_collection("docs", model="test-letters")
    batch = [Item(i.id, i.content, {"i": n}) for n, i in enumerate(items(120))]
    docs.embed_multi(batch, store=store, batch_size=50)
    assert letters.calls == 3
    letters.calls = 0
    version, before = docs.version(), dump(db_path)
    stats = docs.embed_multi(batch, store=store, batch_size=50)
    assert letters.calls == 0
    assert stats.unchanged == 120
    assert stats.summary() == "0 embedded, 0 reused, 0 updated, 120 unchanged, 0 failed"
    assert dump(db_path) == before  # not even the `updated` timestamps
    assert docs.version() == version
    # a fresh connection (another process, say) sees the same: nothing to do
    with embedkit.Database(db_path) as other:
        assert other.collection("docs").embed_multi(batch, store=store).unchanged == 120
    assert letters.calls == 0


def test_metadata_in_another_key_order_is_unchanged(db, letters):
    docs = db.create_collection("docs", model="test-letters")
    docs.embed("1", "aaa", {"a": 1, "b": [1, 2]})
    stats = docs.embed("1", "aaa", {"b": [1, 2], "a": 1})
    assert stats.unchanged == 1 and letters.calls == 1


def test_changed_content_is_re_embedded_and_replaced(db, letters):
    docs = db.create_collection("docs", model="test-letters")
    docs.embed_multi([Item("1", "aaa", {"v": 1}), Item("2", "eee")], store=True)
    old = stored(db, "docs", "1")
    letters.calls = 0
    stats = docs.embed_multi([Item("1", "ooo o", {"v": 2}), Item("2", "eee")], store=True)
    assert (stats.embedded, stats.unchanged, stats.updated, stats.reused) == (1, 1, 0, 0)
    assert letters.calls == 1
    new = stored(db, "docs", "1")
    assert docs.vector("1").tolist() == letters_vector("ooo o")
    assert new["content"] == "ooo o" and json.loads(new["metadata"]) == {"v": 2}
    assert new["content_hash"] != old["content_hash"]
    assert len(docs) == 2


@pytest.mark.parametrize(
    "first, second",
    [
        ({"metadata": {"v": 1}}, {"metadata": {"v": 2}}),
        ({"metadata": {"v": 1}}, {"metadata": None}),
        ({"metadata": None}, {"metadata": {"new": True}}),
        ({"store": False}, {"store": True}),
        ({"store": True}, {"store": False}),
        ({"store": False, "metadata": None}, {"store": True, "metadata": {"both": "changed"}}),
    ],
)
def test_changed_metadata_or_store_updates_without_a_model_call(db, letters, first, second):
    docs = db.create_collection("docs", model="test-letters")
    docs.embed("1", "aaa eee", first.get("metadata"), store=first.get("store", False))
    docs.embed("2", "unrelated")
    before = stored(db, "docs", "1")
    letters.calls = 0
    stats = docs.embed("1", "aaa eee", second.get("metadata"), store=second.get("store", False))
    assert letters.calls == 0
    assert (stats.updated, stats.embedded, stats.reused, stats.unchanged) == (1, 0, 0, 0)
    after = stored(db, "docs", "1")
    assert after["embedding"] == before["embedding"]
    assert after["content_hash"] == before["content_hash"]
    assert after["content"] == ("aaa eee" if second.get("store") else None)
    assert docs.get("1").metadata == second.get("metadata")
    # and running it once more changes nothing
    assert docs.embed("1", "aaa eee", second.get("metadata"), store=second.get("store", False)).unchanged == 1
    assert letters.calls == 0


def test_same_content_under_a_new_id_reuses_the_vector(db, letters):
    docs = db.create_collection("docs", model="test-letters")
    docs.embed_multi([Item("1", "Hello world 42", {"from": "one"})])
    letters.calls = 0
    stats = docs.embed_multi([Item("copy", "Hello world 42", {"from": "copy"})], store=True)
    assert letters.calls == 0
    assert (stats.reused, stats.embedded) == (1, 0)
    assert stored(db, "docs", "copy")["embedding"] == stored(db, "docs", "1")["embedding"]
    assert docs.get("copy").content == "Hello world 42"
    assert docs.get("copy").metadata == {"from": "copy"}


def test_content_moving_between_ids_reuses_vectors(db, letters):
    docs = db.create_collection("docs", model="test-letters")
    docs.embed_multi([Item("1", "aaa"), Item("2", "eee")])
    letters.calls = 0
    # the contents swap ids: both vectors exist already
    stats = docs.embed_multi([Item("1", "eee"), Item("2", "aaa")])
    assert letters.calls == 0
    assert stats.reused == 2
    assert docs.vector("1").tolist() == letters_vector("eee")
    assert docs.vector("2").tolist() == letters_vector("aaa")


def test_duplicate_content_within_one_input_is_embedded_once(db, letters):
    docs = db.create_collection("docs", model="test-letters")
    batch = [Item("1", "same text"), Item("2", "other"), Item("3", "same text"), Item("4", "same text")]
    stats = docs.embed_multi(batch, batch_size=1)
    assert letters.calls == 2  # one call per distinct content, batch size 1
    assert (stats.embedded, stats.reused) == (2, 2)
    assert stats.summary() == "2 embedded, 2 reused, 0 updated, 0 unchanged, 0 failed"
    assert docs.vector("1").tolist() == docs.vector("3").tolist() == docs.vector("4").tolist()
    assert len(docs) == 4


def test_duplicate_ids_in_the_input_are_an_error_and_nothing_is_written(db, db_path, letters):
    docs = db.create_collection("docs", model="test-letters")
    docs.embed("0", "already here")
    letters.calls = 0
    before = dump(db_path)
    with pytest.raises(EmbedkitError, match="duplicate id '2' in the input"):
        docs.embed_multi([Item("1", "a"), Item("2", "b"), Item("3", "c"), Item("2", "d")])
    assert letters.calls == 0
    assert dump(db_path) == before


def test_empty_content_fails_that_item_and_stores_the_others(db, letters):
    docs = db.create_collection("docs", model="test-letters")
    stats = docs.embed_multi(
        [Item("1", "fine"), Item("2", ""), Item("3", "  \n\t"), Item("4", None), Item("5", "also fine")]
    )
    assert (stats.embedded, stats.failed) == (2, 3)
    assert stats.failures == [("2", "empty content"), ("3", "empty content"), ("4", "empty content")]
    assert stats.summary() == "2 embedded, 0 reused, 0 updated, 0 unchanged, 3 failed"
    assert [e.id for e in docs] == ["1", "5"]


def test_embed_stats_summary():
    stats = embedkit.EmbedStats(embedded=3, reused=2, updated=1, unchanged=7)
    stats.fail("x", "empty content")
    assert stats.summary() == "3 embedded, 2 reused, 1 updated, 7 unchanged, 1 failed"
    assert stats.failures == [("x", "empty content")]


def test_batch_size_must_be_positive(db, letters):
    docs = db.create_collection("docs", model="test-letters")
    with pytest.raises(EmbedkitError, match="batch size must be at least 1"):
        docs.embed_multi(items(3), batch_size=0)
    assert len(docs) == 0 and letters.calls == 0


def test_document_prefix_is_embedded_but_not_stored(db, letters):
    docs = db.create_collection("docs", model="test-letters", document_prefix="aaa ")
    docs.embed("1", "eee", store=True)
    assert docs.vector("1").tolist() == letters_vector("aaa eee") == [3, 3, 0, 0, 0, 1, 0, 1]
    assert docs.get("1").content == "eee"
    # the prefix is not part of the content identity: the same text elsewhere reuses the vector
    letters.calls = 0
    assert docs.embed("2", "eee").reused == 1 and letters.calls == 0


def test_query_prefix_is_applied_to_queries_only(db, letters):
    docs = db.create_collection("docs", model="test-letters", query_prefix="ooo ")
    docs.embed_multi([Item("a", "aaaa"), Item("o", "oooo"), Item("e", "eeee")])
    assert docs.vector("a").tolist() == letters_vector("aaaa")  # documents are not prefixed
    [best, *_] = docs.similar("aaaa", 3)
    query = np.array(letters_vector("ooo aaaa"), dtype=np.float64)
    expected = {
        id: float(query @ np.array(letters_vector(text)) / (np.linalg.norm(query) * np.linalg.norm(letters_vector(text))))
        for id, text in [("a", "aaaa"), ("o", "oooo"), ("e", "eeee")]
    }
    results = docs.similar("aaaa", 3)
    assert [(e.id, pytest.approx(e.score, abs=1e-6)) for e in results] == sorted(
        expected.items(), key=lambda kv: (-kv[1], kv[0])
    )
    # without the prefix "aaaa" would match "a" perfectly
    assert best.score < 0.99
    assert docs.similar_by_vector(letters_vector("aaaa"), 1)[0].score == pytest.approx(1.0)


def test_wrong_dimensions_are_rejected_and_nothing_is_written(db, db_path, table_model):
    docs = db.create_collection("docs", model="test-collection-table")
    table_model.table.update({"good": [1, 0, 0], "long": [1, 2, 3, 4], "wide": [0, 1, 0, 0]})
    docs.embed("0", "good")
    before = dump(db_path)
    with pytest.raises(EmbedkitError, match="the vector for 'long' has 4 dimensions, expected 3"):
        docs.embed_multi([Item("1", "long"), Item("2", "wide")])
    assert dump(db_path) == before


@pytest.mark.parametrize(
    "vector, message",
    [([0, 0, 0], "the vector for 'bad' is all zeros"), ([1, math.nan, 0], "the vector for 'bad' contains NaN")],
)
def test_vectors_that_cannot_be_compared_are_rejected(db, db_path, table_model, vector, message):
    docs = db.create_collection("docs", model="test-collection-table")
    table_model.table.update({"good": [1, 0, 0], "bad": vector})
    before = dump(db_path)
    with pytest.raises(EmbedkitError, match=message):
        docs.embed_multi([Item("1", "good"), Item("2", "bad")])
    assert dump(db_path) == before
    assert len(docs) == 0


def test_a_failed_batch_keeps_earlier_batches_and_a_rerun_completes(db, table_model):
    docs = db.create_collection("docs", model="test-collection-table")
    texts = [f"t{i:02d}" for i in range(30)]
    table_model.table.update({t: [1, i, 0] for i, t in enumerate(texts)})
    del table_model.table["t05"]
    with pytest.raises(RuntimeError, match="no vector for 't05'"):
        docs.embed_multi([Item(t, t) for t in texts], batch_size=10)
    # batches are committed one by one: whole batches are stored, the failed one not at all
    count = len(docs)
    assert count % 10 == 0 and 0 <= count < 30
    table_model.table["t05"] = [1, 5, 0]
    table_model.texts.clear()
    stats = docs.embed_multi([Item(t, t) for t in texts], batch_size=10)
    assert (stats.embedded, stats.unchanged) == (30 - count, count)
    assert len(table_model.texts) == 30 - count
    assert len(docs) == 30
    assert docs.vector("t05").tolist() == [1, 5, 0]


def test_a_model_that_knows_its_dimensions_only_once_used(db, db_path):
    model = models.register(TableModel("test-collection-lazy", None))
    model.table.update({"one": [1, 2], "two": [2, 1], "three": [1, 2, 3]})
    docs = db.create_collection("docs", model="test-collection-lazy")
    # creating the collection asks the model nothing: the first vector sets the dimensions
    assert docs.dimensions is None and registry(db, "docs")["dimensions"] is None
    assert model.calls == 0
    assert docs.similar_by_vector([1, 2], 3) == [] and docs.similar_by_vector([1, 2], 3) == []
    docs.embed_multi([Item("1", "one"), Item("2", "two")])
    assert docs.dimensions == 2 and registry(db, "docs")["dimensions"] == 2
    with embedkit.Database(db_path) as other:
        assert other.collection("docs").dimensions == 2
    with pytest.raises(EmbedkitError, match="has 3 dimensions, expected 2"):
        docs.embed("3", "three")
    assert [e.id for e in docs.similar_by_vector([1, 2], 1)] == ["1"]


# The real model: unchanged input never loads it


def test_rerun_with_the_real_model_never_loads_it(db_path, minilm, monkeypatch):
    texts = {
        "cat": "The cat sat on the mat.",
        "dog": "A dog barked at the postman.",
        "tax": "File your taxes before the deadline.",
        "sea": "Waves broke against the harbour wall.",
        "code": "Python functions return None by default.",
    }
    batch = [Item(id, text, {"len": len(text)}) for id, text in texts.items()]
    with embedkit.Database(db_path) as db:
        docs = db.create_collection("docs")
        calls = minilm.calls
        stats = docs.embed_multi(batch, store=True)
        assert stats.embedded == 5
        assert minilm.calls == calls + 1
        assert docs.vector("cat").shape == (384,)
        assert docs.similar("a kitten on a rug", 1)[0].id == "cat"
        calls = minilm.calls
        assert docs.embed_multi(batch, store=True).unchanged == 5
        assert minilm.calls == calls

    # As a new process would: a model object that has never been loaded.
    fresh = int8_model()
    monkeypatch.setitem(models._registry, "all-MiniLM-L6-v2-int8", fresh)
    with embedkit.Database(db_path) as db:
        docs = db.get_or_create_collection("docs", "all-MiniLM-L6-v2-int8")
        assert docs.embed_multi(batch, store=True).unchanged == 5
        stats = docs.embed_multi(
            [Item("cat", texts["cat"], {"changed": True}), Item("cat-copy", texts["cat"])], store=False
        )
        assert (stats.updated, stats.reused, stats.embedded) == (1, 1, 0)
        hits = docs.similar_by_id("cat", 6)
        assert [e.id for e in hits][0] == "cat-copy" and "cat" not in [e.id for e in hits]
        assert len(hits) == 5
        assert hits[0].score == pytest.approx(1.0, abs=1e-6)
        docs.delete("cat-copy")
        assert len(docs) == 5
    assert not fresh.loaded
    assert fresh.calls == 0
