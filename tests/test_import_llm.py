"""llm embeddings databases, made by the real llm package: copied (import-llm) and searched in place."""

import asyncio
import hashlib
import json

import pytest
import sqlite_utils

pytest.importorskip("llm")

import llm  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from llm.cli import cli as llm_cli  # noqa: E402

import embedkit  # noqa: E402
import llm_fixture  # noqa: E402
from conftest import dump  # noqa: E402
from embedkit import storage  # noqa: E402

DOCS = [("1", "Backing up SQLite with the backup command"), ("2", "Sourdough bread at home"),
        ("3", "Fixing a bicycle tire puncture")]


def make_llm_database(path, model="test-letters"):
    """docs (embed-multi of a CSV, --store), notes (no text stored, metadata), images (binary)."""
    llm_fixture.register()
    csv = path.parent / "docs.csv"
    csv.write_text("id,content\n" + "".join(f"{id},{text}\n" for id, text in DOCS))
    result = CliRunner().invoke(llm_cli, ["embed-multi", "docs", str(csv), "-m", model, "-d", str(path), "--store"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    db = sqlite_utils.Database(path)
    notes = llm.Collection("notes", db, model_id="test-letters")
    notes.embed("n1", "a note about oranges", metadata={"tags": ["fruit"], "n": 1})
    notes.embed("n2", "another note", metadata=None, store=True)
    llm.Collection("images", db, model_id="test-bytes").embed("img", b"\x89PNG binary", store=True)
    db.close()
    return csv


@pytest.fixture
def llm_db(tmp_path):
    path = tmp_path / "llm.db"
    return path, make_llm_database(path)


def llm_rows(path, collection):
    with sqlite_utils.Database(path) as db:
        return {row["id"]: row for row in db.query(
            "select e.* from embeddings e join collections c on c.id = e.collection_id where c.name = ?", [collection])}


def test_import_llm_copies_vectors_text_metadata_and_hashes(invoke, llm_db, db_path, letters):
    path, _ = llm_db
    result = invoke("import-llm", path)
    assert result.exit_code == 0, result.output
    assert "docs: 3 added, 0 updated, 0 unchanged, model test-letters" in result.output
    assert "images: 1 added, 0 updated, 0 unchanged, model test-bytes (1 with binary content" in result.output
    with embedkit.Database(db_path) as db:
        assert db.collection_names() == ["docs", "images", "notes"]
        stored = {row[0]: row for row in db.conn.execute("select id, embedding, content, metadata, content_hash from notes")}
        for name in ("docs", "notes"):
            collection = db.collection(name)
            assert collection.model_id == "test-letters" and collection.hash == "md5"
            for id, row in llm_rows(path, name).items():
                assert collection.vector(id).tobytes() == row["embedding"]
                assert collection.get(id).content == row["content"]
                assert collection.get(id).metadata == (json.loads(row["metadata"]) if row["metadata"] else None)
        for id, row in llm_rows(path, "notes").items():
            assert stored[id][4] == row["content_hash"]
        assert stored["n1"][2] is None and stored["n1"][3] == '{"tags":["fruit"],"n":1}'  # compact JSON
        assert stored["n1"][4] == hashlib.md5(b"a note about oranges").digest()
        image = db.conn.execute("select content, content_hash from images").fetchone()
        assert image == (None, None)  # a vector of bytes stands for no text
    # Copied again: nothing to do.
    assert "docs: 0 added, 0 updated, 3 unchanged" in invoke("import-llm", path, "docs").output


def test_embed_multi_after_import_llm_embeds_nothing(invoke, llm_db, db_path, letters):
    path, csv = llm_db
    invoke("import-llm", path, "docs")
    letters.calls = 0
    result = invoke("embed-multi", "docs", csv, "--store")
    assert result.exit_code == 0, result.output
    assert "0 embedded, 0 reused, 0 updated, 3 unchanged, 0 failed" in result.output
    assert letters.calls == 0
    # New input is embedded as embedkit does, hashed as llm does.
    csv.write_text(csv.read_text() + "4,A new post about rye\n")
    assert "1 embedded, 0 reused, 0 updated, 3 unchanged" in invoke("embed-multi", "docs", csv, "--store").output
    with embedkit.Database(db_path) as db:
        digest = db.conn.execute("select content_hash from docs where id = '4'").fetchone()[0]
    assert digest == hashlib.md5(b"A new post about rye").digest()


def test_import_llm_errors(invoke, llm_db, tmp_path, db_path):
    path, _ = llm_db
    for args, message in [
        ((path, "missing"), "no collection named 'missing' in"),
        ((path, "docs", "notes", "--into", "both"), "--into names one collection; 2 are being imported"),
        ((tmp_path / "docs.csv",), "not an SQLite database"),
    ]:
        result = invoke("import-llm", *args)
        assert result.exit_code == 1 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
    invoke("import-llm", path, "docs", "--into", "papers")
    with embedkit.Database(db_path) as db:
        assert db.collection("papers").count() == 3
        db.create_collection("mine", model="test-letters")
    result = invoke("import-llm", path, "docs", "--into", "mine")
    assert "collection 'mine' exists and is not a copy of llm's 'docs'" in result.output


def test_an_llm_database_is_searched_in_place(invoke, llm_db, letters):
    path, _ = llm_db
    before = dump(path)
    listed = invoke("collections", "--json", "-d", path)
    assert [(c["name"], c["model"], c["count"]) for c in json.loads(listed.output)] == [
        ("docs", "test-letters", 3), ("images", "test-bytes", 1), ("notes", "test-letters", 2)]
    found = [json.loads(line) for line in invoke("similar", "docs", "-c", "backup of sqlite", "-d", path).output.splitlines()]
    with embedkit.Database(":memory:") as scratch:
        copy = scratch.create_collection("copy", model="test-letters")
        copy.embed_multi([embedkit.Item(id, text) for id, text in DOCS], store=True)
        expected = copy.similar("backup of sqlite")
        nearest = copy.similar_by_id("1", n=1)[0]
        best = copy.similar("puncture", n=1)[0].id
    assert [(r["id"], round(r["score"], 6)) for r in found] == [(e.id, round(e.score, 6)) for e in expected]
    assert found[0]["content"] == DOCS[0][1]
    by_id = json.loads(invoke("similar", "docs", "1", "-n", "1", "-d", path).output)
    assert (by_id["id"], round(by_id["score"], 6)) == (nearest.id, round(nearest.score, 6))
    sql = invoke("sql", "select e.id from embeddings e join collections c on c.id = e.collection_id where c.name = 'docs' "
                 "order by embedkit_cosine(embedding, embedkit_query('docs', 'puncture')) desc limit 1", "-d", path)
    assert json.loads(sql.output) == {"id": best}
    # Nothing was written to llm's file, not even the journal mode.
    assert dump(path) == before
    conn = storage.sqlite3.connect(path)
    assert conn.execute("pragma journal_mode").fetchone()[0] == "delete"
    conn.close()
    for args in [("embed-multi", "docs", path.parent / "docs.csv"), ("delete", "docs", "1"), ("index", "docs", "--quantize", "int8"),
                 ("similar", "docs", "-c", "bread", "--keyword")]:
        result = invoke(*args, "-d", path)
        assert result.exit_code == 1, (args, result.output)
    assert "is llm's, read in place" in invoke("delete", "docs", "1", "-d", path).output
    assert dump(path) == before


def test_datasette_pages_over_an_llm_database(llm_db, letters):
    from datasette.app import Datasette

    path, _ = llm_db
    ds = Datasette([], immutables=[str(path)])

    def get(url):
        return asyncio.run(ds.client.get(url))

    data = get("/llm/embeddings/-/similar.json?collection=docs&q=sourdough+bread&n=2").json()
    assert data["ok"] and data["collection"] == "docs" and data["rows"][0]["id"] == "2"
    assert get("/llm/embeddings/-/similar.json?q=bread").status_code == 400
    page = get("/llm/embeddings/-/similar?collection=docs&id=1")
    assert page.status_code == 200 and "Similar items in docs" in page.text
    assert 'href="/llm/embeddings/1,2"' in page.text or 'href="/llm/embeddings/1,3"' in page.text
    assert '<input type="hidden" name="collection" value="docs">' in page.text
    row = get("/llm/embeddings/1,2")
    assert '/llm/embeddings/-/similar?id=2&collection=docs' in row.text
    table = get("/llm/embeddings")
    assert 'href="/llm/embeddings/-/similar?collection=notes">Similar items in notes' in table.text


@pytest.mark.slow
def test_llm_made_with_the_real_model_is_searched_and_copied(invoke, tmp_path, db_path, minilm):
    path = tmp_path / "llm.db"
    make_llm_database(path, model="sentence-transformers/all-MiniLM-L6-v2")
    top = json.loads(invoke("similar", "docs", "-c", "flat tyre on my bike", "-n", "1", "-d", path).output)
    assert top["id"] == "3"
    output = invoke("import-llm", path, "docs").output
    assert "model all-MiniLM-L6-v2" in output  # llm-sentence-transformers' id, as embedkit names the model
    assert json.loads(invoke("similar", "docs", "-c", "flat tyre on my bike", "-n", "1").output)["id"] == "3"
