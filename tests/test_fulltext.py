"""Keyword search: the FTS5 index, kept in sync whoever writes, BM25 ranking and rank fusion."""

import asyncio
import logging
import math
import shutil
import sqlite3
import subprocess

import pysqlite3.dbapi2 as pysqlite3
import pytest

import embedkit
from embedkit import EmbedkitError, Item, fulltext, migrations, storage

DOCS = [
    ("backup", "Backing up SQLite: copy a live database with the .backup command.", "sqlite"),
    ("fts", "Full-text search: SQLite's FTS5 extension indexes the words of your documents.", "sqlite"),
    ("cafe", "Café crème and a croissant near the Élysée.", "food"),
    ("bread", "Rye bread: rye flour, water and salt. Bread keeps for a week.", "food"),
    ("vec", "sqlite-vec stores vectors next to your rows.", "sqlite"),
    ("cars", "Cars need oil, tyres and a garage.", "other"),
]


@pytest.fixture
def posts(db, letters):
    collection = db.create_collection("posts", model="test-letters")
    collection.embed_multi([Item(id, text, {"tag": tag}) for id, text, tag in DOCS], store=True)
    return collection


def found(collection, text, n=100, *condition):
    return [id for id, _ in fulltext.keyword_top(collection, text, n, *condition)]


def check_integrity(conn, name="posts"):
    """FTS5's own check that the index holds exactly the words of the table's rows: raises if not."""
    fts = storage.quote(fulltext.table_name(name))
    conn.execute(f"insert into {fts} ({fts}, rank) values ('integrity-check', 1)")


def fts_objects(conn, name="posts"):
    return dict(conn.execute(
        "select name, type from sqlite_master where name like ? escape '\\' order by name",
        [fulltext.table_name(name).replace("_", "\\_") + "%"],
    ).fetchall())


# The index


@pytest.mark.datasette
def test_an_external_content_fts5_index_that_datasette_hides(posts, db, db_path):
    assert fts_objects(db.conn) == {
        "_embedkit_posts_fts": "table",  # the FTS5 virtual table
        "_embedkit_posts_fts_ad": "trigger",
        "_embedkit_posts_fts_ai": "trigger",
        "_embedkit_posts_fts_au": "trigger",
        "_embedkit_posts_fts_config": "table",
        "_embedkit_posts_fts_data": "table",
        "_embedkit_posts_fts_docsize": "table",
        "_embedkit_posts_fts_idx": "table",
    }  # and no _content table: the text is not stored twice
    sql, rootpage = db.conn.execute(
        "select sql, rootpage from sqlite_master where name = '_embedkit_posts_fts'"
    ).fetchone()
    assert rootpage == 0 and "using fts5(content, content=\"posts\", content_rowid='rowid'" in sql
    # Triggers are on the collection's table, so they go with it.
    assert {row[0] for row in db.conn.execute(
        "select tbl_name from sqlite_master where type = 'trigger' and name like '%fts%'"
    )} == {"posts"}

    from datasette.app import Datasette

    ds = Datasette([db_path])
    tables = {t["name"]: t for t in asyncio.run(ds.client.get("/embeddings.json")).json()["tables"]}
    for name in fts_objects(db.conn):
        if fts_objects(db.conn)[name] == "table":
            # hidden (Datasette 0.65), or not listed at all (1.0)
            assert tables.get(name, {"hidden": True})["hidden"] is True, name
    # Datasette recognises the index as the collection table's, and offers a search box with it.
    assert tables["posts"]["hidden"] is False and tables["posts"]["fts_table"] == "_embedkit_posts_fts"
    rows = asyncio.run(ds.client.get("/embeddings/posts.json?_search=bread&_shape=array")).json()
    assert [row["id"] for row in rows] == ["bread"]


