"""Reading Chroma persistent directories written by the real chromadb package."""

import json
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import embedkit
from embedkit.errors import EmbedkitError
from embedkit.importers.chroma import ChromaDirectory

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def chroma_dir(tmp_path_factory):
    """(directory, what chromadb's own get() returns for each collection)."""
    pytest.importorskip("chromadb")
    path = tmp_path_factory.mktemp("chroma") / "store"
    done = subprocess.run([sys.executable, str(HERE / "chroma_fixture.py"), str(path)], capture_output=True,
                          text=True, check=True, env={**os.environ, "ANONYMIZED_TELEMETRY": "False"})
    return path, json.loads(done.stdout.strip().splitlines()[-1])


def read_all(path, name):
    with ChromaDirectory(path) as directory:
        collection = directory.collection(name)
        items = {}
        for batch in directory.batches(collection, batch_rows=400):
            for id, vector, document, metadata in zip(batch.ids, batch.vectors, batch.content, batch.metadata):
                items[id] = {"embedding": [float(v) for v in vector], "document": document, "metadata": metadata}
        return collection, items


def test_reads_what_chroma_returns(chroma_dir):
    path, expected = chroma_dir
    with ChromaDirectory(path) as directory:
        found = {c.name: c for c in directory.collections()}
    assert sorted(found) == ["bare", "papers"]
    assert found["papers"].count == 1499 and found["papers"].space == "l2"
    assert found["bare"].space == "cosine"
    for name in ("papers", "bare"):
        _, items = read_all(path, name)
        assert items == expected[name]
    _, papers = read_all(path, "papers")
    # The last writes, which only the log has, are there.
    assert "p7" not in papers and "p1200" not in papers
    assert papers["p6"]["embedding"] == [1.0] * 8 and papers["p6"]["document"] == "a new text"
    assert papers["p5"]["metadata"]["year"] == 1999 and "venue" not in papers["p5"]["metadata"]
    assert papers["p10"]["metadata"] == {"year": 2010, "score": 1.0, "open": False, "venue": "v3", "tags": ["a", "b"]}
    assert papers["new"] == {"embedding": [0.5] * 8, "document": "added last", "metadata": None}


def copy(chroma_dir, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(chroma_dir[0], target)
    return target


def test_refuses_a_newer_format(chroma_dir, tmp_path):
    target = copy(chroma_dir, tmp_path)
    conn = sqlite3.connect(target / "chroma.sqlite3")
    with conn:
        conn.execute("insert into migrations (dir, version, filename, sql, hash) "
                     "values ('sysdb', 11, '00011-future.sqlite.sql', '', '')")
    conn.close()
    with pytest.raises(EmbedkitError, match=r"made by a Chroma newer than 1\.5\.9 .*sysdb/00011-future"):
        ChromaDirectory(target)


def test_refuses_an_unknown_index_version(chroma_dir, tmp_path):
    target = copy(chroma_dir, tmp_path)
    header = next(target.glob("*/index_metadata.pickle")).parent / "header.bin"  # the collection of 1,500
    data = bytearray(header.read_bytes())
    data[:4] = struct.pack("<i", 2)
    header.write_bytes(bytes(data))
    with ChromaDirectory(target) as directory:
        with pytest.raises(EmbedkitError, match="hnswlib index format version 2"):
            list(directory.batches(directory.collection("papers")))


def test_refuses_chroma_0_3_and_other_directories(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "chroma-embeddings.parquet").write_bytes(b"PAR1")
    with pytest.raises(EmbedkitError, match="Chroma 0.3 directory"):
        ChromaDirectory(tmp_path / "old")
    with pytest.raises(EmbedkitError, match="no chroma.sqlite3"):
        ChromaDirectory(tmp_path)
    with pytest.raises(EmbedkitError, match="not a directory"):
        ChromaDirectory(tmp_path / "missing")


def test_a_pickle_naming_code_is_refused(chroma_dir, tmp_path):
    target = copy(chroma_dir, tmp_path)
    mapping = next(target.glob("*/index_metadata.pickle"))
    # A pickle that would call os.system if loaded with pickle.load.
    mapping.write_bytes(b"cos\nsystem\n(S'echo unsafe'\ntR.")
    with ChromaDirectory(target) as directory:
        with pytest.raises(EmbedkitError, match="refers to os.system"):
            list(directory.batches(directory.collection("papers")))


def test_import_chroma_copies_every_collection(chroma_dir, invoke, db_path):
    path, expected = chroma_dir
    result = invoke("import-chroma", path)
    assert result.exit_code == 0, result.output
    assert "papers: 1499 added, 0 updated, 0 unchanged" in result.output
    assert "bare: 2 added, 0 updated, 0 unchanged" in result.output
    with embedkit.Database(db_path) as db:
        papers = db.collection("papers")
        assert papers.model_id is None and papers.dimensions == 8 and papers.count() == 1499
        for id in ("p0", "p5", "p6", "p999", "p1499", "new"):
            entry = papers.get(id)
            assert papers.vector(id).tolist() == expected["papers"][id]["embedding"]
            assert (entry.content, entry.metadata) == (expected["papers"][id]["document"], expected["papers"][id]["metadata"])
        # The documents are searchable by keyword, the vectors by item.
        assert [e.id for e in papers.similar("number 1234", mode="keyword", n=1)] == ["p1234"]
        assert len(papers.similar_by_id("p10", n=3)) == 3
    again = invoke("import-chroma", path, "papers")
    assert "papers: 0 added, 0 updated, 1499 unchanged" in again.output


def test_import_chroma_with_a_model_and_a_new_name(chroma_dir, invoke, db_path, letters):
    path, _ = chroma_dir
    result = invoke("import-chroma", path, "bare", "--into", "shapes", "-m", "test-letters")
    # The vectors are 3-dimensional; test-letters makes 8.
    assert result.exit_code == 1 and "the vector of 'x' has 3 dimensions, expected 8" in result.output
    with embedkit.Database(db_path) as db:
        assert db.collection("shapes").count() == 0


def test_import_chroma_refuses_an_unknown_format_in_one_line(chroma_dir, invoke, tmp_path, db_path):
    target = copy(chroma_dir, tmp_path)
    conn = sqlite3.connect(target / "chroma.sqlite3")
    with conn:
        conn.execute("insert into migrations (dir, version, filename, sql, hash) values ('metadb', 7, '00007-x.sqlite.sql', '', '')")
    conn.close()
    result = invoke("import-chroma", target)
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "made by a Chroma newer than 1.5.9 (its chroma.sqlite3 has migration metadb/00007-x.sqlite.sql)" in result.output
    with embedkit.Database(db_path) as db:
        assert db.collection_names() == []
