"""Bad input, one case at a time: each fails with one line on stderr that starts with
"Error: " and says what and where, prints no traceback, and leaves the database as it was."""

import os
import shlex
import subprocess
import sys

import pytest
import sqlite_utils

import embedkit
from conftest import dump
from terminal import run_on_a_terminal

EMBEDKIT = os.path.join(os.path.dirname(sys.executable), "embedkit")

GOOD_CSV = "id,text\nx,some text\n"


@pytest.fixture
def existing(invoke, letters, db_path, tmp_path):
    """A database holding one test-letters collection `docs` (items a and b),
    an empty all-MiniLM-L6-v2 collection `mini` and a plain table `posts`."""
    (tmp_path / "seed.csv").write_text("id,text\na,apple pie\nb,banana bread\n")
    result = invoke("embed-multi", "docs", "seed.csv", "-m", "test-letters", "--store")
    assert result.exit_code == 0, result.stderr
    with embedkit.Database(db_path) as db:
        db.create_collection("mini")
    sqlite_utils.Database(db_path)["posts"].insert_all(
        [{"id": 1, "title": "First"}, {"id": 2, "title": "Second"}], pk="id"
    )
    letters.calls = 0
    return db_path


def assert_one_line_error(result, *fragments):
    assert result.exit_code not in (0, None), result.stdout
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines[0]
    assert len(lines[0]) > len("Error: ") + 10
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert result.stdout == ""
    return lines[0]


def files_in(directory):
    """File names in directory, leaving out SQLite's own -wal, -shm and -journal files."""
    return sorted(name for name in os.listdir(directory) if not name.endswith(("-wal", "-shm", "-journal")))


@pytest.fixture
def fails(invoke, existing, letters, tmp_path):
    """Run a command that must fail cleanly and change nothing (no model call either)."""

    def run(args, *fragments, input=None, files=None):
        for name, data in (files or {}).items():
            path = tmp_path / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data.encode() if isinstance(data, str) else data)
        before = dump(existing)
        listing = files_in(tmp_path)
        result = invoke(*args, input=input)
        message = assert_one_line_error(result, *fragments)
        assert dump(existing) == before
        assert files_in(tmp_path) == listing  # no new database or stray file either
        assert letters.calls == 0
        return message

    return run


# ---------------------------------------------------------------- malformed input files


@pytest.mark.parametrize("target", ["docs", "new"])
@pytest.mark.parametrize(
    "name, data, fragments",
    [
        ("bad.csv", 'id,text\na,"unterminated\n', ["bad.csv", "line 2", "malformed CSV"]),
        ("bad.csv", 'id,text\na,"quoted"garbage\n', ["bad.csv", "line 2", "malformed CSV"]),
        ("bad.csv", "id,text\na,fine\nb,one,too many\n", ["bad.csv", "line 3", "3 fields", "header has 2"]),
        ("bad.csv", "id,text\na,fine\nb\n", ["bad.csv", "line 3", "1 fields", "header has 2"]),
        ("bad.csv", "id,id\na,b\n", ["bad.csv", "duplicate column"]),
        ("bad.tsv", "id\ttext\na\tok\tagain\n", ["bad.tsv", "line 2", "3 fields"]),
        ("bad.json", '[{"id": "a", "text": "x"},', ["bad.json", "invalid JSON"]),
        ("bad.json", "{'id': 'a'}", ["bad.json", "invalid JSON"]),
        ("bad.jsonl", '{"id": "a", "text": "x"}\n{"id": "b", "text": \n{"id": "c", "text": "z"}\n',
         ["bad.jsonl", "line 2", "invalid JSON"]),
        ("bad.jsonl", '{"id": "a", "text": "x"}\n\n\n["b", "y"]\n', ["bad.jsonl", "line 4", "not a JSON object"]),
        ("bad.json", "[1, 2]", ["bad.json", "item 1", "not a JSON object"]),
        ("bad.json", '[{"id": "a", "text": "x"}, "b"]', ["bad.json", "item 2", "not a JSON object"]),
        ("bad.json", '"just a string"', ["bad.json", "array of objects"]),
        ("bad.json", "42", ["bad.json", "array of objects"]),
        ("nosuffix", '{"id": "a", "text": "x"}\n{"id": "b", "text": }\n', ["nosuffix", "line 2", "invalid JSON"]),
    ],
    ids=["csv-unterminated-quote", "csv-bad-quote", "csv-too-many-fields", "csv-too-few-fields",
         "csv-duplicate-header", "tsv-too-many-fields", "json-truncated", "json-single-quotes",
         "nljson-bad-line", "nljson-array-line", "json-array-of-numbers", "json-mixed-array",
         "json-string", "json-number", "detected-nljson-bad-line"],
)
def test_malformed_input_file(fails, name, data, fragments, target):
    fails(["embed-multi", target, name, "-m", "test-letters"], *fragments, files={name: data})