def test_keyword_top_is_bm25_best_first_with_ties_by_id(db, letters):
    texts = {
        "a": "red apple",
        "b": "red apple",  # the same text as a: the same score, so a comes first
        "c": "red red red apple tree",
        "d": "green pear",
        "e": "yellow banana split",
        "f": "blue sky",
    }
    collection = db.create_collection("fruit", model="test-letters")
    collection.embed_multi([Item(id, text) for id, text in texts.items()], store=True)
    results = fulltext.keyword_top(collection, "red", 10)
    assert [id for id, _ in results] == ["c", "a", "b"]
    assert results[1][1] == results[2][1] and results[0][1] > results[1][1] > 0

    # The score is -bm25() as SQLite's documentation defines it, k1 = 1.2, b = 0.75.
    def bm25(id, words):
        lengths = {key: len(text.split()) for key, text in texts.items()}
        average, total = sum(lengths.values()) / len(texts), 0.0
        for word in words:
            having = sum(word in text.split() for text in texts.values())
            idf = max(math.log((len(texts) - having + 0.5) / (having + 0.5)), 1e-6)
            f = texts[id].split().count(word)
            total += idf * f * 2.2 / (f + 1.2 * (0.25 + 0.75 * lengths[id] / average))
        return total

    for id, score in fulltext.keyword_top(collection, "red apple, pear!", 10):
        assert score == pytest.approx(bm25(id, ["red", "apple", "pear"]), rel=1e-9)
    assert found(collection, "red apple pear") == ["d", "a", "b", "c"]  # pear is the rarest; c is longer
    assert found(collection, "red", 2) == ["c", "a"]
    assert fulltext.keyword_top(collection, "red", 0) == []


def test_case_and_diacritics_are_ignored(posts):
    assert found(posts, "BREAD") == found(posts, "bread") == found(posts, "BrEaD") == ["bread"]
    assert found(posts, "cafe creme") == ["cafe"]
    assert found(posts, "CAFÉ") == found(posts, "elysee") == found(posts, "ÉLYSÉE") == ["cafe"]
    assert found(posts, "fts5") == ["fts"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ('"bread', ["bread"]),
        ('bread"', ["bread"]),
        ('"rye bread"', ["bread"]),
        ("(bread", ["bread"]),
        ("bread)", ["bread"]),
        ("bread AND", ["bread", "cafe", "cars"]),  # "and" is a word like any other
        ("AND bread", ["bread", "cafe", "cars"]),
        ("NOT bread", ["bread"]),
        ("OR", []),
        ("NEAR(bread rye", ["bread", "cafe"]),  # "near" is a word of cafe's text
        ("bread*", ["bread"]),
        ("bre*", []),  # no prefix queries: a word is a word
        ("^bread", ["bread"]),
        ("content: bread", ["bread"]),
        ("{content}: bread -rye", ["bread"]),
        ("bread + cars", ["bread", "cars"]),
        ("sqlite-vec", ["backup", "fts", "vec"]),  # sqlite, vec, and the phrase "sqlite vec"
        ("live-database", ["backup"]),
        ("SQLite's", ["backup", "fts", "vec"]),
        ("it's", ["fts"]),  # the s of SQLite's
        ("\\ ' ` ; -- bread", ["bread"]),
    ],
)
def test_query_text_cannot_be_fts5_syntax(posts, text, expected):
    assert sorted(found(posts, text)) == expected


def test_match_query():
    assert fulltext.match_query('Rye  "bread" rye NEAR( * sqlite-vec café_crème') == (
        '"Rye" OR "bread" OR "NEAR" OR "sqlite-vec" OR "sqlite" OR "vec" OR "café_crème" OR "café" OR "crème"'
    )
    assert fulltext.match_query('a"b') == '"a""b" OR "a" OR "b"'


