"""The command line, end to end: CliRunner invocations, then the rows read back with sqlite-utils."""

import base64
import csv
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import sqlite_utils

import embedkit
from conftest import LETTERS, dump
from terminal import run_on_a_terminal

ITEMS = [
    {"id": "a", "title": "Apple pie", "body": "Sweet baked dessert"},
    {"id": "b", "title": "Banana", "body": "Yellow fruit, long and curved"},  # a comma: CSV quoting
    {"id": "c", "title": "Cherry", "body": 'Red "small" fruit'},  # quotes: CSV escaping
]
CONTENT = {row["id"]: f"{row['title']}\n{row['body']}" for row in ITEMS}
FRESH = "3 embedded, 0 reused, 0 updated, 0 unchanged, 0 failed"
RERUN = "0 embedded, 0 reused, 0 updated, 3 unchanged, 0 failed"
EXTENSIONS = {"csv": "csv", "tsv": "tsv", "json": "json", "nl": "jsonl"}


def render(fmt, rows=ITEMS, columns=None):
    """rows as the text of an input file in fmt."""
    if fmt in ("csv", "tsv"):
        columns = columns or list(rows[0])
        out = io.StringIO()
        writer = csv.writer(out, delimiter="," if fmt == "csv" else "\t", lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
        return out.getvalue()
    if fmt == "json":
        return json.dumps(rows, indent=2)
    return "".join(json.dumps(row) + "\n" for row in rows)


def write(path, text, encoding="utf-8"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return str(path)


def rows(db_path, table):
    """Rows of a collection table, by id, with metadata parsed."""
    found = {}
    for row in sqlite_utils.Database(db_path)[table].rows:
        row["metadata"] = json.loads(row["metadata"]) if row["metadata"] else None
        found[row["id"]] = row
    return found


def registry(db_path, name):
    return sqlite_utils.Database(db_path)["_embedkit_collections"].get(name)


def vector(blob):
    return np.frombuffer(blob, dtype="<f4")


def letters_vector(text):
    """What the test model gives for text."""
    return LETTERS._embed([text])[0]


def cosine(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def ok(result, summary=None):
    """Assert success; with summary, that stderr is exactly that summary line."""
    assert result.exit_code == 0, (result.stdout, result.stderr)
    if summary is not None:
        assert result.stderr == summary + "\n"
    return result


def json_lines(result):
    return [json.loads(line) for line in result.stdout.splitlines()]


# ---------------------------------------------------------------- embed-multi: inputs


@pytest.mark.parametrize("fmt", ["csv", "tsv", "json", "nl"])
@pytest.mark.parametrize("source", ["extension", "no-extension", "stdin"])
def test_embed_multi_formats(invoke, letters, db_path, tmp_path, fmt, source):
    text = render(fmt)
    if source == "stdin":
        result = invoke("embed-multi", "docs", "-", "-m", "test-letters", "--store", input=text)
    else:
        name = f"data.{EXTENSIONS[fmt]}" if source == "extension" else "data"
        result = invoke("embed-multi", "docs", write(tmp_path / name, text), "-m", "test-letters", "--store")
    ok(result, FRESH)
    assert result.stdout == ""
    stored = rows(db_path, "docs")
    assert {id: row["content"] for id, row in stored.items()} == CONTENT
    for id, row in stored.items():
        assert vector(row["embedding"]).tolist() == letters_vector(CONTENT[id]).tolist()
        assert row["metadata"] is None
    assert letters.calls == 1  # one batch


@pytest.mark.parametrize(
    "name, text, fmt",
    [
        ("data.csv", render("tsv"), "tsv"),  # a misleading extension
        ("data.txt", render("nl"), "nl"),
        ("data.tsv", render("csv"), "csv"),
        ("data.csv", render("json"), "json"),
        ("-", render("tsv"), "tsv"),
    ],
)
def test_embed_multi_format_override(invoke, letters, db_path, tmp_path, name, text, fmt):
    path = name if name == "-" else write(tmp_path / name, text)
    ok(invoke("embed-multi", "docs", path, "--format", fmt, "-m", "test-letters", "--store", input=text), FRESH)
    assert {id: row["content"] for id, row in rows(db_path, "docs").items()} == CONTENT


def test_embed_multi_extension_is_used_without_override(invoke, letters, tmp_path):
    """The override matters: TSV in a .csv file is read as CSV (one column) without --format."""
    result = invoke("embed-multi", "docs", write(tmp_path / "data.csv", render("tsv")), "-m", "test-letters")
    assert result.exit_code != 0
    assert result.stderr.startswith("Error: ") and "data.csv" in result.stderr


@pytest.mark.parametrize(
    "text",
    [
        "\ufeff" + render("csv"),  # a byte order mark, as Excel writes
        render("csv").replace("\n", "\r\n"),  # Windows line endings
        render("csv") + "\n\n",  # trailing blank lines
        render("nl").replace("\n", "\n\n"),  # blank lines between NL-JSON records
    ],
    ids=["bom", "crlf", "trailing-blank-lines", "nl-blank-lines"],
)
def test_embed_multi_tolerated_input_variants(invoke, letters, db_path, tmp_path, text):
    ok(invoke("embed-multi", "docs", write(tmp_path / "data", text), "-m", "test-letters", "--store"), FRESH)
    assert {id: row["content"] for id, row in rows(db_path, "docs").items()} == CONTENT


def test_embed_multi_semicolon_csv_and_a_huge_field(invoke, letters, db_path, tmp_path):
    """Semicolon-delimited CSV (where the comma is the decimal mark) is recognised, and a field
    far past Python's csv default limit of 128 KiB loads whole."""
    huge = "word " * 40_000  # 200,000 characters
    text = 'id;title;body\na;"1,5 apples";short\nb;big;' + huge + "\n"
    ok(invoke("embed-multi", "docs", write(tmp_path / "data.csv", text), "-m", "test-letters", "--store"),
       "2 embedded, 0 reused, 0 updated, 0 unchanged, 0 failed")
    stored = rows(db_path, "docs")
    assert stored["a"]["content"] == "1,5 apples\nshort"
    assert stored["b"]["content"] == "big\n" + huge


def test_embed_multi_single_json_object(invoke, letters, db_path, tmp_path):
    path = write(tmp_path / "one.json", json.dumps({"id": "x", "text": "just one"}))
    ok(invoke("embed-multi", "docs", path, "-m", "test-letters", "--store"),
       "1 embedded, 0 reused, 0 updated, 0 unchanged, 0 failed")
    assert rows(db_path, "docs")["x"]["content"] == "just one"


def test_embed_multi_files(invoke, letters, db_path, tmp_path):
    notes = tmp_path / "notes"
    write(notes / "top.md", "top level note")
    write(notes / "sub" / "mid.md", "a nested note")
    write(notes / "sub" / "deeper" / "low.md", "deeply nested")
    write(notes / "sub" / "skip.txt", "not markdown")
    ok(invoke("embed-multi", "docs", "--files", notes, "*.md", "-m", "test-letters", "--store"),
       "1 embedded, 0 reused, 0 updated, 0 unchanged, 0 failed")
    assert {id: row["content"] for id, row in rows(db_path, "docs").items()} == {"top.md": "top level note"}

    ok(invoke("embed-multi", "recursive", "--files", notes, "**/*.md", "-m", "test-letters", "--store"))
    assert {id: row["content"] for id, row in rows(db_path, "recursive").items()} == {
        "top.md": "top level note",
        "sub/mid.md": "a nested note",
        "sub/deeper/low.md": "deeply nested",
    }


def test_embed_multi_multiple_files_options_and_prefix(invoke, letters, db_path, tmp_path):
    write(tmp_path / "one" / "a.md", "alpha")
    write(tmp_path / "two" / "b.txt", "beta")
    write(tmp_path / "two" / "c.md", "gamma")
    ok(
        invoke("embed-multi", "docs", "--files", tmp_path / "one", "*.md", "--files", tmp_path / "two", "*.txt",
               "--prefix", "kb/", "-m", "test-letters", "--store"),
        "2 embedded, 0 reused, 0 updated, 0 unchanged, 0 failed",
    )
    assert {id: row["content"] for id, row in rows(db_path, "docs").items()} == {"kb/a.md": "alpha", "kb/b.txt": "beta"}


def test_embed_multi_files_encoding(invoke, letters, db_path, tmp_path):
    write(tmp_path / "latin" / "cafe.txt", "café crème".encode("latin-1"))
    ok(invoke("embed-multi", "docs", "--files", tmp_path / "latin", "*.txt", "--encoding", "latin-1",
              "-m", "test-letters", "--store"))
    assert rows(db_path, "docs")["cafe.txt"]["content"] == "café crème"


def test_embed_multi_files_without_store(invoke, letters, db_path, tmp_path):
    write(tmp_path / "d" / "x.md", "some text")
    ok(invoke("embed-multi", "docs", "--files", tmp_path / "d", "*.md", "-m", "test-letters"))
    row = rows(db_path, "docs")["x.md"]
    assert row["content"] is None
    assert vector(row["embedding"]).tolist() == letters_vector("some text").tolist()


def test_embed_multi_sql(invoke, letters, db_path):
    sqlite_utils.Database(db_path)["posts"].insert_all(
        [{"id": i, "title": f"Post {i}", "body": "body " * i, "draft": i == 3} for i in (1, 2, 3)], pk="id"
    )
    ok(invoke("embed-multi", "docs", "--sql", "select id, title, body from posts where not draft",
              "-m", "test-letters", "--store"),
       "2 embedded, 0 reused, 0 updated, 0 unchanged, 0 failed")
    stored = rows(db_path, "docs")
    assert sorted(stored) == ["1", "2"]  # integer ids become text
    assert stored["2"]["content"] == "Post 2\nbody body "
    assert sqlite_utils.Database(db_path)["posts"].count == 3


def test_embed_multi_sql_attach(invoke, letters, db_path, tmp_path):
    other = str(tmp_path / "blog.db")
    sqlite_utils.Database(other)["entries"].insert_all(
        [{"slug": "hello", "headline": "Hello world", "tags": '{"lang": "en"}'},
         {"slug": "bye", "headline": "Goodbye", "tags": '{"lang": "fr"}'}]
    )
    before = dump(other)
    ok(
        invoke("embed-multi", "docs", "--attach", "blog", other,
               "--sql", "select slug, headline, tags as metadata from blog.entries",
               "--id-column", "slug", "-m", "test-letters", "--store"),
        "2 embedded, 0 reused, 0 updated, 0 unchanged, 0 failed",
    )
    stored = rows(db_path, "docs")
    assert stored["hello"]["content"] == "Hello world"
    assert stored["bye"]["metadata"] == {"lang": "fr"}
    assert dump(other) == before
    # the attached database is detached again: a second run needs --attach again
    result = invoke("embed-multi", "docs", "--sql", "select slug from blog.entries", "-m", "test-letters")
    assert result.exit_code != 0
    assert "no such table: blog.entries" in result.stderr


def test_embed_multi_sql_attached_tables_come_first(invoke, letters, db_path, tmp_path):
    """An unqualified name reads the attached database; `embeddings.` names the embeddings one."""
    other = str(tmp_path / "blog.db")
    sqlite_utils.Database(other)["posts"].insert({"id": "p", "text": "from blog"})
    sqlite_utils.Database(db_path)["posts"].insert({"id": "p", "text": "from embeddings"})
    ok(invoke("embed-multi", "blog", "--attach", "blog", other, "--sql", "select id, text from posts",
              "-m", "test-letters", "--store"))
    assert rows(db_path, "blog")["p"]["content"] == "from blog"
    ok(invoke("embed-multi", "local", "--attach", "blog", other, "--sql", "select id, text from embeddings.posts",
              "-m", "test-letters", "--store"))
    assert rows(db_path, "local")["p"]["content"] == "from embeddings"


def test_embed_multi_sql_can_call_embedkit_functions(invoke, letters, db_path):
    sqlite_utils.Database(db_path)["t"].insert({"id": "x", "body": "aaa"})
    ok(invoke("embed-multi", "docs", "--sql", "select id, body || embedkit_dims(embedkit_encode('[1, 2]')) as body from t",
              "-m", "test-letters", "--store"))
    assert rows(db_path, "docs")["x"]["content"] == "aaa2"


# ---------------------------------------------------------------- embed-multi: column mapping


@pytest.mark.parametrize("fmt", ["csv", "json", "nl"])
def test_id_column(invoke, letters, db_path, tmp_path, fmt):
    data = [{"slug": "first", "text": "one"}, {"slug": "second", "text": "two"}]
    path = write(tmp_path / f"data.{EXTENSIONS[fmt]}", render(fmt, data))
    ok(invoke("embed-multi", "docs", path, "--id-column", "slug", "-m", "test-letters", "--store"))
    assert {id: row["content"] for id, row in rows(db_path, "docs").items()} == {"first": "one", "second": "two"}


@pytest.mark.parametrize("fmt", ["csv", "tsv", "json", "nl"])
@pytest.mark.parametrize(
    "columns, expected",
    [
        (["body"], "Sweet baked dessert"),
        (["body", "title"], "Sweet baked dessert\nApple pie"),
        (["title", "body"], "Apple pie\nSweet baked dessert"),
        (["title", "title"], "Apple pie\nApple pie"),
    ],
)
def test_content_columns_in_order(invoke, letters, db_path, tmp_path, fmt, columns, expected):
    path = write(tmp_path / f"data.{EXTENSIONS[fmt]}", render(fmt))
    args = [arg for column in columns for arg in ("--content-column", column)]
    ok(invoke("embed-multi", "docs", path, *args, "-m", "test-letters", "--store"))
    row = rows(db_path, "docs")["a"]
    assert row["content"] == expected
    assert vector(row["embedding"]).tolist() == letters_vector(expected).tolist()
    assert row["metadata"] is None


@pytest.mark.parametrize("fmt", ["csv", "tsv", "json", "nl"])
def test_metadata_column_and_metadata_object_merged(invoke, letters, db_path, tmp_path, fmt):
    data = [
        {"id": "a", "title": "Apple", "body": "red fruit", "author": "ann", "metadata": json.dumps({"tag": "x"})},
        {"id": "b", "title": "Bean", "body": "legume", "author": "bob", "metadata": ""},
    ]
    path = write(tmp_path / f"data.{EXTENSIONS[fmt]}", render(fmt, data))
    ok(invoke("embed-multi", "docs", path, "--metadata-column", "author", "-m", "test-letters", "--store"))
    stored = rows(db_path, "docs")
    assert stored["a"]["metadata"] == {"tag": "x", "author": "ann"}
    assert stored["b"]["metadata"] == {"author": "bob"}
    # neither the metadata column nor the metadata object is embedded
    assert stored["a"]["content"] == "Apple\nred fruit"
    assert vector(stored["a"]["embedding"]).tolist() == letters_vector("Apple\nred fruit").tolist()


@pytest.mark.parametrize("fmt", ["json", "nl"])
def test_json_values_that_are_not_strings(invoke, letters, db_path, tmp_path, fmt):
    data = [
        {
            "id": 7,
            "count": 3,
            "ratio": 1.5,
            "ok": True,
            "nothing": None,
            "nested": {"z": 1, "a": [1, "two"]},
            "year": 2024,
            "metadata": {"source": {"kind": "api"}, "rank": 2, "flag": False},
        },
        {"id": 8.5, "count": 0, "ratio": -2.25, "ok": False, "nothing": None, "nested": [], "year": 1999, "metadata": None},
    ]
    path = write(tmp_path / f"data.{EXTENSIONS[fmt]}", render(fmt, data))
    ok(invoke("embed-multi", "docs", path, "--metadata-column", "year", "-m", "test-letters", "--store"),
       "2 embedded, 0 reused, 0 updated, 0 unchanged, 0 failed")
    stored = rows(db_path, "docs")
    assert sorted(stored) == ["7", "8.5"]
    assert stored["7"]["content"] == '3\n1.5\ntrue\n{"a": [1, "two"], "z": 1}'
    assert stored["7"]["metadata"] == {"source": {"kind": "api"}, "rank": 2, "flag": False, "year": 2024}
    assert stored["8.5"]["content"] == "0\n-2.25\nfalse\n[]"
    assert stored["8.5"]["metadata"] == {"year": 1999}


@pytest.mark.parametrize("store", [True, False])
@pytest.mark.parametrize("fmt", ["csv", "nl"])
def test_store_flag(invoke, letters, db_path, tmp_path, fmt, store):
    path = write(tmp_path / f"data.{EXTENSIONS[fmt]}", render(fmt))
    ok(invoke("embed-multi", "docs", path, "-m", "test-letters", *(["--store"] if store else [])), FRESH)
    stored = rows(db_path, "docs")
    assert {id: row["content"] for id, row in stored.items()} == (CONTENT if store else dict.fromkeys(CONTENT))
    # the vectors do not depend on --store
    for id, row in stored.items():
        assert vector(row["embedding"]).tolist() == letters_vector(CONTENT[id]).tolist()


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_prefix_on_ids(invoke, letters, db_path, tmp_path, fmt):
    path = write(tmp_path / f"data.{EXTENSIONS[fmt]}", render(fmt))
    ok(invoke("embed-multi", "docs", path, "--prefix", "fruit/", "-m", "test-letters"), FRESH)
    assert sorted(rows(db_path, "docs")) == ["fruit/a", "fruit/b", "fruit/c"]


@pytest.mark.parametrize("batch_size, calls", [(1, 5), (2, 3), (5, 1), (100, 1)])
def test_batch_size(invoke, letters, db_path, tmp_path, batch_size, calls):
    data = [{"id": str(i), "text": "x" * (i + 1)} for i in range(5)]
    path = write(tmp_path / "data.csv", render("csv", data))
    ok(invoke("embed-multi", "docs", path, "--batch-size", batch_size, "-m", "test-letters", "--store"),
       "5 embedded, 0 reused, 0 updated, 0 unchanged, 0 failed")
    assert letters.calls == calls
    assert len(rows(db_path, "docs")) == 5


def test_new_collection_records_model_and_prefixes(invoke, letters, db_path, tmp_path):
    path = write(tmp_path / "data.csv", render("csv"))
    ok(invoke("embed-multi", "docs", path, "-m", "test-letters", "--store",
              "--query-prefix", "query: ", "--document-prefix", "passage: "))
    row = registry(db_path, "docs")
    assert (row["model"], row["dimensions"], row["query_prefix"], row["document_prefix"]) == (
        "test-letters", 8, "query: ", "passage: ")
    stored = rows(db_path, "docs")
    # the document prefix is embedded, not stored
    assert stored["a"]["content"] == CONTENT["a"]
    assert vector(stored["a"]["embedding"]).tolist() == letters_vector("passage: " + CONTENT["a"]).tolist()
    # and the query prefix goes before the query text
    hits = json_lines(ok(invoke("similar", "docs", "-c", "oo")))
    expected = sorted(((-cosine(letters_vector("query: oo"), letters_vector("passage: " + text)), id) for id, text in CONTENT.items()))
    assert [hit["id"] for hit in hits] == [id for _, id in expected]
    assert [hit["score"] for hit in hits] == pytest.approx([-score for score, _ in expected])


def test_existing_collection_needs_no_model_option(invoke, letters, db_path, tmp_path):
    ok(invoke("embed-multi", "docs", write(tmp_path / "a.csv", render("csv", ITEMS[:1])), "-m", "test-letters"))
    ok(invoke("embed-multi", "docs", write(tmp_path / "b.csv", render("csv", ITEMS[1:]))))
    assert registry(db_path, "docs")["model"] == "test-letters"
    assert sorted(rows(db_path, "docs")) == ["a", "b", "c"]


def test_default_model_is_minilm_int8(invoke, minilm, db_path, tmp_path):
    ok(invoke("embed-multi", "docs", write(tmp_path / "data.csv", render("csv")), "--store"), FRESH)
    row = registry(db_path, "docs")
    assert (row["model"], row["dimensions"]) == ("all-MiniLM-L6-v2-int8", 384)
    assert {len(row["embedding"]) for row in rows(db_path, "docs").values()} == {384 * 4}


# ---------------------------------------------------------------- embed-multi: the summary


def test_summary_counts_across_runs(invoke, letters, db_path, tmp_path):
    path = tmp_path / "data.json"
    write(path, render("json"))
    ok(invoke("embed-multi", "docs", path, "-m", "test-letters", "--store"), FRESH)
    assert letters.calls == 1
    first = rows(db_path, "docs")

    # the same input again: nothing to do, no model call, rows untouched
    letters.calls = 0
    before = dump(db_path)
    ok(invoke("embed-multi", "docs", path, "--store"), RERUN)
    assert letters.calls == 0
    assert dump(db_path) == before

    # changed content: that item only is embedded again
    changed = [dict(ITEMS[0], body="Now savoury"), *ITEMS[1:]]
    write(path, render("json", changed))
    ok(invoke("embed-multi", "docs", path, "--store"), "1 embedded, 0 reused, 0 updated, 2 unchanged, 0 failed")
    assert letters.calls == 1
    assert rows(db_path, "docs")["a"]["content"] == "Apple pie\nNow savoury"
    assert vector(rows(db_path, "docs")["a"]["embedding"]).tolist() == letters_vector("Apple pie\nNow savoury").tolist()

    # changed metadata only: the row is rewritten without embedding
    letters.calls = 0
    with_meta = [dict(changed[0]), dict(changed[1], metadata={"tag": "yellow"}), changed[2]]
    write(path, render("json", with_meta))
    ok(invoke("embed-multi", "docs", path, "--store"), "0 embedded, 0 reused, 1 updated, 2 unchanged, 0 failed")
    assert letters.calls == 0
    assert rows(db_path, "docs")["b"]["metadata"] == {"tag": "yellow"}
    assert rows(db_path, "docs")["b"]["embedding"] == first["b"]["embedding"]

    # the same content under a new id reuses the stored vector
    with_copy = [*with_meta, dict(ITEMS[2], id="d")]
    write(path, render("json", with_copy))
    ok(invoke("embed-multi", "docs", path, "--store"), "0 embedded, 1 reused, 0 updated, 3 unchanged, 0 failed")
    assert letters.calls == 0
    assert rows(db_path, "docs")["d"]["embedding"] == first["c"]["embedding"]
    assert rows(db_path, "docs")["d"]["content"] == CONTENT["c"]

    # dropping --store is a change too: content is cleared, vectors stay
    ok(invoke("embed-multi", "docs", path), "0 embedded, 0 reused, 4 updated, 0 unchanged, 0 failed")
    assert letters.calls == 0
    assert {row["content"] for row in rows(db_path, "docs").values()} == {None}


def test_summary_duplicate_content_in_one_input(invoke, letters, db_path, tmp_path):
    data = [*ITEMS, dict(ITEMS[0], id="a2"), dict(ITEMS[0], id="a3")]
    ok(invoke("embed-multi", "docs", write(tmp_path / "data.csv", render("csv", data)), "-m", "test-letters"),
       "3 embedded, 2 reused, 0 updated, 0 unchanged, 0 failed")
    stored = rows(db_path, "docs")
    assert stored["a"]["embedding"] == stored["a2"]["embedding"] == stored["a3"]["embedding"]


@pytest.mark.parametrize("fmt", ["csv", "json", "nl"])
def test_empty_content_fails_that_item_only(invoke, letters, db_path, tmp_path, fmt):
    data = [ITEMS[0], {"id": "blank", "title": "", "body": "  "}, ITEMS[2]]
    path = write(tmp_path / f"data.{EXTENSIONS[fmt]}", render(fmt, data))
    result = invoke("embed-multi", "docs", path, "-m", "test-letters", "--store")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "Failed: blank: empty content",
        "2 embedded, 0 reused, 0 updated, 0 unchanged, 1 failed",
    ]
    assert sorted(rows(db_path, "docs")) == ["a", "c"]


def test_no_progress_bar_when_stderr_is_not_a_terminal(invoke, letters, tmp_path):
    data = [{"id": str(i), "text": "word " * (i % 7 + 1) + str(i)} for i in range(60)]
    result = invoke("embed-multi", "docs", write(tmp_path / "data.nl", render("nl", data)),
                    "--batch-size", 7, "-m", "test-letters")
    ok(result, "60 embedded, 0 reused, 0 updated, 0 unchanged, 0 failed")
    assert "Embedding" not in result.stderr and "#" not in result.stderr and "\r" not in result.stderr
    assert letters.calls == 9


# ---------------------------------------------------------------- embed


def test_embed_prints_real_vector_as_json(invoke, minilm):
    result = ok(invoke("embed", "-c", "hello world"))
    values = json.loads(result.stdout)
    assert isinstance(values, list) and len(values) == 384
    assert all(isinstance(v, float) for v in values)
    assert np.linalg.norm(values) == pytest.approx(1.0, abs=1e-3)  # MiniLM vectors are normalised
    assert result.stdout.count("\n") == 1


def test_embed_output_formats_are_the_same_bytes(invoke, minilm):
    text = "the quick brown fox"
    expected = np.array(json.loads(ok(invoke("embed", "-c", text)).stdout), dtype="<f4").tobytes()
    assert len(expected) == 384 * 4
    assert bytes.fromhex(ok(invoke("embed", "-c", text, "--format", "hex")).stdout.strip()) == expected
    assert base64.b64decode(ok(invoke("embed", "-c", text, "-f", "base64")).stdout.strip()) == expected
    assert ok(invoke("embed", "-c", text, "--format", "blob")).stdout_bytes == expected
    assert ok(invoke("embed", "-c", text, "--format", "json")).stdout == ok(invoke("embed", "-c", text)).stdout


@pytest.mark.parametrize("fmt", ["json", "hex", "base64", "blob"])
def test_embed_exact_vector_with_test_model(invoke, letters, fmt):
    result = ok(invoke("embed", "-c", "Aeiou 12", "-m", "test-letters", "--format", fmt))
    expected = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 1.0]
    decoded = {
        "json": lambda: json.loads(result.stdout),
        "hex": lambda: vector(bytes.fromhex(result.stdout.strip())).tolist(),
        "base64": lambda: vector(base64.b64decode(result.stdout)).tolist(),
        "blob": lambda: vector(result.stdout_bytes).tolist(),
    }[fmt]()
    assert decoded == expected


@pytest.mark.parametrize("source", ["content", "file", "file-dash", "stdin"])
def test_embed_into_collection(invoke, letters, db_path, tmp_path, source):
    text = "a stored note"
    args, stdin = {
        "content": (["-c", text], None),
        "file": (["-i", write(tmp_path / "note.txt", text)], None),
        "file-dash": (["-i", "-"], text),
        "stdin": ([], text),
    }[source]
    result = invoke("embed", "notes", "n1", *args, "-m", "test-letters", "--store",
                    "--metadata", '{"kind": "note", "n": 1, "tags": ["x"]}', input=stdin)
    ok(result)
    assert result.stdout == ""
    row = rows(db_path, "notes")["n1"]
    assert row["content"] == text
    assert row["metadata"] == {"kind": "note", "n": 1, "tags": ["x"]}
    assert vector(row["embedding"]).tolist() == letters_vector(text).tolist()
    assert registry(db_path, "notes")["model"] == "test-letters"


def test_embed_without_store_or_metadata(invoke, letters, db_path):
    ok(invoke("embed", "notes", "n1", "-c", "plain", "-m", "test-letters"))
    row = rows(db_path, "notes")["n1"]
    assert row["content"] is None and row["metadata"] is None


def test_embed_unchanged_content_makes_no_model_call(invoke, letters, db_path):
    ok(invoke("embed", "notes", "n1", "-c", "same text", "-m", "test-letters", "--store"))
    assert letters.calls == 1
    before = dump(db_path)
    ok(invoke("embed", "notes", "n1", "-c", "same text", "--store"))
    assert letters.calls == 1
    assert dump(db_path) == before
    # new metadata: a rewrite, still no model call
    ok(invoke("embed", "notes", "n1", "-c", "same text", "--store", "--metadata", '{"v": 2}'))
    assert letters.calls == 1
    assert rows(db_path, "notes")["n1"]["metadata"] == {"v": 2}
    # new content: embedded again
    ok(invoke("embed", "notes", "n1", "-c", "other text", "--store"))
    assert letters.calls == 2
    assert vector(rows(db_path, "notes")["n1"]["embedding"]).tolist() == letters_vector("other text").tolist()


def test_embed_utf8_file_with_bom(invoke, letters, db_path, tmp_path):
    ok(invoke("embed", "notes", "n1", "-i", write(tmp_path / "bom.txt", "\ufeffnaïve café"), "-m", "test-letters", "--store"))
    assert rows(db_path, "notes")["n1"]["content"] == "naïve café"


# ---------------------------------------------------------------- similar

NOTES = {
    "n1": ("aaaa", {"k": 1}),
    "n2": ("aa ee", {"k": 2, "nested": {"x": [1, 2]}}),
    "n3": ("ee ii oo", None),
    "n4": ("uuuu 123", {"k": 4}),
    "n5": ("a e i o u", {}),
}


@pytest.fixture
def notes(invoke, letters, db_path, tmp_path):
    data = [{"id": id, "text": text, **({"metadata": meta} if meta is not None else {})} for id, (text, meta) in NOTES.items()]
    ok(invoke("embed-multi", "notes", write(tmp_path / "notes.json", json.dumps(data)), "-m", "test-letters", "--store"))
    letters.calls = 0
    return db_path


def expected_ranking(query_vector, exclude=None):
    scored = [(-cosine(query_vector, letters_vector(text)), id) for id, (text, _) in NOTES.items() if id != exclude]
    return [(id, -negative) for negative, id in sorted(scored)]


def check_hits(hits, expected, n=10):
    assert [hit["id"] for hit in hits] == [id for id, _ in expected][:n]
    assert [hit["score"] for hit in hits] == pytest.approx([score for _, score in expected][:n], abs=1e-6)
    for hit in hits:
        assert list(hit) == ["id", "score", "content", "metadata"]
        assert hit["content"] == NOTES[hit["id"]][0]
        # {} and null metadata are both stored as NULL
        assert hit["metadata"] == (NOTES[hit["id"]][1] or None)
        assert hit["metadata"] is None or isinstance(hit["metadata"], dict)
    scores = [hit["score"] for hit in hits]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("source", ["content", "file", "file-dash", "stdin"])
def test_similar_by_text(invoke, letters, notes, tmp_path, source):
    query = "ee oo"
    args, stdin = {
        "content": (["-c", query], None),
        "file": (["-i", write(tmp_path / "q.txt", query)], None),
        "file-dash": (["-i", "-"], query),
        "stdin": ([], query),
    }[source]
    result = ok(invoke("similar", "notes", *args, input=stdin))
    assert result.stderr == ""
    check_hits(json_lines(result), expected_ranking(letters_vector(query)))
    assert letters.calls == 1


def test_similar_by_id_excludes_itself(invoke, letters, notes):
    hits = json_lines(ok(invoke("similar", "notes", "n2")))
    assert "n2" not in [hit["id"] for hit in hits]
    check_hits(hits, expected_ranking(letters_vector(NOTES["n2"][0]), exclude="n2"))
    assert len(hits) == 4
    assert letters.calls == 0  # the stored vector is the query


@pytest.mark.parametrize("n", [1, 2, 4, 5, 50])
def test_similar_number(invoke, letters, notes, n):
    hits = json_lines(ok(invoke("similar", "notes", "-c", "a e", "-n", n)))
    assert len(hits) == min(n, 5)
    check_hits(hits, expected_ranking(letters_vector("a e")), n)


def test_similar_by_id_number(invoke, letters, notes):
    hits = json_lines(ok(invoke("similar", "notes", "n1", "-n", 2)))
    check_hits(hits, expected_ranking(letters_vector(NOTES["n1"][0]), exclude="n1"), 2)


def test_similar_plain(invoke, letters, notes):
    result = ok(invoke("similar", "notes", "-c", "aaaa", "--plain", "-n", 2))
    expected = expected_ranking(letters_vector("aaaa"))
    assert result.stdout == (
        f"n1 ({expected[0][1]:.4f})\n  aaaa\n"
        f"{expected[1][0]} ({expected[1][1]:.4f})\n  {NOTES[expected[1][0]][0]}\n"
    )
    assert expected[0][1] == pytest.approx(1.0)


def test_similar_plain_without_stored_content(invoke, letters, tmp_path):
    ok(invoke("embed-multi", "docs", write(tmp_path / "d.csv", render("csv")), "-m", "test-letters"))
    lines = ok(invoke("similar", "docs", "-c", "fruit", "--plain")).stdout.splitlines()
    assert len(lines) == 3 and all(line.split()[0] in CONTENT for line in lines)
    result = json_lines(ok(invoke("similar", "docs", "-c", "fruit")))
    assert {hit["content"] for hit in result} == {None}


@pytest.mark.parametrize("model", ["test-letters", None])
def test_similar_with_matching_model(invoke, letters, notes, model):
    args = ["-m", model] if model else []
    hits = json_lines(ok(invoke("similar", "notes", "-c", "uu", *args)))
    assert hits[0]["id"] == "n4"


def test_similar_uses_database_option(invoke, letters, tmp_path):
    other = str(tmp_path / "sub" / "other.db")
    os.makedirs(os.path.dirname(other))
    ok(invoke("embed", "notes", "x", "-c", "aaa", "-m", "test-letters", "-d", other))
    assert not os.path.exists(tmp_path / "embeddings.db")
    assert [hit["id"] for hit in json_lines(ok(invoke("similar", "notes", "-c", "a", "-d", other)))] == ["x"]


@pytest.mark.parametrize(
    "query, best",
    [
        ("a small kitten sleeping", "cat"),
        ("interest rates and the stock market", "finance"),
        ("recipe for baking bread", "bread"),
    ],
)
def test_similar_with_real_model(invoke, minilm, tmp_path, query, best):
    data = [
        {"id": "cat", "text": "The cat curled up on the sofa and purred."},
        {"id": "finance", "text": "Shares fell sharply after the central bank raised rates."},
        {"id": "bread", "text": "Knead the dough, let it rise, then bake it in a hot oven."},
        {"id": "football", "text": "The striker scored twice in the second half."},
    ]
    ok(invoke("embed-multi", "docs", write(tmp_path / "d.nl", render("nl", data)), "--store"))
    hits = json_lines(ok(invoke("similar", "docs", "-c", query, "-m", "all-MiniLM-L6-v2-int8")))
    assert hits[0]["id"] == best
    assert hits[0]["score"] > hits[1]["score"] + 0.1
    assert all(-1 <= hit["score"] <= 1 for hit in hits)
    # the alias names the same model
    aliased = json_lines(ok(invoke("similar", "docs", "-c", query, "-m", "all-MiniLM-L6-v2-onnx")))
    assert [hit["id"] for hit in aliased] == [hit["id"] for hit in hits]


# ---------------------------------------------------------------- collections, models, delete


@pytest.fixture
def two_collections(invoke, letters, db_path, tmp_path):
    ok(invoke("embed-multi", "fruit", write(tmp_path / "d.csv", render("csv")), "-m", "test-letters"))
    ok(invoke("embed", "alpha", "one", "-c", "x", "-m", "test-letters"))
    return db_path


@pytest.mark.parametrize("args", [[], ["list"]])
def test_collections_list(invoke, two_collections, args):
    result = ok(invoke("collections", *args))
    assert result.stdout.splitlines() == [
        "name   model         dimensions  count",
        "alpha  test-letters  8           1",
        "fruit  test-letters  8           3",
    ]


@pytest.mark.parametrize("args", [["--json"], ["list", "--json"]])
def test_collections_json(invoke, two_collections, args):
    assert json.loads(ok(invoke("collections", *args)).stdout) == [
        {"name": "alpha", "model": "test-letters", "dimensions": 8, "count": 1, "chunking": None},
        {"name": "fruit", "model": "test-letters", "dimensions": 8, "count": 3, "chunking": None},
    ]


def test_an_empty_collections_list_says_there_are_none(invoke, db_path):
    embedkit.Database(db_path).close()
    result = ok(invoke("collections"))
    assert result.stdout == "" and result.stderr == "No collections in embeddings.db\n"
    assert json.loads(ok(invoke("collections", "--json")).stdout) == []


def test_collections_delete_confirms_and_says_what_it_deleted(invoke, two_collections, db_path):
    # Nobody to ask (standard input is not a terminal): only with --yes.
    before = dump(db_path)
    result = invoke("collections", "delete", "fruit")
    assert result.exit_code == 1
    assert result.stderr == "Error: collection 'fruit' not deleted: pass --yes to delete it without asking\n"
    assert dump(db_path) == before

    # At a terminal, in processes of their own (as a person runs them).
    embedkit_command = os.path.join(os.path.dirname(sys.executable), "embedkit")
    env = {k: v for k, v in os.environ.items() if k != "EMBEDKIT_DATABASE"}

    def run(*args, typed=None):
        return run_on_a_terminal([embedkit_command, *args, "-d", db_path], env, timeout=60, typed=typed)

    def names():
        status, shown = run("collections", "--json")
        assert status == 0, shown
        return [row["name"] for row in json.loads(shown)]

    status, shown = run("collections", "delete", "fruit", typed="n\n")
    assert status == 1
    assert shown.splitlines() == [
        f"Delete collection 'fruit' and its 3 items from {db_path}? [y/N]: n",
        "Error: collection 'fruit' not deleted",
    ]
    assert names() == ["alpha", "fruit"]
    status, shown = run("collections", "delete", "fruit", typed="y\n")
    assert status == 0 and shown.splitlines()[-1] == "Deleted collection 'fruit' (3 items)"
    assert names() == ["alpha"]
    assert run("collections", "delete", "alpha", "--yes") == (0, "Deleted collection 'alpha' (1 item)\r\n")
    assert names() == []


def test_collections_delete(invoke, two_collections, db_path):
    result = ok(invoke("collections", "delete", "fruit", "--yes"))
    assert result.stdout == ""
    db = sqlite_utils.Database(db_path)
    assert "fruit" not in db.table_names()
    assert [row["name"] for row in db["_embedkit_collections"].rows] == ["alpha"]
    assert json.loads(ok(invoke("collections", "--json")).stdout)[0]["name"] == "alpha"
    assert len(json.loads(ok(invoke("collections", "--json")).stdout)) == 1


def test_collections_database_option_env_and_default(invoke, letters, tmp_path, monkeypatch):
    ok(invoke("embed", "in_default", "x", "-c", "aa", "-m", "test-letters"))
    assert os.path.exists(tmp_path / "embeddings.db")
    other = str(tmp_path / "other.db")
    ok(invoke("embed", "in_other", "x", "-c", "aa", "-m", "test-letters", "--database", other))

    def names(*args):
        return [c["name"] for c in json.loads(ok(invoke("collections", "--json", *args)).stdout)]

    assert names() == ["in_default"]
    assert names("-d", other) == ["in_other"]
    monkeypatch.setenv("EMBEDKIT_DATABASE", other)
    assert names() == ["in_other"]
    assert names("-d", str(tmp_path / "embeddings.db")) == ["in_default"]  # the option beats the variable
    # writing commands follow the variable too
    ok(invoke("embed", "via_env", "x", "-c", "aa", "-m", "test-letters"))
    assert names() == ["in_other", "via_env"]
    monkeypatch.delenv("EMBEDKIT_DATABASE")
    assert names() == ["in_default"]


@pytest.mark.parametrize("args", [[], ["list"]])
def test_models(invoke, args):
    lines = ok(invoke("models", *args)).stdout.splitlines()
    assert lines[0].split() == ["model", "dimensions", "aliases", "source"]
    minilm_line = next(line for line in lines if line.startswith("all-MiniLM-L6-v2 "))
    assert minilm_line.split()[1] == "384"
    assert "sentence-transformers/all-MiniLM-L6-v2" in minilm_line
    letters_line = next(line for line in lines if line.startswith("test-letters "))
    assert letters_line.split()[1] == "8"


def test_models_json(invoke):
    listed = {m["id"]: m for m in json.loads(ok(invoke("models", "--json")).stdout)}
    assert listed["all-MiniLM-L6-v2"]["dimensions"] == 384
    assert listed["all-MiniLM-L6-v2"]["aliases"] == ["sentence-transformers/all-MiniLM-L6-v2"]
    assert listed["test-letters"]["dimensions"] == 8
    assert set(listed["test-letters"]) == {"id", "dimensions", "aliases", "source"}


@pytest.mark.parametrize("ids, remaining, message", [
    (["a"], ["b", "c"], "Deleted 1 item"),
    (["a", "c"], ["b"], "Deleted 2 items"),
    (["a", "b", "c"], [], "Deleted 3 items"),
])
def test_delete(invoke, two_collections, db_path, ids, remaining, message):
    result = ok(invoke("delete", "fruit", *ids))
    assert result.stderr == message + "\n"
    assert sorted(rows(db_path, "fruit")) == remaining
    assert sorted(rows(db_path, "alpha")) == ["one"]
    assert json.loads(ok(invoke("collections", "--json")).stdout)[1]["count"] == len(remaining)


def test_deleted_items_are_not_found_by_similar(invoke, letters, notes):
    assert json_lines(ok(invoke("similar", "notes", "-c", "aaaa")))[0]["id"] == "n1"
    ok(invoke("delete", "notes", "n1"))
    hits = json_lines(ok(invoke("similar", "notes", "-c", "aaaa")))
    assert "n1" not in [hit["id"] for hit in hits] and len(hits) == 4


# ---------------------------------------------------------------- sql


def test_sql_rows_as_json_lines_with_params(invoke, notes):
    result = ok(invoke("sql", "select id, content, metadata from notes where id in (:x, :y) order by id",
                       "-p", "x", "n1", "-p", "y", "n3"))
    assert json_lines(result) == [
        {"id": "n1", "content": "aaaa", "metadata": '{"k":1}'},
        {"id": "n3", "content": "ee ii oo", "metadata": None},
    ]


def test_sql_blobs_as_base64_objects(invoke, notes, db_path):
    [row] = json_lines(ok(invoke("sql", "select id, embedding from notes where id = :id", "-p", "id", "n4")))
    assert row["embedding"]["$base64"] is True
    assert set(row["embedding"]) == {"$base64", "encoded"}
    assert base64.b64decode(row["embedding"]["encoded"]) == rows(db_path, "notes")["n4"]["embedding"]


def test_sql_embedkit_functions(invoke, letters, notes):
    result = ok(invoke(
        "sql",
        "select id, embedkit_dims(embedding) as dims, embedkit_decode(embedding) as vector, "
        "embedkit_cosine(embedding, embedkit_embed('test-letters', :q)) as score "
        "from notes order by score desc, id limit 2",
        "-p", "q", "uuuu",
    ))
    hits = json_lines(result)
    assert [hit["id"] for hit in hits] == ["n4", *[id for id, _ in expected_ranking(letters_vector("uuuu"))][1:2]]
    assert hits[0]["dims"] == 8
    assert json.loads(hits[0]["vector"]) == letters_vector("uuuu 123").tolist()
    assert hits[0]["score"] == pytest.approx(cosine(letters_vector("uuuu"), letters_vector("uuuu 123")))


def test_sql_centroid_and_unicode(invoke, notes):
    [row] = json_lines(ok(invoke("sql", "select embedkit_decode(embedkit_centroid(embedding)) as c, 'café' as word from notes")))
    assert json.loads(row["c"]) == pytest.approx(np.mean([letters_vector(text) for text, _ in NOTES.values()], axis=0).tolist())
    assert row["word"] == "café"


# ---------------------------------------------------------------- lazy imports

HEAVY = ("torch", "sentence_transformers", "transformers")
HARNESS = r"""
import json, sys
report, args = sys.argv[1], sys.argv[2:]
try:
    from embedkit.cli import cli
    cli.main(args, prog_name="embedkit")
finally:
    heavy = sorted({m.split(".")[0] for m in sys.modules} & set(%r))
    with open(report, "w") as fp:
        json.dump(heavy, fp)
""" % (HEAVY,)


def run_isolated(tmp_path, *args):
    """Run the CLI in a fresh interpreter; (completed process, heavy modules it imported)."""
    report = tmp_path / "modules.json"
    if report.exists():
        report.unlink()
    env = {k: v for k, v in os.environ.items() if k != "EMBEDKIT_DATABASE"}
    process = subprocess.run(
        [sys.executable, "-c", HARNESS, str(report), *map(str, args)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )
    assert report.exists(), process.stderr
    return process, json.loads(report.read_text())


@pytest.fixture
def minilm_db(invoke, minilm, db_path, tmp_path):
    """A database with a small collection of the default model, embedded in this process."""
    path = write(tmp_path / "docs.csv", render("csv"))
    ok(invoke("embed-multi", "docs", path, "--store"), FRESH)
    return path


@pytest.mark.parametrize(
    "args, stdout",
    [
        (["--help"], "embed-multi"),
        (["embed-multi", "--help"], "--batch-size"),
        (["collections"], "docs  all-MiniLM-L6-v2-int8  384         3"),
        (["collections", "list", "--json"], '"model": "all-MiniLM-L6-v2-int8"'),
        (["models"], "all-MiniLM-L6-v2"),
        (["models", "--json"], '"dimensions": 384'),
        (["similar", "docs", "a"], '"id": "b"'),  # by id: the stored vector is the query
        (["sql", "select count(*) as n from docs"], '{"n": 3}'),
    ],
    ids=["help", "embed-multi-help", "collections", "collections-json", "models", "models-json",
         "similar-by-id", "sql"],
)
def test_commands_do_not_import_torch(minilm_db, tmp_path, args, stdout):
    process, heavy = run_isolated(tmp_path, *args)
    assert process.returncode == 0, process.stderr
    assert stdout in process.stdout
    assert heavy == []


def test_rerun_over_unchanged_input_does_not_import_torch(minilm_db, db_path, tmp_path):
    before = dump(db_path)
    process, heavy = run_isolated(tmp_path, "embed-multi", "docs", minilm_db, "--store")
    assert process.returncode == 0, process.stderr
    assert process.stderr == RERUN + "\n"
    assert heavy == []
    assert dump(db_path) == before


def test_rerun_over_unchanged_pdfs_does_not_import_torch(invoke, torch_minilm, db_path, tmp_path):
    """The default chunking counts tokens, which the torch model does only once loaded: a re-run
    reads the chunking from the collection, never from the model."""
    import pdfs

    paper = str(pdfs.text_pdf(tmp_path / "paper.pdf", ["Ternary weights need no multiplications.", "Page two."]))
    ok(invoke("embed-multi", "papers", paper, "-m", "all-MiniLM-L6-v2"),
       "2 embedded, 0 reused, 0 updated, 0 unchanged, 0 failed")
    process, heavy = run_isolated(tmp_path, "embed-multi", "papers", paper)
    assert process.stderr == "0 embedded, 0 reused, 0 updated, 2 unchanged, 0 failed\n"
    assert heavy == []


def test_only_the_torch_model_imports_torch(minilm_db, torch_minilm, invoke, tmp_path):
    """Searching by text with the default model needs no torch; the check above can fail: with the
    torch backend, the same command does import torch."""
    process, heavy = run_isolated(tmp_path, "similar", "docs", "-c", "dessert", "-n", "1")
    assert process.returncode == 0, process.stderr
    assert json.loads(process.stdout)["id"] == "a"
    assert heavy == []
    ok(invoke("embed-multi", "torch-docs", minilm_db, "--store", "-m", "all-MiniLM-L6-v2"), FRESH)
    process, heavy = run_isolated(tmp_path, "similar", "torch-docs", "-c", "dessert", "-n", "1")
    assert process.returncode == 0, process.stderr
    assert json.loads(process.stdout)["id"] == "a"
    assert "torch" in heavy and "sentence_transformers" in heavy


def test_help_entry_point_import_time(tmp_path):
    """The installed `embedkit` script, timed by the interpreter: no torch line at all."""
    script = os.path.join(os.path.dirname(sys.executable), "embedkit")
    if not os.path.exists(script):
        pytest.skip("no embedkit script beside this interpreter")
    process = subprocess.run([sys.executable, "-X", "importtime", script, "--help"],
                             capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert process.returncode == 0, process.stderr
    assert "Usage: embedkit" in process.stdout
    imported = {line.split("|")[-1].strip().split(".")[0] for line in process.stderr.splitlines() if "|" in line}
    assert "embedkit" in imported and "click" in imported
    assert imported.isdisjoint(HEAVY)