@pytest.mark.parametrize(
    "data, fmt, fragments",
    [
        ('id,text\na,"open\n', "csv", ["stdin", "line 2", "malformed CSV"]),
        ('{"id": "a"}\n{oops}\n', "nl", ["stdin", "line 2", "invalid JSON"]),
        ("[{]", "json", ["stdin", "invalid JSON"]),
    ],
)
@pytest.mark.parametrize("override", [True, False])
def test_malformed_stdin(fails, data, fmt, fragments, override):
    args = ["--format", fmt] if override else []
    fails(["embed-multi", "docs", "-", *args], *fragments, input=data)


@pytest.mark.parametrize(
    "name, data, args, fragments",
    [
        ("in.csv", "key,text\na,x\n", [], ["in.csv", "no 'id' column", "key, text", "--id-column"]),
        ("in.json", '[{"key": "a", "text": "x"}]', [], ["in.json item 1", "no 'id' column", "key, text"]),
        ("in.jsonl", '{"id": "a", "text": "x"}\n{"key": "b", "text": "y"}\n', [],
         ["in.jsonl line 2", "no 'id' column", "key, text"]),
        ("in.csv", "id,text\na,x\n", ["--id-column", "slug"], ["in.csv line 2", "no 'slug' column", "id, text"]),
        ("in.csv", "id,text\na,x\n", ["--content-column", "body"], ["in.csv line 2", "no 'body' column"]),
        ("in.csv", "id,text\na,x\n", ["--metadata-column", "author"], ["in.csv line 2", "no 'author' column"]),
        ("in.csv", "id,text\n,x\n", [], ["in.csv line 2", "'id' is empty"]),
        ("in.json", '[{"id": {"a": 1}, "text": "x"}]', [], ["in.json item 1", "'id'", "not a scalar"]),
        ("in.json", '[{"id": null, "text": "x"}]', [], ["in.json item 1", "'id' is empty"]),
        ("in.csv", 'id,text,metadata\na,x,{not json}\n', [], ["in.csv line 2", "metadata", "not valid JSON"]),
        ("in.csv", 'id,text,metadata\na,x,"[1, 2]"\n', [], ["in.csv line 2", "metadata", "JSON object"]),
        ("in.json", '[{"id": "a", "text": "x", "metadata": 5}]', [], ["in.json item 1", "metadata", "JSON object"]),
    ],
    ids=["csv-no-id", "json-no-id", "nljson-no-id-line-2", "id-column-missing", "content-column-missing",
         "metadata-column-missing", "csv-empty-id", "json-object-id", "json-null-id", "metadata-not-json",
         "metadata-array", "metadata-number"],
)
def test_bad_columns(fails, name, data, args, fragments):
    fails(["embed-multi", "new", name, "-m", "test-letters", *args], *fragments, files={name: data})