def test_words_written_together_match_apart_and_rank_higher_together(posts):
    assert found(posts, "sqlite-vec")[0] == "vec"
    assert found(posts, "SQLite's")[0] == "fts"
    assert found(posts, "rye,flour") == ["bread"]
    assert sorted(found(posts, "NEAR(bread*")) == ["bread", "cafe"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "the query text is empty"),
        ("  \n", "the query text is empty"),
        ("*", "the query text '*' has no words to search for (letters or digits)"),
        (' "" () - ', "the query text '\"\" () -' has no words to search for (letters or digits)"),
    ],
)
def test_text_without_words_is_an_error(posts, text, message):
    with pytest.raises(EmbedkitError) as error:
        fulltext.keyword_top(posts, text, 5)
    assert str(error.value) == message


def test_a_collection_without_stored_text(db, letters):
    bare = db.create_collection("bare", model="test-letters")
    bare.embed_multi([Item("a", "some words"), Item("b", "more words")])  # no store=True
    with pytest.raises(EmbedkitError) as error:
        fulltext.keyword_top(bare, "words", 5)
    assert str(error.value) == "collection 'bare' stores no text: keyword search needs embed-multi --store"
    check_integrity(db.conn, "bare")
    # Stored text that does not match is an empty result, not an error.
    bare.embed("c", "other things", store=True)
    assert found(bare, "words") == [] and found(bare, "things") == ["c"]


def test_condition_chooses_the_candidates_before_ranking(db, letters):
    collection = db.create_collection("notes", model="test-letters")
    # The best matches for "bread" are all tagged a; the b ones come last, but there are
    # enough of them to fill n.
    items = [Item(f"a{i}", "bread " * 5 + "x" * i, {"tag": "a"}) for i in range(10)]
    items += [Item(f"b{i}", "bread and a lot of other words " + "y " * i, {"tag": "b", "n": i}) for i in range(5)]
    collection.embed_multi(items, store=True)
    assert found(collection, "bread", 3) == ["a0", "a1", "a2"]
    assert found(collection, "bread", 3, "json_extract(metadata, '$.tag') = ?", ["b"]) == ["b0", "b1", "b2"]
    # Columns need no qualifying: content and id are the collection table's.
    assert found(collection, "bread", 10, "content like ? and id > ?", ["%other%", "b2"]) == ["b3", "b4"]
    assert found(collection, "bread", 3, "json_extract(metadata, '$.n') >= ?", [3]) == ["b3", "b4"]
    assert found(collection, "bread", 5, "1", []) == ["a0", "a1", "a2", "a3", "a4"]
    assert found(collection, "bread", 5, "0", []) == []


# Staying in sync


def expected(collection, word):
    """Brute force: the items whose stored text has the word (ASCII words only)."""
    return sorted(
        entry.id for entry in collection
        if entry.content and word in "".join(c if c.isalnum() else " " for c in entry.content.lower()).split()
    )


def assert_in_sync(collection, words=("bread", "sqlite", "rye", "new", "cars", "tea")):
    check_integrity(collection.db.conn, collection.name)
    for word in words:
        assert sorted(found(collection, word)) == expected(collection, word), word


def test_in_sync_with_embedkit_writes(posts, db):
    assert_in_sync(posts)
    posts.embed_multi([Item("bread", "Tea and rye toast", {"tag": "food"})], store=True)  # new content
    assert found(posts, "bread") == [] and found(posts, "tea") == ["bread"]
    data = db.conn.execute("select * from _embedkit_posts_fts_data order by id").fetchall()
    posts.embed_multi([Item("bread", "Tea and rye toast", {"tag": "drinks"})], store=True)  # metadata only
    # The same text rewritten leaves the index untouched.
    assert db.conn.execute("select * from _embedkit_posts_fts_data order by id").fetchall() == data
    posts.embed_multi([Item("new", "A new SQLite backup", {"tag": "sqlite"})], store=True)
    posts.embed_multi([Item("cars", "Cars need oil, tyres and a garage.", {"tag": "other"})])  # no longer stored
    assert found(posts, "garage") == []
    assert_in_sync(posts)
    posts.delete(["backup", "new"])
    posts.delete_where({"tag": "food"})
    assert_in_sync(posts)
    assert sorted(found(posts, "sqlite")) == ["fts", "vec"]


