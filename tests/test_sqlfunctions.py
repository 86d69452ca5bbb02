"""The embedkit_* SQL functions on stdlib sqlite3, pysqlite3 and sqlite-utils connections."""

import json
import sqlite3
import struct

import numpy as np
import pysqlite3.dbapi2 as pysqlite3
import pytest
import sqlite_utils

import embedkit
from embedkit.sqlfunctions import explain


def blob(*values):
    return struct.pack("<" + "f" * len(values), *values)


def floats(data):
    return list(struct.unpack("<" + "f" * (len(data) // 4), data))


class Conn:
    """One kind of connection, with the error class its SQL raises."""

    def __init__(self, kind, path):
        self.kind = kind
        if kind == "sqlite3":
            self.target = self.raw = sqlite3.connect(path)
            self.error = sqlite3.OperationalError
        elif kind == "pysqlite3":
            self.target = self.raw = pysqlite3.connect(path)
            self.error = pysqlite3.OperationalError
        elif kind == "sqlite_utils":
            self.target = sqlite_utils.Database(path)
            self.raw = self.target.conn
            assert type(self.raw).__module__ == "pysqlite3.dbapi2"  # sqlite-utils prefers pysqlite3
            self.error = pysqlite3.OperationalError
        elif kind == "sqlite_utils+sqlite3":
            self.raw = sqlite3.connect(path)
            self.target = sqlite_utils.Database(self.raw)
            self.error = sqlite3.OperationalError

    def value(self, sql, params=()):
        """The single value a query returns, run the way each library's users run SQL."""
        return self.target.execute(sql, params).fetchone()[0]


KINDS = ["sqlite3", "pysqlite3", "sqlite_utils", "sqlite_utils+sqlite3"]


@pytest.fixture(params=KINDS)
def conn(request, tmp_path, letters):
    connection = Conn(request.param, str(tmp_path / "functions.db"))
    embedkit.register_functions(connection.target)
    yield connection
    connection.raw.close()


def test_registers_on_every_connection_kind(conn):
    names = {
        row[0] for row in conn.raw.execute("select name from pragma_function_list where name like 'embedkit_%'")
    }
    assert names == {
        "embedkit_cosine",
        "embedkit_decode",
        "embedkit_encode",
        "embedkit_dims",
        "embedkit_embed",
        "embedkit_query",
        "embedkit_centroid",
    }


def test_cosine(conn):
    assert conn.value("select embedkit_cosine(?, ?)", [blob(1, 0), blob(1, 0)]) == pytest.approx(1.0)
    assert conn.value("select embedkit_cosine(?, ?)", [blob(1, 0), blob(0, 1)]) == pytest.approx(0.0)
    assert conn.value("select embedkit_cosine(?, ?)", [blob(3, 4), blob(4, 3)]) == pytest.approx(0.96)
    assert conn.value("select embedkit_cosine(?, ?)", [blob(1, 2), blob(-2, -4)]) == pytest.approx(-1.0)


def test_decode_encode_dims(conn):
    assert json.loads(conn.value("select embedkit_decode(?)", [blob(1.5, -2, 0.25)])) == [1.5, -2.0, 0.25]
    assert conn.value("select embedkit_encode('[1.5, -2, 0.25]')") == blob(1.5, -2, 0.25)
    assert conn.value("select embedkit_dims(?)", [blob(1, 2, 3, 4, 5)]) == 5
    assert conn.value("select embedkit_dims(embedkit_encode('[0.1, 0.2]'))") == 2
    # encode ∘ decode is the identity on BLOBs, bit for bit
    values = np.random.default_rng(5).standard_normal(384).astype("<f4").tobytes()
    assert conn.value("select embedkit_encode(embedkit_decode(?))", [values]) == values


def test_embed_with_a_named_model_gives_exact_vectors(conn, letters):
    # test-letters counts a, e, i, o, u, spaces, digits, then a constant 1
    assert floats(conn.value("select embedkit_embed('test-letters', 'Hello world 42')")) == [0, 1, 0, 2, 0, 2, 2, 1]
    assert floats(conn.value("select embedkit_embed('test-letters', ?)", ["AEIOU aeiou"])) == [2, 2, 2, 2, 2, 1, 0, 1]
    assert conn.value("select embedkit_dims(embedkit_embed('test-letters', 'x'))") == 8
    assert letters.calls == 3
    assert conn.value(
        "select embedkit_cosine(embedkit_embed('test-letters', 'aaa'), embedkit_embed('test-letters', 'a'))"
    ) == pytest.approx(np.dot([3, 1], [1, 1]) / (np.sqrt(10) * np.sqrt(2)))


def test_embed_with_the_default_model(conn, minilm):
    data = conn.value("select embedkit_embed('a cat sat on the mat')")
    assert len(data) == 384 * 4
    expected = minilm.embed(["a cat sat on the mat"])[0]
    assert np.allclose(np.frombuffer(data, dtype="<f4"), expected, atol=1e-6)
    # the alias names the same model
    aliased = conn.value("select embedkit_embed('all-MiniLM-L6-v2-onnx', 'a cat sat on the mat')")
    assert np.allclose(np.frombuffer(aliased, dtype="<f4"), expected, atol=1e-6)
    assert conn.value(
        "select embedkit_cosine(?, embedkit_embed('a kitten on a rug')) > embedkit_cosine(?, embedkit_embed('quarterly tax filing'))",
        [data, data],
    ) == 1


def test_query_embeds_with_the_collections_model_and_query_prefix(db_path, letters):
    with embedkit.Database(db_path) as db:
        db.create_collection("docs", model="test-letters", query_prefix="111 ")
        # the prefix's three digits and a space are in the vector
        assert floats(db.conn.execute("select embedkit_query('docs', 'aa')").fetchone()[0]) == [2, 0, 0, 0, 0, 1, 3, 1]
        with pytest.raises(db.sqlite_error) as info:
            db.conn.execute("select embedkit_query('nope', 'aa')")
        assert explain(info.value) == "embedkit_query: no collection named 'nope'"


def test_text_length_can_be_bounded(tmp_path, letters):
    conn = sqlite3.connect(str(tmp_path / "bounded.db"))
    embedkit.register_functions(conn, max_chars=5)
    assert floats(conn.execute("select embedkit_embed('test-letters', 'aaaaa')").fetchone()[0])[0] == 5
    for sql in ("select embedkit_embed('test-letters', 'aaaaaa')", "select embedkit_embed('aaaaaa')"):
        with pytest.raises(sqlite3.OperationalError) as info:
            conn.execute(sql)
        assert explain(info.value) == "embedkit_embed: text is 6 characters; at most 5 may be embedded here"
    # an embedkit.Database on that connection keeps the bounded functions
    embedkit.Database(conn)
    with pytest.raises(sqlite3.OperationalError):
        conn.execute("select embedkit_embed('test-letters', 'aaaaaa')")
    conn.close()


def test_centroid_is_the_exact_mean(conn):
    conn.raw.execute("create table v (grp text, embedding blob)")
    conn.raw.executemany(
        "insert into v values (?, ?)",
        [("a", blob(1, 2, 3)), ("a", blob(3, 4, 5)), ("a", blob(2, 0, -5)), ("b", blob(0.5, 0.5, 0.5))],
    )
    assert floats(conn.value("select embedkit_centroid(embedding) from v where grp = 'a'")) == [2, 2, 1]
    assert floats(conn.value("select embedkit_centroid(embedding) from v where grp = 'b'")) == [0.5, 0.5, 0.5]
    assert floats(conn.value("select embedkit_centroid(embedding) from v")) == [1.625, 1.625, 0.875]
    rows = conn.raw.execute("select grp, embedkit_decode(embedkit_centroid(embedding)) from v group by grp order by grp").fetchall()
    assert [(g, json.loads(c)) for g, c in rows] == [("a", [2.0, 2.0, 1.0]), ("b", [0.5, 0.5, 0.5])]
    # no rows: NULL, like avg()
    assert conn.value("select embedkit_centroid(embedding) from v where grp = 'none'") is None


def test_centroid_of_float32_values_is_computed_in_double_precision(conn):
    values = np.random.default_rng(9).standard_normal((50, 16)).astype("<f4")
    conn.raw.execute("create table v (embedding blob)")
    conn.raw.executemany("insert into v values (?)", [(row.tobytes(),) for row in values])
    expected = values.astype(np.float64).mean(axis=0).astype("<f4").tobytes()
    assert conn.value("select embedkit_centroid(embedding) from v") == expected


BAD_CALLS = [
    ("select embedkit_cosine(?, ?)", [blob(1, 2), blob(1, 2, 3)], "embedkit_cosine: dimension mismatch: 2 vs 3"),
    ("select embedkit_cosine(?, ?)", [blob(0, 0), blob(1, 2)], "embedkit_cosine: cosine similarity is undefined for a zero vector"),
    ("select embedkit_cosine(null, ?)", [blob(1, 2)], "embedkit_cosine: vector is NULL"),
    ("select embedkit_cosine(?, ?)", [b"\x00\x00\x80", blob(1)], "embedkit_cosine: a float32 vector BLOB needs a positive multiple of 4 bytes, got 3"),
    ("select embedkit_decode(?)", [b"\x00" * 6], "embedkit_decode: a float32 vector BLOB needs a positive multiple of 4 bytes, got 6"),
    ("select embedkit_decode(null)", [], "embedkit_decode: vector is NULL"),
    ("select embedkit_decode('[1, 2]')", [], "embedkit_decode: vector must be a BLOB, got str"),
    ("select embedkit_dims(x'')", [], "embedkit_dims: a float32 vector BLOB needs a positive multiple of 4 bytes, got 0"),
    ("select embedkit_dims(42)", [], "embedkit_dims: vector must be a BLOB, got int"),
    ("select embedkit_encode('[1, 2')", [], "embedkit_encode: not a JSON array of numbers"),
    ("select embedkit_encode('[]')", [], "embedkit_encode: not a JSON array of numbers"),
    ("select embedkit_encode('[1, \"x\"]')", [], "embedkit_encode: not a JSON array of numbers"),
    ("select embedkit_encode(null)", [], "embedkit_encode: not a JSON array of numbers"),
    ("select embedkit_embed('test-letters', '   ')", [], "embedkit_embed: needs non-empty text"),
    ("select embedkit_embed('test-letters', null)", [], "embedkit_embed: needs non-empty text"),
    ("select embedkit_embed('no-such-model', 'hi')", [], "embedkit_embed: unknown model 'no-such-model'"),
    ("select embedkit_embed()", [], "embedkit_embed: takes (text) or (model, text)"),
    ("select embedkit_embed('a', 'b', 'c')", [], "embedkit_embed: takes (text) or (model, text)"),
    ("select embedkit_query('posts', 'hi')", [], "embedkit_query: no collection named 'posts'"),
    ("select embedkit_query('posts', '')", [], "embedkit_query: needs non-empty text"),
]


@pytest.mark.parametrize("sql, params, message", BAD_CALLS)
def test_bad_input_is_a_real_sql_error_with_a_clear_explanation(conn, sql, params, message):
    with pytest.raises(conn.error) as info:
        conn.value(sql, params)
    assert explain(info.value).startswith(message)


@pytest.mark.parametrize(
    "rows, message",
    [
        ([blob(1, 2), blob(1, 2, 3)], "embedkit_centroid: dimension mismatch: 2 vs 3"),
        ([blob(1, 2), None], "embedkit_centroid: vector is NULL"),
        ([blob(1, 2), b"\x01\x02"], "embedkit_centroid: a float32 vector BLOB needs a positive multiple of 4 bytes, got 2"),
        ([blob(1, 2), "[1, 2]"], "embedkit_centroid: vector must be a BLOB, got str"),
    ],
)
def test_centroid_bad_input_is_a_real_sql_error(conn, rows, message):
    conn.raw.execute("create table v (n integer, embedding)")
    conn.raw.executemany("insert into v values (?, ?)", list(enumerate(rows)))
    with pytest.raises(conn.error) as info:
        conn.value("select embedkit_centroid(embedding) from (select embedding from v order by n)")
    assert explain(info.value) == message


def test_explain_passes_other_errors_through(conn):
    with pytest.raises(conn.error) as info:
        conn.value("select embedkit_cosine(? ,", [blob(1)])
    assert "syntax error" in explain(info.value) or "incomplete input" in explain(info.value)
    with pytest.raises(conn.error) as info:
        conn.value("select * from no_such_table")
    assert explain(info.value) == "no such table: no_such_table"


def test_a_database_registers_the_functions_itself(db_path, letters):
    db = embedkit.Database(db_path)
    docs = db.create_collection("docs", model="test-letters")
    docs.embed_multi(
        [embedkit.Item("1", "aaa"), embedkit.Item("2", "eee"), embedkit.Item("3", "a e")], store=True
    )
    rows = db.conn.execute(
        """
        select id, embedkit_cosine(embedding, embedkit_embed('test-letters', 'a')) as score
        from docs order by score desc, id
        """
    ).fetchall()
    assert [id for id, _ in rows] == ["1", "3", "2"]
    assert rows[0][1] == pytest.approx((3 + 1) / (np.sqrt(10) * np.sqrt(2)))
    centroid = db.conn.execute("select embedkit_decode(embedkit_centroid(embedding)) from docs").fetchone()[0]
    assert json.loads(centroid) == pytest.approx([4 / 3, 4 / 3, 0, 0, 0, 1 / 3, 0, 1])
    # the SQL functions agree with the library
    assert rows[0][1] == pytest.approx(docs.similar_by_vector(letters.embed(["a"])[0], 1)[0].score, abs=1e-6)
    db.close()


def test_functions_work_on_a_sqlite_utils_view_of_an_embedkit_database(db_path, letters):
    with embedkit.Database(db_path) as db:
        db.create_collection("my-docs", model="test-letters").embed("x", "aeiou", store=True)
    su = sqlite_utils.Database(db_path)
    embedkit.register_functions(su)
    row = next(
        su.query(
            'select id, embedkit_dims(embedding) as dims, embedkit_decode(embedding) as v from "my-docs"'
        )
    )
    assert row == {"id": "x", "dims": 8, "v": json.dumps([1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0])}
    su.conn.close()