@pytest.mark.parametrize("target", ["docs", "new"])
@pytest.mark.parametrize(
    "name, data, args, fragments",
    [
        ("dup.csv", "id,text\na,one\nb,two\na,three\n", [], ["duplicate id 'a'"]),
        ("dup.jsonl", '{"id": 1, "text": "one"}\n{"id": "1", "text": "two"}\n', [], ["duplicate id '1'"]),
        ("dup.csv", "slug,text\nx,one\nx,two\n", ["--id-column", "slug", "--prefix", "p/"], ["duplicate id 'p/x'"]),
    ],
)
def test_duplicate_ids(fails, name, data, args, fragments, target):
    fails(["embed-multi", target, name, "-m", "test-letters", *args], *fragments, files={name: data})


@pytest.mark.parametrize("target", ["docs", "new"])
def test_duplicate_ids_from_repeated_files(fails, target):
    fails(["embed-multi", target, "--files", "notes", "*.md", "--files", "notes", "*.md", "-m", "test-letters"],
          "duplicate id 'a.md'", files={"notes/a.md": "hello"})


# ---------------------------------------------------------------- encodings, paths


LATIN = "id,text\nx,caf\xe9\n".encode("latin-1")


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["embed-multi", "docs", "latin.csv"], ["latin.csv", "not valid utf-8", "0xe9", "offset 13"]),
        (["embed-multi", "docs", "-"], ["stdin", "not valid utf-8"]),
        (["embed-multi", "docs", "--files", "dir", "**/*.txt"], ["sub/latin.txt", "not valid utf-8", "0xe9", "offset 3"]),
        (["embed-multi", "docs", "--files", "dir", "**/*"], ["latin.txt", "not valid utf-8"]),
        (["embed", "docs", "z", "-i", "latin.csv"], ["latin.csv", "not valid utf-8"]),
        (["embed", "docs", "z"], ["stdin", "not valid utf-8"]),
        (["embed", "-i", "latin.csv", "-m", "test-letters"], ["latin.csv", "not valid utf-8"]),
        (["similar", "docs", "-i", "latin.csv"], ["latin.csv", "not valid utf-8"]),
        (["similar", "docs", "-i", "-"], ["stdin", "not valid utf-8"]),
    ],
)
def test_not_utf8(fails, args, fragments):
    fails(args, *fragments, input=LATIN,
          files={"latin.csv": LATIN, "dir/ok.txt": "fine", "dir/sub/latin.txt": b"caf\xe9"})


def test_unknown_encoding(fails):
    fails(["embed-multi", "docs", "--files", "dir", "*.txt", "--encoding", "klingon"], "klingon", "encoding",
          files={"dir/a.txt": "x"})


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["embed-multi", "docs", "folder"], ["folder", "directory"]),
        (["embed-multi", "docs", "missing.csv"], ["missing.csv", "No such file"]),
        (["embed-multi", "docs", "--files", "missing", "*.md"], ["missing", "not a directory"]),
        (["embed-multi", "docs", "--files", "file.txt", "*.md"], ["file.txt", "not a directory"]),
        (["embed", "docs", "z", "-i", "folder"], ["folder", "directory"]),
        (["embed", "docs", "z", "-i", "missing.txt"], ["missing.txt", "No such file"]),
        (["embed", "-i", "missing.txt", "-m", "test-letters"], ["missing.txt", "No such file"]),
        (["similar", "docs", "-i", "folder"], ["folder", "directory"]),
        (["similar", "docs", "-i", "missing.txt"], ["missing.txt", "No such file"]),
    ],
)
def test_bad_input_paths(fails, args, fragments):
    fails(args, *fragments, files={"folder/inside.csv": GOOD_CSV, "file.txt": "text"})