@pytest.mark.parametrize("module", [sqlite3, pysqlite3], ids=["sqlite3", "pysqlite3"])
def test_in_sync_with_writes_from_any_client(posts, db_path, module):
    conn = module.connect(db_path)
    with conn:
        conn.execute(
            "insert into posts (id, embedding, content, metadata, content_hash, updated) "
            "select 'new', embedding, 'A new SQLite tool', null, 'x', 'now' from posts where id = 'fts'"
        )
        conn.execute("update posts set content = 'Tea, no bread' where id = 'cafe'")
        conn.execute("update posts set content = null where id = 'vec'")
        conn.execute("update posts set metadata = '{}' where id = 'fts'")
        conn.execute("delete from posts where id = 'backup'")
    conn.close()
    assert sorted(found(posts, "bread")) == ["bread", "cafe"]
    assert sorted(found(posts, "sqlite")) == ["fts", "new"]
    assert_in_sync(posts)


def test_in_sync_with_the_sqlite3_shell_and_sqlite_utils(posts, db_path):
    if shutil.which("sqlite3"):
        subprocess.run(
            ["sqlite3", db_path,
             "update posts set content = 'Rye tea' where id = 'cars'; delete from posts where id = 'bread';"],
            check=True,
        )
        assert found(posts, "rye") == ["cars"]
    import sqlite_utils

    table = sqlite_utils.Database(db_path)["posts"]
    blob = table.get("fts")["embedding"]
    table.update("fts", {"content": "Bread in SQLite"})
    table.upsert({**table.get("cafe"), "content": "Rye bread and tea"}, pk="id")
    table.insert({"id": "vec", "embedding": blob, "content": "Tea and bread", "content_hash": "x", "updated": "now"},
                 pk="id", replace=True)  # INSERT OR REPLACE, with sqlite-utils' recursive_triggers on
    table.db.close()
    assert {"cafe", "fts", "vec"} <= set(found(posts, "bread"))
    assert found(posts, "vectors") == [] and found(posts, "croissant") == []
    assert_in_sync(posts)


def test_insert_or_replace_leaves_no_stale_words(posts, db_path, caplog):
    conn = sqlite3.connect(db_path)
    with conn:
        # Without recursive_triggers, the replaced row is deleted without the delete trigger
        # firing: the index keeps its words, which the check notices.
        conn.execute("insert or replace into posts select 'bread', embedding, 'Only tea', null, 'x', 'now' "
                     "from posts where id = 'bread'")
    conn.close()
    with caplog.at_level(logging.WARNING, logger="embedkit"):
        assert found(posts, "rye") == [] and found(posts, "tea") == ["bread"]
    assert "rebuilding the keyword index of collection 'posts'" in caplog.text
    assert_in_sync(posts)


def test_vacuum_after_deletes(posts, db, db_path):
    posts.embed_multi([Item(f"x{i}", f"Bread number {i}") for i in range(20)], store=True)
    posts.delete([f"x{i}" for i in range(0, 20, 3)] + ["backup", "cafe"])
    before = dict(db.conn.execute("select id, rowid from posts"))
    conn = sqlite3.connect(db_path)
    version = conn.execute("pragma schema_version").fetchone()[0]
    conn.execute("vacuum")
    # VACUUM changes the schema version, which makes keyword_top check the index again.
    assert conn.execute("pragma schema_version").fetchone()[0] != version
    conn.close()
    assert_in_sync(posts)
    # SQLite (3.40 and later at least) keeps the rowids of a table with an index; if it did
    # not, the check would have rebuilt the index.
    assert dict(db.conn.execute("select id, rowid from posts")) == before
    posts.embed_multi([Item(f"y{i}", f"Rye bread {i}") for i in range(5)], store=True)
    assert_in_sync(posts)