@pytest.mark.parametrize(
    "args",
    [
        ["collections"],
        ["collections", "list", "--json"],
        ["collections", "delete", "docs"],
        ["similar", "docs", "-c", "x"],
        ["delete", "docs", "a"],
        ["sql", "select 1"],
        ["embed", "docs", "a", "-c", "x"],
        ["embed-multi", "docs", "in.csv"],
    ],
)
def test_database_path_is_a_directory(fails, args):
    fails([*args, "-d", "dbdir"], "dbdir", "directory", files={"dbdir/x": "", "in.csv": GOOD_CSV})


@pytest.mark.parametrize(
    "args",
    [
        ["collections"],
        ["collections", "delete", "docs"],
        ["similar", "docs", "-c", "x"],
        ["similar", "docs", "a"],
        ["delete", "docs", "a"],
        ["sql", "select 1"],
    ],
)
def test_reading_commands_do_not_create_a_database(fails, args):
    fails([*args, "-d", "nowhere.db"], "nowhere.db", "does not exist")


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["embed-multi", "new", "bad.csv", "-m", "test-letters"], "malformed CSV"),
        (["embed-multi", "new", "dup.csv", "-m", "test-letters"], "duplicate id"),
        (["embed-multi", "new", "in.csv", "-m", "no-such-model"], "unknown model"),
        (["embed-multi", "bad name", "in.csv", "-m", "test-letters"], "invalid collection name"),
        (["embed-multi", "new", "--sql", "select 1 as x", "-m", "test-letters"], "no 'id' column"),
        (["embed-multi", "new", "--sql", "select * from posts", "-m", "test-letters"], "no such table"),
        (["embed", "new", "z", "-c", "x", "-m", "no-such-model"], "unknown model"),
        (["embed", "bad name", "z", "-c", "x", "-m", "test-letters"], "invalid collection name"),
        (["embed", "new", "z", "-c", "x", "-m", "test-letters", "--metadata", "[]"], "JSON object"),
    ],
)
def test_failed_commands_do_not_create_a_database(invoke, letters, tmp_path, args, fragment):
    (tmp_path / "bad.csv").write_text('id,text\na,"open\n')
    (tmp_path / "dup.csv").write_text("id,text\na,x\na,y\n")
    (tmp_path / "in.csv").write_text(GOOD_CSV)
    before = files_in(tmp_path)
    assert_one_line_error(invoke(*args, "-d", "fresh.db"), fragment)
    assert files_in(tmp_path) == before
    assert letters.calls == 0


def test_database_from_environment_is_named(fails, monkeypatch):
    monkeypatch.setenv("EMBEDKIT_DATABASE", "elsewhere.db")
    fails(["collections"], "elsewhere.db", "does not exist")


# ---------------------------------------------------------------- collections, ids, models


@pytest.mark.parametrize(
    "args",
    [
        ["similar", "nope", "-c", "x"],
        ["similar", "nope", "a"],
        ["delete", "nope", "a"],
        ["collections", "delete", "nope"],
    ],
)
def test_unknown_collection(fails, args):
    message = fails(args, "no collection named 'nope'")
    assert "docs" in message and "mini" in message  # the collections there are


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["similar", "docs", "zzz"], ["no item with id 'zzz'", "'docs'"]),
        (["delete", "docs", "zzz"], ["no item with id 'zzz'", "'docs'"]),
        (["delete", "docs", "a", "zzz", "b"], ["no item with id 'zzz'"]),  # a and b stay
        (["similar", "docs", "A"], ["no item with id 'A'"]),  # ids are case-sensitive
    ],
)
def test_unknown_id(fails, existing, args, fragments):
    fails(args, *fragments)
    assert sorted(row["id"] for row in sqlite_utils.Database(existing)["docs"].rows) == ["a", "b"]