def test_renumbered_rowids_are_noticed_and_the_index_rebuilt(posts, db, caplog):
    """What VACUUM does to a table without an index or on an older SQLite, or a dump restored."""
    posts.delete(["backup", "cafe"])  # gaps, closed below
    assert found(posts, "bread") == ["bread"]
    triggers = [row[0] for row in db.conn.execute("select sql from sqlite_master where name like '%fts_a_'")]
    assert len(triggers) == 3
    with storage.transaction(db.conn):
        for name in fulltext.trigger_names("posts"):
            db.conn.execute(f"drop trigger {storage.quote(name)}")
        for new, (rowid,) in enumerate(db.conn.execute("select rowid from posts order by rowid").fetchall(), 1):
            db.conn.execute("update posts set rowid = ? where rowid = ?", [new, rowid])
        for sql in triggers:
            db.conn.execute(sql)
    with caplog.at_level(logging.WARNING, logger="embedkit"):
        assert found(posts, "bread") == ["bread"]  # without the check: the item now at bread's old rowid
    assert "the table's rowids have changed" in caplog.text
    assert_in_sync(posts)


@pytest.mark.skipif(not shutil.which("sqlite3"), reason="needs the sqlite3 shell")
def test_a_dump_restored_into_a_new_file(posts, tmp_path, db_path, caplog):
    posts.delete(["backup", "fts"])
    copy = str(tmp_path / "copy.db")
    dump = subprocess.run(["sqlite3", db_path, ".dump"], check=True, capture_output=True, text=True).stdout
    subprocess.run(["sqlite3", copy], input=dump, check=True, text=True)
    with embedkit.Database(copy) as db:
        restored = db.collection("posts")
        assert db.conn.execute("select rowid from posts where id = 'bread'").fetchone()[0] != \
            posts.db.conn.execute("select rowid from posts where id = 'bread'").fetchone()[0]
        with caplog.at_level(logging.WARNING, logger="embedkit"):
            assert found(restored, "bread") == ["bread"]
        assert "rowids have changed" in caplog.text
        assert_in_sync(restored)


def test_the_check_runs_again_only_after_a_change(posts, db, db_path, monkeypatch):
    calls = []
    problem = fulltext.problem
    monkeypatch.setattr(fulltext, "problem", lambda *args: calls.append(args) or problem(*args))
    fulltext.forget(db.key)
    for _ in range(3):
        found(posts, "bread")
    assert len(calls) == 1
    posts.embed("other", "Rye", store=True)
    found(posts, "bread")
    found(posts, "rye")
    assert len(calls) == 2
    conn = sqlite3.connect(db_path)
    conn.execute("vacuum")
    conn.close()
    found(posts, "bread")
    assert len(calls) == 3


def test_a_read_only_connection_cannot_repair_and_says_how(posts, db, db_path):
    db.conn.execute('drop trigger "_embedkit_posts_fts_au"')
    conn = pysqlite3.connect(f"file:{db_path}?mode=ro", uri=True, isolation_level=None)
    readonly = embedkit.Database(conn)
    with pytest.raises(EmbedkitError) as error:
        found(readonly.collection("posts"), "bread")
    assert str(error.value).startswith("the keyword index of collection 'posts' is out of date and cannot be rebuilt here")
    assert str(error.value).endswith(
        """run: insert into "_embedkit_posts_fts" ("_embedkit_posts_fts") values ('rebuild')""")
    conn.close()
    # A writable connection puts the trigger back.
    assert found(posts, "bread") == ["bread"]
    assert "_embedkit_posts_fts_au" in fts_objects(db.conn)


# Creating, deleting, migrating