@pytest.mark.parametrize(
    "args, collection, model",
    [
        (["embed-multi", "docs", "in.csv", "-m", "all-MiniLM-L6-v2"], "docs", "all-MiniLM-L6-v2"),
        (["embed-multi", "mini", "in.csv", "-m", "test-letters"], "mini", "test-letters"),
        (["embed-multi", "mini", "--files", "dir", "*.txt", "-m", "test-letters"], "mini", "test-letters"),
        (["embed", "docs", "z", "-c", "x", "-m", "sentence-transformers/all-MiniLM-L6-v2"], "docs",
         "sentence-transformers/all-MiniLM-L6-v2"),
        (["embed", "mini", "z", "-c", "x", "-m", "test-letters"], "mini", "test-letters"),
        (["similar", "docs", "-c", "x", "-m", "all-MiniLM-L6-v2"], "docs", "all-MiniLM-L6-v2"),
        (["similar", "mini", "-c", "x", "-m", "test-letters"], "mini", "test-letters"),
    ],
)
def test_wrong_model_for_existing_collection(fails, args, collection, model):
    fails(args, f"collection {collection!r} uses model", f"not {model!r}",
          files={"in.csv": GOOD_CSV, "dir/a.txt": "text"})


@pytest.mark.parametrize(
    "args",
    [
        ["embed-multi", "new", "in.csv", "-m", "no-such-model"],
        ["embed-multi", "docs", "in.csv", "-m", "no-such-model"],
        ["embed", "new", "z", "-c", "x", "-m", "no-such-model"],
        ["embed", "-c", "x", "-m", "no-such-model"],
        ["similar", "docs", "-c", "x", "-m", "no-such-model"],
    ],
)
def test_unknown_model(fails, args):
    fails(args, "unknown model 'no-such-model'", "embedkit models", files={"in.csv": GOOD_CSV})


@pytest.mark.parametrize(
    "metadata, fragments",
    [
        ("{bad json", ["--metadata", "not valid JSON"]),
        ("{'single': 'quotes'}", ["--metadata", "not valid JSON"]),
        ("[1, 2]", ["--metadata", "JSON object", "list"]),
        ('"text"', ["--metadata", "JSON object", "str"]),
        ("3", ["--metadata", "JSON object", "int"]),
    ],
)
@pytest.mark.parametrize("target", ["docs", "new"])
def test_bad_metadata_option(fails, metadata, fragments, target):
    fails(["embed", target, "z", "-c", "text", "-m", "test-letters", "--metadata", metadata], *fragments)


# ---------------------------------------------------------------- --sql and --attach


@pytest.mark.parametrize(
    "query, fragments",
    [
        ("delete from posts", ["--sql", "readonly"]),
        ("delete from docs", ["--sql", "readonly"]),
        ("update docs set content = 'changed'", ["--sql", "readonly"]),
        ("insert into posts (title) values ('x') returning id, title", ["--sql", "readonly"]),
        ("drop table posts", ["--sql", "readonly"]),
        ("create table t (id text)", ["--sql", "readonly"]),
        ("pragma user_version = 7", ["--sql"]),
        ("select id, title from posts; delete from posts", ["--sql", "one statement"]),
        ("selec id from posts", ["--sql", "syntax error"]),
        ("select id, title from nowhere", ["--sql", "no such table: nowhere"]),
        ("select id, nope from posts", ["--sql", "no such column: nope"]),
        ("pragma foreign_keys = on", ["--sql", "returns no rows"]),
        ("select title from posts", ["--sql row 1", "no 'id' column", "title"]),
    ],
)
def test_bad_sql(fails, existing, query, fragments):
    fails(["embed-multi", "new", "--sql", query, "-m", "test-letters"], *fragments)
    db = sqlite_utils.Database(existing)
    assert db["posts"].count == 2
    assert sorted(row["id"] for row in db["docs"].rows) == ["a", "b"]
    assert "t" not in db.table_names()