def test_migration_indexes_the_collections_of_an_older_database(db_path, letters):
    with embedkit.Database(db_path) as db:
        posts = db.create_collection("posts", model="test-letters")
        posts.embed_multi([Item(id, text) for id, text, _ in DOCS], store=True)
        posts.embed("bare", "Bread, not stored")
        db.create_collection("empty", model="test-letters")
    # As embedkit left a database before migration 4.
    conn = sqlite3.connect(db_path)
    with conn:
        for name in ("posts", "empty"):
            for trigger in fulltext.trigger_names(name):
                conn.execute(f"drop trigger {storage.quote(trigger)}")
            conn.execute(f"drop table {storage.quote(fulltext.table_name(name))}")
        conn.execute(f"delete from {migrations.TABLE} where name = 'm004_fulltext'")
    assert [row[0] for row in conn.execute("select name from sqlite_master where name like '%fts%'")] == []
    conn.close()
    with embedkit.Database(db_path) as db:
        assert migrations.applied(db.conn)[-1] == "m004_fulltext"
        for name in ("posts", "empty"):
            assert len(fts_objects(db.conn, name)) == 8
            check_integrity(db.conn, name)
        posts = db.collection("posts")
        assert found(posts, "bread") == ["bread"]
        posts.embed("more", "More bread", store=True)
        assert sorted(found(posts, "bread")) == ["bread", "more"]
        assert_in_sync(posts)


def test_deleting_a_collection_drops_its_index(posts, db, letters):
    db.create_collection("other", model="test-letters").embed("1", "bread", store=True)
    db.delete_collection("posts")
    assert fts_objects(db.conn) == {}
    assert len(fts_objects(db.conn, "other")) == 8
    again = db.create_collection("posts", model="test-letters")
    again.embed("x", "Rye bread", store=True)
    assert found(again, "bread") == ["x"]


def test_collection_names_never_clash(db, letters):
    # With _embedkit_fts_NAME, the index of "posts_data" would be the shadow table of that of
    # "posts", and that of "x_hash" the content_hash index of "fts_x".
    names = ["posts", "posts_data", "posts_idx", "posts_config", "posts_docsize", "posts_fts", "fts_posts",
             "posts_fts_data", "x_hash", "fts_x", "posts_insert"]
    for name in names:
        db.create_collection(name, model="test-letters").embed("1", f"words of {name}", store=True)
    for name in names:
        assert found(db.collection(name), name) == ["1"]
        check_integrity(db.conn, name)


# Fusion


def test_fuse_is_reciprocal_rank_fusion():
    assert fulltext.RRF_K == 60
    fused = fulltext.fuse([["a", "b", "c"], ["c", "a", "d"]])
    assert [id for id, _ in fused] == ["a", "c", "b", "d"]
    assert [score for _, score in fused] == pytest.approx([1 / 61 + 1 / 62, 1 / 63 + 1 / 61, 1 / 62, 1 / 63])
    assert fused[0][1] == pytest.approx(0.0325224748810153)
    # equal scores: by id
    assert fulltext.fuse([["y", "x"], ["x", "y"]]) == [("x", 1 / 61 + 1 / 62), ("y", 1 / 61 + 1 / 62)]
    assert fulltext.fuse([["b"], ["a"]]) == [("a", 1 / 61), ("b", 1 / 61)]
    assert fulltext.fuse([["a", "b"]], k=0) == [("a", 1.0), ("b", 0.5)]
    assert fulltext.fuse([[], []]) == [] and fulltext.fuse([]) == []


def test_keyword_and_vector_rankings_fuse_with_the_real_model(db, minilm):
    collection = db.create_collection("notes")
    collection.embed_multi(
        [
            Item("backup", "How to back up a SQLite database while it is in use"),
            Item("error", "The backup failed with error E4471 after the disk filled up"),
            Item("bread", "A recipe for rye bread with caraway seeds"),
            Item("restore", "Restoring a database from yesterday's copy"),
        ],
        store=True,
    )
    query = "E4471"
    keyword = found(collection, query)
    assert keyword == ["error"]  # an exact code: BM25 finds it, whatever the vectors say
    dense = [entry.id for entry in collection.similar("sqlite backup failed E4471", n=4)]
    fused = fulltext.fuse([dense, keyword])
    assert fused[0][0] == "error" and {id for id, _ in fused} == {"backup", "error", "bread", "restore"}