def test_bad_sql_leaves_the_database_writable(fails, invoke, existing):
    """query_only is switched off again after a failed --sql."""
    fails(["embed-multi", "new", "--sql", "delete from posts", "-m", "test-letters"], "readonly")
    result = invoke("embed-multi", "docs", "--sql", "select 'c' as id, 'cherry' as text")
    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--attach", "blog", "missing.db", "--sql", "select * from blog.posts"],
         ["--attach blog", "missing.db", "no such database file"]),
        (["--attach", "blog", "folder", "--sql", "select * from blog.posts"], ["--attach blog", "folder"]),
        (["--attach", "blog", "other.db", "--sql", "delete from blog.entries"], ["--sql", "readonly"]),
        (["--attach", "blog", "other.db", "--sql", "select * from blog.nope"], ["no such table: blog.nope"]),
        (["in.csv", "--attach", "blog", "other.db"], ["--attach", "--sql"]),
    ],
)
def test_bad_attach(fails, existing, tmp_path, args, fragments):
    other = str(tmp_path / "other.db")
    sqlite_utils.Database(other)["entries"].insert({"id": "e", "text": "entry"})
    before = dump(other)
    fails(["embed-multi", "new", "-m", "test-letters", *args], *fragments,
          files={"folder/x": "", "in.csv": GOOD_CSV})
    assert dump(other) == before


# ---------------------------------------------------------------- collection names


@pytest.mark.parametrize(
    "name",
    ["has space", "semi;colon", "quote'd", 'dq"', "dot.ted", "slash/ed", "naïve", "_embedkit_x", "_EMBEDKIT_x",
     "sqlite_master", "SQLITE_x", "x" * 65, "", "docs\n"],
)
@pytest.mark.parametrize("command", ["embed-multi", "embed"])
def test_invalid_collection_name(fails, name, command):
    args = ["in.csv"] if command == "embed-multi" else ["z", "-c", "x"]
    fails([command, name, *args, "-m", "test-letters"], "invalid collection name", files={"in.csv": GOOD_CSV})


def test_longest_valid_name_is_accepted(invoke, existing, tmp_path):
    (tmp_path / "in.csv").write_text(GOOD_CSV)
    result = invoke("embed-multi", "x" * 64, "in.csv", "-m", "test-letters")
    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize("name", ["posts", "POSTS", "Posts", "DOCS", "Mini", "idx_posts", "v_posts"])
@pytest.mark.parametrize("command", ["embed-multi", "embed"])
def test_name_taken_by_another_table(fails, existing, name, command):
    conn = sqlite_utils.Database(existing)
    conn.execute("create index idx_posts on posts (title)")
    conn.execute("create view v_posts as select * from posts")
    conn.conn.close()
    args = ["in.csv"] if command == "embed-multi" else ["z", "-c", "x"]
    message = fails([command, name, *args, "-m", "test-letters"], "already", files={"in.csv": GOOD_CSV})
    assert repr(name.lower()) in message.lower()  # SQLite names ignore case


# ---------------------------------------------------------------- options


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["embed-multi", "docs"], ["give something to embed", "--pdf"]),
        (["delete", "docs", "a", "--filter", "tag=x"], ["ids", "--filter", "not both"]),
        (["delete", "docs"], ["ids", "--filter"]),
        (["embed", "docs", "z", "-c", "x", "-i", "in.csv"], ["-c", "-i"]),
        (["embed", "-c", "x", "-i", "in.csv", "-m", "test-letters"], ["-c", "-i"]),
        (["similar", "docs", "-c", "x", "-i", "in.csv"], ["-c", "-i"]),
        (["similar", "docs", "a", "-c", "x"], ["ID", "not both"]),
        (["similar", "docs", "a", "-i", "in.csv"], ["ID", "not both"]),
        (["similar", "docs", "-c", "x", "--keyword", "--hybrid"], ["--keyword and --hybrid cannot be used together"]),
        (["similar", "docs", "--hybrid", "-c", "x", "--keyword"], ["--keyword and --hybrid cannot be used together"]),
    ],
)
def test_two_inputs_at_once(fails, args, fragments):
    fails(args, *fragments, files={"in.csv": GOOD_CSV, "dir/a.txt": "text"})


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["embed-multi", "docs", "in.csv", "--batch-size", "0"], ["--batch-size", "0"]),
        (["embed-multi", "docs", "in.csv", "--batch-size", "-5"], ["--batch-size", "-5"]),
        (["embed-multi", "docs", "in.csv", "--batch-size", "many"], ["--batch-size", "many"]),
        (["embed-multi", "docs", "in.csv", "--format", "xml"], ["--format", "xml"]),
        (["similar", "docs", "-c", "x", "-n", "0"], ["--number", "0"]),
        (["embed", "-c", "x", "--format", "yaml"], ["--format", "yaml"]),
    ],
)
def test_bad_option_values(fails, args, fragments):
    fails(args, *fragments, files={"in.csv": GOOD_CSV})


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["embed", "docs", "-c", "x"], ["COLLECTION and ID"]),
        (["embed", "new", "-c", "x", "-m", "test-letters"], ["COLLECTION and ID"]),
        (["embed", "docs", "z", "-c", "x", "--format", "hex"], ["--format"]),
        (["embed", "-c", "x", "--store", "-m", "test-letters"], ["--store", "COLLECTION"]),
        (["embed", "-c", "x", "--metadata", "{}", "-m", "test-letters"], ["--metadata", "COLLECTION"]),
        (["embed", "docs", "z", "-c", "   "], ["empty"]),
        (["embed", "docs", "z"], ["empty"]),  # nothing on stdin
        (["similar", "docs"], ["give a text to search for (-c TEXT, -i FILE or on standard input)", "or the ID"]),
        (["similar", "docs", "-c", ""], ["empty"]),
        (["similar", "docs", "-i", "blank.txt"], ["empty"]),
    ],
)
def test_missing_or_conflicting_arguments(fails, args, fragments):
    fails(args, *fragments, input="", files={"blank.txt": "\n  \n"})


def test_an_unquoted_glob_the_shell_expanded_gets_a_hint_to_quote_it(tmp_path):
    for name in ("a.md", "b.md", "c.md"):
        (tmp_path / name).write_text(f"notes {name}")
    env = {k: v for k, v in os.environ.items() if k != "EMBEDKIT_DATABASE"}
    result = subprocess.run(f"{shlex.quote(EMBEDKIT)} embed-multi notes --files . *.md", shell=True, cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr == (
        "Error: --files . a.md: b.md, c.md came as INPUT too: did your shell expand an unquoted glob? "
        "Quote it: --files . '*.md'\n"
    )
    assert sorted(os.listdir(tmp_path)) == ["a.md", "b.md", "c.md"]  # no database made


def test_similar_with_neither_text_nor_id_at_a_terminal_says_what_to_pass(existing, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "EMBEDKIT_DATABASE"}
    status, shown = run_on_a_terminal([EMBEDKIT, "similar", "docs", "-d", existing], env, timeout=60)
    assert status == 1
    assert shown.strip() == (
        "Error: give a text to search for (-c TEXT, -i FILE or on standard input) "
        "or the ID of a stored item to find items like it"
    )


# ---------------------------------------------------------------- sql command


@pytest.mark.parametrize(
    "query, fragments",
    [
        ("selec 1", ["syntax error"]),
        ("select * from nowhere", ["no such table: nowhere"]),
        ("select embedkit_embed('no-such-model', 'x')", ["embedkit_embed", "unknown model 'no-such-model'"]),
        ("select embedkit_dims('not a blob')", ["embedkit_dims", "BLOB"]),
        ("select embedkit_cosine(embedding, x'0000803f') from docs", ["embedkit_cosine", "dimension"]),
        ("select :missing", ["binding"]),
    ],
)
def test_sql_command_errors(fails, query, fragments):
    fails(["sql", query], *fragments)
