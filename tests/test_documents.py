"""Documents: PDFs, chunked files and rows, sources replaced as a whole, --sync, --unique and
delete by metadata. PDFs are real files written by tests/pdfs.py; URLs are in test_fetch.py."""

import json

import numpy as np
import pytest
import sqlite_utils

import embedkit
import pdfs
from conftest import dump
from embedkit import models
from embedkit.chunking import Chunker
from embedkit.errors import EmbedkitError
from embedkit.sources.pdf import PdfSource

# Long enough for several chunks per page at the default chunk size (1000 characters).
ROUTING = "Mixture of depths routing lets a transformer skip tokens at some layers. " * 30
TERNARY = "Ternary weights of minus one, zero and one make BitNet models cheap to run. " * 25
SPACES = "State space models such as Mamba scan sequences in linear time. " * 20


def papers(folder, **texts):
    """PDFs named after the keyword, each page a text, titled after its name."""
    folder.mkdir(exist_ok=True)
    return {name: str(pdfs.text_pdf(folder / f"{name}.pdf", pages, title=name.title())) for name, pages in texts.items()}


def table(db_path, name="papers"):
    """id -> row (metadata parsed) of a collection."""
    found = {}
    for row in sqlite_utils.Database(db_path)[name].rows:
        row["metadata"] = json.loads(row["metadata"]) if row["metadata"] else None
        found[row["id"]] = row
    return found


def sources(db_path, collection="papers"):
    return {
        row["source"]: row
        for row in sqlite_utils.Database(db_path)["_embedkit_sources"].rows_where("collection = ?", [collection])
    }


def summary(result):
    return result.stderr.strip().splitlines()[-1]


def by_source(rows):
    found = {}
    for id, row in rows.items():
        found.setdefault(row["metadata"]["source"], set()).add(id)
    return found


# ---------------------------------------------------------------- the papers workflow


def test_build_rerun_add_change_and_sync(invoke, letters, tmp_path, db_path):
    files = papers(tmp_path / "pdfs", routing=[ROUTING, SPACES], ternary=[TERNARY], spaces=[SPACES.replace("linear", "near-linear")])
    first = [files["routing"], files["ternary"]]

    result = invoke("embed-multi", "papers", "--pdf", first[0], "--pdf", first[1], "--store", "-m", "test-letters")
    assert result.exit_code == 0, result.output
    built = table(db_path)
    routing, ternary = by_source(built)[files["routing"]], by_source(built)[files["ternary"]]
    assert {built[id]["metadata"]["page"] for id in routing} == {1, 2}
    assert summary(result) == f"{len(built)} embedded, 0 reused, 0 updated, 0 unchanged, 0 failed"
    chunk = built[f"{files['routing']}#page=1&chunk=2"]
    assert chunk["metadata"] == {"source": files["routing"], "page": 1, "chunk": 2, "title": "Routing"}
    assert all(len(row["content"]) <= 1000 for row in built.values())
    calls = letters.calls

    # Re-run: nothing read, nothing embedded, nothing written.
    before = dump(db_path)
    result = invoke("embed-multi", "papers", *first, "--store", "-m", "test-letters")
    assert summary(result) == f"0 embedded, 0 reused, 0 updated, {len(built)} unchanged, 0 failed"
    assert letters.calls == calls
    assert dump(db_path) == before

    # Add one: only its chunks are embedded.
    result = invoke("embed-multi", "papers", *first, files["spaces"], "--store", "-m", "test-letters")
    added = set(table(db_path)) - set(built)
    assert {table(db_path)[id]["metadata"]["source"] for id in added} == {files["spaces"]}
    assert summary(result).startswith(f"{len(added)} embedded, 0 reused, 0 updated, {len(built)} unchanged")

    # Change one (its second page goes): its chunks are replaced, the others are untouched.
    untouched = {id: row for id, row in table(db_path).items() if row["metadata"]["source"] != files["routing"]}
    pdfs.text_pdf(tmp_path / "pdfs" / "routing.pdf", [ROUTING.replace("skip", "bypass")], title="Routing")
    result = invoke("embed-multi", "papers", *first, files["spaces"], "--store", "-m", "test-letters")
    assert result.exit_code == 0
    after = table(db_path)
    assert {id: row for id, row in after.items() if row["metadata"]["source"] != files["routing"]} == untouched
    now = by_source(after)[files["routing"]]
    assert {after[id]["metadata"]["page"] for id in now} == {1}
    assert all("bypass" in after[id]["content"] for id in now)
    removed = len(routing - now)
    assert removed > 0 and summary(result).endswith(f", {removed} removed")
    assert sources(db_path)[files["routing"]]["items"] == len(now)

    # Remove one with --sync: its chunks and its record go, the rest stay.
    result = invoke("embed-multi", "papers", files["routing"], files["spaces"], "--sync", "-m", "test-letters", "--store")
    assert result.exit_code == 0
    assert files["ternary"] not in by_source(table(db_path))
    assert set(sources(db_path)) == {files["routing"], files["spaces"]}
    assert summary(result) == f"0 embedded, 0 reused, 0 updated, {len(table(db_path))} unchanged, 0 failed, {len(ternary)} removed"


def test_real_model_answers_with_source_and_page(invoke, minilm, tmp_path, db_path):
    files = papers(tmp_path / "pdfs", depth=[SPACES, ROUTING], bitnet=[TERNARY])
    assert invoke("embed-multi", "papers", *files.values(), "--store").exit_code == 0
    result = invoke("similar", "papers", "-c", "which layers can skip tokens?", "-n", "1")
    best = json.loads(result.stdout)
    assert best["metadata"]["source"] == files["depth"] and best["metadata"]["page"] == 2
    assert best["id"].startswith(files["depth"] + "#page=2&chunk=")
    result = invoke("similar", "papers", "-c", "ternary weights", "--unique", "source", "-n", "5")
    hits = [json.loads(line) for line in result.stdout.splitlines()]
    assert [hit["metadata"]["source"] for hit in hits] == [files["bitnet"], files["depth"]]
    assert hits[0]["score"] > hits[1]["score"]


# ---------------------------------------------------------------- hostile documents


FAILING = [
    ("encrypted", pdfs.encrypted_pdf, "encrypted: it needs a password to open"),
    ("image-only", pdfs.image_only_pdf, "no text in its 2 pages: scanned images without a text layer? Run OCR"),
    ("truncated", pdfs.truncated_pdf, "damaged PDF: "),
    ("zero-byte", pdfs.zero_byte_pdf, "empty file (0 bytes)"),
    ("not-a-pdf", pdfs.not_a_pdf, "not a PDF (it does not start with %PDF-)"),
]


@pytest.mark.parametrize("name, make, reason", FAILING, ids=[f[0] for f in FAILING])
def test_a_bad_pdf_fails_alone_in_one_line(invoke, letters, tmp_path, db_path, name, make, reason):
    good = papers(tmp_path, good=[TERNARY])["good"]
    bad = str(make(tmp_path / f"{name}.pdf"))
    result = invoke("embed-multi", "papers", "--pdf", bad, "--pdf", good, "-m", "test-letters")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"Failed: {bad}: {reason}")
    assert "Traceback" not in result.output
    assert lines[1].endswith("0 unchanged, 1 failed")
    assert set(by_source(table(db_path))) == {good}  # nothing of the bad one
    assert set(sources(db_path)) == {good}


RECOVERED = [
    # pypdf repairs a broken cross-reference table by scanning the file
    ("broken-xref", pdfs.broken_xref_pdf, 2),
    # AES with an empty user password: opens without one, as many real papers do
    ("owner-password", pdfs.owner_encrypted_pdf, 1),
    ("hundreds-of-pages", lambda path: pdfs.many_pages_pdf(path, 300), 300),
    ("right-to-left", pdfs.rtl_pdf, 2),
]


@pytest.mark.parametrize("name, make, pages", RECOVERED, ids=[r[0] for r in RECOVERED])
def test_difficult_pdfs_are_ingested(invoke, letters, tmp_path, db_path, name, make, pages):
    path = str(make(tmp_path / f"{name}.pdf"))
    result = invoke("embed-multi", "papers", path, "--store", "-m", "test-letters")
    assert result.exit_code == 0, result.output
    rows = table(db_path)
    assert {row["metadata"]["page"] for row in rows.values()} == set(range(1, pages + 1))
    assert all(row["content"].strip() for row in rows.values())


def test_right_to_left_text_is_kept_in_logical_order(invoke, letters, tmp_path, db_path):
    invoke("embed-multi", "papers", str(pdfs.rtl_pdf(tmp_path / "rtl.pdf")), "--store", "-m", "test-letters")
    text = " ".join(row["content"] for row in table(db_path).values())
    for word in ("שלום", "עולם", "בעברית", "مرحبا", "بالعالم", "العربية"):
        assert word in text


def test_many_pages_give_distinct_page_metadata(invoke, letters, tmp_path, db_path):
    path = str(pdfs.many_pages_pdf(tmp_path / "long.pdf", 300))
    invoke("embed-multi", "papers", path, "--store", "-m", "test-letters")
    rows = table(db_path)
    assert rows[f"{path}#page=17&chunk=1"]["content"].startswith("Page 17 of 300.")
    assert len(rows) == 300


def test_missing_and_directory_paths_fail_alone(invoke, letters, tmp_path, db_path):
    good = papers(tmp_path, good=[TERNARY])["good"]
    (tmp_path / "folder.pdf").mkdir()
    result = invoke("embed-multi", "papers", "--pdf", "nowhere.pdf", "--pdf", "folder.pdf", "--pdf", good, "-m", "test-letters")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[:2] == [
        "Failed: nowhere.pdf: No such file or directory",
        "Failed: folder.pdf: is a directory, not a PDF",
    ]
    assert set(by_source(table(db_path))) == {good}


def test_a_pdf_glob_that_matches_nothing_is_an_error(invoke, letters, tmp_path):
    result = invoke("embed-multi", "papers", "--pdf", "pdfs/*.pdf", "-m", "test-letters")
    assert result.exit_code == 1
    assert result.stderr.strip() == "Error: --pdf pdfs/*.pdf: no files match"
    assert not (tmp_path / "embeddings.db").exists()


def test_a_quoted_pdf_glob_is_expanded(invoke, letters, tmp_path, db_path):
    papers(tmp_path / "pdfs", one=[TERNARY], two=[SPACES])
    assert invoke("embed-multi", "papers", "--pdf", "pdfs/*.pdf", "-m", "test-letters").exit_code == 0
    assert set(by_source(table(db_path))) == {"pdfs/one.pdf", "pdfs/two.pdf"}


# ---------------------------------------------------------------- atomic replacement and interruption


class Flaky(models.EmbeddingModel):
    """The letters model, but the call numbered `fail_on` is interrupted (Ctrl-C)."""

    model_id = "test-flaky"
    dimensions = 8
    source = "tests"
    fail_on = None

    def _embed(self, texts):
        if self.calls == self.fail_on:
            raise KeyboardInterrupt
        return models.get_model("test-letters")._embed(texts)


FLAKY = models.register(Flaky())


def test_an_interrupted_source_leaves_no_partial_rows(db, tmp_path):
    files = papers(tmp_path, first=[TERNARY], second=[ROUTING, SPACES])
    collection = db.create_collection("papers", model="test-flaky")
    inputs = [PdfSource(files["first"]), PdfSource(files["second"])]
    FLAKY.calls, FLAKY.fail_on = 0, 3  # batches of 2: the first source done, the second half way
    with pytest.raises(KeyboardInterrupt):
        collection.embed_multi(inputs, batch_size=2)
    assert set(by_source({e.id: {"metadata": e.metadata} for e in collection})) == {files["first"]}
    first_chunks = sources(db.path)[files["first"]]["items"]
    assert len(collection) == first_chunks and 1 < first_chunks <= 4
    assert set(sources(db.path)) == {files["first"]}

    FLAKY.calls, FLAKY.fail_on = 0, None
    stats = collection.embed_multi(inputs, batch_size=2)
    assert stats.unchanged == first_chunks and stats.failed == 0
    assert len(collection) == first_chunks + stats.embedded + stats.reused
    assert set(sources(db.path)) == set(files.values())


def test_a_changed_source_is_replaced_in_one_transaction(db, tmp_path):
    """Readers see the old chunks or the new ones, never a mix: an interrupted change keeps the old."""
    path = tmp_path / "paper.pdf"
    pdfs.text_pdf(path, [ROUTING, SPACES])
    collection = db.create_collection("papers", model="test-flaky")
    FLAKY.calls, FLAKY.fail_on = 0, None
    collection.embed_multi([PdfSource(path)], store=True)
    before = dump(db.path)
    pdfs.text_pdf(path, [TERNARY, SPACES.upper(), ROUTING.lower()])
    FLAKY.calls, FLAKY.fail_on = 0, 1
    with pytest.raises(KeyboardInterrupt):
        collection.embed_multi([PdfSource(path)], store=True, batch_size=2)
    assert dump(db.path) == before


# ---------------------------------------------------------------- chunking other inputs


def test_chunking_applies_to_files_rows_and_sql(invoke, letters, tmp_path, db_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "long.md").write_text(SPACES)
    (tmp_path / "rows.jsonl").write_text(json.dumps({"id": "r1", "body": TERNARY, "tag": "x"}))
    sqlite_utils.Database(tmp_path / "site.db")["posts"].insert({"id": "p1", "body": ROUTING})
    chunk = ["--chunk-size", "300", "--chunk-overlap", "30", "-m", "test-letters", "--store"]
    assert invoke("embed-multi", "notes", "--files", "notes", "*.md", *chunk).exit_code == 0
    assert invoke("embed-multi", "rows", "rows.jsonl", "--metadata-column", "tag", *chunk).exit_code == 0
    assert invoke("embed-multi", "posts", "--sql", "select id, body from posts", "--attach", "site", "site.db", *chunk).exit_code == 0
    for collection, source, text in [("notes", "long.md", SPACES), ("rows", "r1", TERNARY), ("posts", "p1", ROUTING)]:
        rows = table(db_path, collection)
        expected = Chunker("recursive", 300, 30).split(text)
        assert [rows[f"{source}#chunk={n}"]["content"] for n in range(1, len(expected) + 1)] == expected
        assert len(rows) == len(expected)
        assert all(row["metadata"]["source"] == source for row in rows.values())
    assert table(db_path, "rows")["r1#chunk=1"]["metadata"] == {"tag": "x", "source": "r1", "chunk": 1}


def test_a_shorter_file_loses_its_extra_chunks_and_later_runs_split_it_the_same_way(invoke, letters, tmp_path, db_path):
    (tmp_path / "notes").mkdir()
    note = tmp_path / "notes" / "a.md"
    note.write_text(SPACES)
    chunk = ["--chunk-size", "200", "-m", "test-letters"]
    invoke("embed-multi", "notes", "--files", "notes", "*.md", *chunk)
    assert len(table(db_path, "notes")) > 2
    note.write_text(SPACES[:150])
    result = invoke("embed-multi", "notes", "--files", "notes", "*.md", *chunk)
    assert set(table(db_path, "notes")) == {"a.md#chunk=1"}
    # The same command without the chunking options: the collection splits as it recorded.
    result = invoke("embed-multi", "notes", "--files", "notes", "*.md", "-m", "test-letters")
    assert summary(result) == "0 embedded, 0 reused, 0 updated, 1 unchanged, 0 failed"
    assert set(table(db_path, "notes")) == {"a.md#chunk=1"}
    assert sources(db_path, "notes")["a.md"]["split"] == "recursive:200:20"


def test_chunking_is_remembered_and_a_change_is_announced(invoke, letters, tmp_path, db_path):
    path = papers(tmp_path, paper=[ROUTING])["paper"]
    invoke("embed-multi", "papers", path, "-m", "test-letters")
    first = set(table(db_path))
    result = invoke("embed-multi", "papers", path, "--chunk-size", "500", "-m", "test-letters", "--store")
    second = table(db_path)
    assert len(second) > len(first) and max(len(row["content"]) for row in second.values()) <= 500
    assert first < set(second)  # chunk=1… again, and more of them
    assert summary(result) == f"2 embedded, {len(second) - 2} reused, 0 updated, 0 unchanged, 0 failed"
    assert sources(db_path)[path]["split"] == "recursive:500:50"
    assert result.stderr.splitlines()[0] == (
        "Chunking of 'papers' changes from recursive chunks of at most 1000 characters (overlap 100) to recursive "
        "chunks of at most 500 characters (overlap 50): documents are split again and chunks that change are "
        "embedded. Rows and text files are split too from now on."
    )
    # The plain command again: the collection remembers its chunking, nothing changes.
    result = invoke("embed-multi", "papers", path, "-m", "test-letters")
    assert result.stderr.splitlines() == [f"0 embedded, 0 reused, 0 updated, {len(second)} unchanged, 0 failed"]
    assert set(table(db_path)) == set(second)
    # Told otherwise: the chunks past the third go.
    result = invoke("embed-multi", "papers", path, "--chunk-size", "1000", "-m", "test-letters")
    assert set(table(db_path)) == first
    assert summary(result).endswith(f", {len(second) - len(first)} removed")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--chunk-size", "100", "--chunk-overlap", "100"], "--chunk-overlap (100) must be smaller than --chunk-size (100)"),
        (["--chunk-overlap", "1000"], "--chunk-overlap (1000) must be smaller than --chunk-size (1000)"),
        (["--chunker", "tokens", "--chunk-size", "50", "--chunk-overlap", "60"], "--chunk-overlap (60) must be smaller than --chunk-size (50)"),
        (["--chunk-size", "0"], "0 is not in the range x>=1"),
        (["--chunker", "words"], "'words' is not one of 'chars', 'recursive', 'tokens'"),
    ],
)
def test_bad_chunking_options(invoke, letters, tmp_path, args, message):
    (tmp_path / "rows.csv").write_text("id,body\nr1,some text\n")
    result = invoke("embed-multi", "rows", "rows.csv", "-m", "test-letters", *args)
    assert result.exit_code != 0
    assert message in result.stderr
    assert letters.calls == 0
    assert not (tmp_path / "embeddings.db").exists()


def test_token_chunks_fit_the_model_and_long_texts_are_warned_about(invoke, minilm, tmp_path, db_path):
    long = " ".join(f"word{n} is followed by more words about embeddings." for n in range(120))
    (tmp_path / "long.csv").write_text(f"id,body\nlong,{long}\nshort,a short text\n")
    result = invoke("embed-multi", "plain", "long.csv")
    assert result.stderr.splitlines()[0] == (
        "Warning: 1 text is longer than the 256 tokens all-MiniLM-L6-v2-int8 reads; only the beginning was "
        "embedded. Split them to fit with --chunker tokens"
    )
    result = invoke("embed-multi", "fitted", "long.csv", "--chunker", "tokens", "--store")
    assert "Warning" not in result.stderr
    rows = table(db_path, "fitted")
    counts = minilm.count_tokens([row["content"] for row in rows.values()])
    assert len(rows) > 3 and max(counts) <= 256 and max(counts) > 200
    assert sources(db_path, "fitted")["long"]["split"] == "tokens:256:25"


# Technical text, as in papers: identifiers, numbers and symbols are many word pieces each.
DENSE = " ".join(
    f"Table {n}: BitNet-b1.58 at {n * 7}B params reaches ppl={n / 3 + 9:.2f} (Δ={n % 5 - 2:+d}.{n % 10}), "
    f"W1.58A8 vs FP16 on GPU-{n % 4}; see arXiv:2402.{17764 + n}v{n % 3 + 1}."
    for n in range(60)
)


def test_the_default_chunks_of_documents_fit_the_model(invoke, minilm, tmp_path, db_path):
    # The old default, 1000-character chunks, overflows the model's 256 word pieces on such text.
    old = Chunker("recursive", 1000, 100).split(DENSE)
    assert max(minilm.count_tokens(old)) > 256
    path = pdfs.text_pdf(tmp_path / "dense.pdf", [DENSE, DENSE[::-1]])
    result = invoke("embed-multi", "papers", str(path), "--store")
    assert result.exit_code == 0 and "Warning" not in result.stderr
    rows = table(db_path)
    counts = minilm.count_tokens([row["content"] for row in rows.values()])
    assert max(counts) <= 256 and len(rows) >= 2 * len(old)
    assert sources(db_path)[str(path)]["split"] == "tokens:256:25"
    with embedkit.Database(db_path) as db:
        assert db.collection("papers").chunking == {"method": "tokens", "size": 256, "overlap": 25, "texts": False}


def test_a_collection_made_before_chunking_was_recorded_keeps_its_split(db, minilm, tmp_path):
    from embedkit import migrations
    from embedkit.sources.pdf import PdfSource

    path = str(pdfs.text_pdf(tmp_path / "dense.pdf", [DENSE]))
    papers, notes = db.create_collection("papers"), db.create_collection("notes")
    papers.embed_multi([PdfSource(path)], chunker=Chunker("recursive", 1000, 100))
    notes.embed_multi([embedkit.Item("a", DENSE)], chunker=Chunker("chars", 600, 60))
    # As an older embedkit left them: no chunking recorded, migration 5 not applied.
    db.conn.execute("update _embedkit_collections set settings = json_remove(settings, '$.chunking')")
    db.conn.execute("delete from _embedkit_migrations where name = 'm006_chunking'")
    db.close()
    with embedkit.Database(db.path) as reopened:
        assert "m006_chunking" in migrations.applied(reopened.conn)
        papers, notes = reopened.collection("papers"), reopened.collection("notes")
        assert papers.chunking == {"method": "recursive", "size": 1000, "overlap": 100, "texts": False}
        assert notes.chunking == {"method": "chars", "size": 600, "overlap": 60, "texts": True}
        calls = minilm.calls
        assert papers.embed_multi([PdfSource(path)]).unchanged == len(papers)
        assert notes.embed_multi([embedkit.Item("a", DENSE)]).unchanged == len(notes)
        assert minilm.calls == calls  # nothing split again, nothing embedded


# ---------------------------------------------------------------- files, HTML, mixed inputs


def test_files_by_brace_glob_with_html_and_pdf(invoke, letters, tmp_path, db_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "a.md").write_text("# Notes\n\nAbout gardens.")
    (site / "b.html").write_text(
        "<html><head><title>Page B</title><style>p {color: red}</style></head>"
        "<body><p>First &amp; foremost.</p><script>var x = 1;</script><p>Second.</p></body></html>"
    )
    (site / "c.txt").write_text("not matched")
    pdfs.text_pdf(site / "d.pdf", [TERNARY])
    result = invoke("embed-multi", "docs", "--files", "site", "**/*.{md,html,pdf}", "--store", "-m", "test-letters")
    assert result.exit_code == 0, result.output
    rows = table(db_path, "docs")
    assert rows["b.html"]["content"] == "Page B\n\nFirst & foremost.\n\nSecond."
    assert "c.txt" not in rows and "a.md" in rows
    assert rows["d.pdf#page=1&chunk=1"]["metadata"]["source"] == "d.pdf"


def test_inputs_of_every_kind_in_one_command(invoke, letters, tmp_path, db_path):
    (tmp_path / "rows.csv").write_text("id,body\nr1,one row\n")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "n.md").write_text("a note")
    paper = papers(tmp_path, paper=[TERNARY])["paper"]
    result = invoke("embed-multi", "mixed", "rows.csv", paper, "--files", "notes", "*.md",
                    "--sql", "select 'q1' as id, 'from sql' as body", "-m", "test-letters")
    assert result.exit_code == 0, result.output
    assert {id.split("#")[0] for id in table(db_path, "mixed")} == {"r1", "q1", "n.md", paper}


def test_a_pdf_named_twice_is_an_error(invoke, letters, tmp_path):
    paper = papers(tmp_path, paper=[TERNARY])["paper"]
    result = invoke("embed-multi", "papers", paper, "--pdf", paper, "-m", "test-letters")
    assert result.exit_code == 1
    assert result.stderr.strip() == f"Error: duplicate id {paper!r} in the input"
    assert not (tmp_path / "embeddings.db").exists()


# ---------------------------------------------------------------- --sync for plain items


def test_sync_removes_rows_and_files_no_longer_in_the_input(invoke, letters, tmp_path, db_path):
    (tmp_path / "rows.csv").write_text("id,body,source\na,alpha,feed\nb,beta,feed\nc,gamma,feed\n")
    invoke("embed-multi", "rows", "rows.csv", "--metadata-column", "source", "-m", "test-letters")
    (tmp_path / "rows.csv").write_text("id,body,source\na,alpha,feed\nc,gamma,feed\n")
    # A `source` of the user's own is not one embedkit split, so rows stay items of their own.
    result = invoke("embed-multi", "rows", "rows.csv", "--metadata-column", "source", "-m", "test-letters", "--sync")
    assert set(table(db_path, "rows")) == {"a", "c"}
    assert summary(result) == "0 embedded, 0 reused, 0 updated, 2 unchanged, 0 failed, 1 removed"


def test_sync_keeps_a_source_that_failed_this_time(invoke, letters, tmp_path, db_path):
    files = papers(tmp_path, keep=[TERNARY], broken=[SPACES])
    invoke("embed-multi", "papers", *files.values(), "-m", "test-letters")
    before = by_source(table(db_path))
    pdfs.truncated_pdf(tmp_path / "broken.pdf")
    result = invoke("embed-multi", "papers", *files.values(), "-m", "test-letters", "--sync")
    assert result.exit_code == 1
    assert by_source(table(db_path)) == before


# ---------------------------------------------------------------- --unique and delete by metadata


def test_unique_returns_the_best_chunk_of_each_source(db, letters, tmp_path):
    collection = db.create_collection("papers", model="test-letters")
    items = [embedkit.Item(f"{s}-{n}", "a" * (n + 1) + " " * s, {"source": f"s{s}"}) for s in range(5) for n in range(6)]
    collection.embed_multi(items)
    query = np.array([1, 0, 0, 0, 0, 0, 0, 0.1], dtype=np.float32)
    hits = collection.similar_by_vector(query, n=3, unique="source")
    assert len(hits) == 3 and len({hit.metadata["source"] for hit in hits}) == 3
    plain = collection.similar_by_vector(query, n=100)
    best = {}
    for hit in plain:
        best.setdefault(hit.metadata["source"], hit)
    assert [hit.id for hit in hits] == [hit.id for hit in list(best.values())[:3]]
    # Asking for more values than there are gives each once.
    assert len(collection.similar_by_vector(query, n=10, unique="source")) == 5


def test_unique_counts_items_without_the_key_as_distinct(db, letters):
    collection = db.create_collection("docs", model="test-letters")
    collection.embed_multi([embedkit.Item("x", "aaa"), embedkit.Item("y", "aab"), embedkit.Item("z", "aa", {"source": "s"})])
    assert {hit.id for hit in collection.similar("aaa", n=3, unique="source")} == {"x", "y", "z"}


def test_delete_by_source_then_re_add_reads_it_again(invoke, letters, tmp_path, db_path):
    files = papers(tmp_path, one=[TERNARY], two=[SPACES])
    invoke("embed-multi", "papers", *files.values(), "-m", "test-letters")
    count = len(by_source(table(db_path))[files["one"]])
    result = invoke("delete", "papers", "--filter", f"source={files['one']}")
    assert result.stderr.strip() == f"Deleted {count} items"
    assert set(by_source(table(db_path))) == {files["two"]}
    assert set(sources(db_path)) == {files["two"]}
    result = invoke("embed-multi", "papers", *files.values(), "-m", "test-letters")
    assert len(by_source(table(db_path))[files["one"]]) == count


def test_a_deleted_chunk_comes_back_on_the_next_run(invoke, letters, tmp_path, db_path):
    path = papers(tmp_path, one=[ROUTING])["one"]
    invoke("embed-multi", "papers", path, "-m", "test-letters")
    before = set(table(db_path))
    invoke("delete", "papers", f"{path}#page=1&chunk=2")
    result = invoke("embed-multi", "papers", path, "-m", "test-letters")
    assert set(table(db_path)) == before
    # Read again in full; the chunks still there are unchanged, the deleted one is back.
    assert summary(result).endswith(f" 0 updated, {len(before) - 1} unchanged, 0 failed")


@pytest.mark.parametrize(
    "filters, expected",
    [
        ({"page": "2"}, {"b"}),  # text from the command line matches the number
        ({"page": 2}, {"b"}),
        ({"tag": "x", "page": "1"}, {"a"}),
        ({"tag": "2"}, {"c"}),  # a string value that looks like a number still matches as text
        ({"odd key": "yes"}, {"d"}),
    ],
)
def test_delete_where_matches_metadata(db, letters, filters, expected):
    collection = db.create_collection("docs", model="test-letters")
    collection.embed_multi([
        embedkit.Item("a", "one", {"tag": "x", "page": 1}),
        embedkit.Item("b", "two", {"tag": "y", "page": 2}),
        embedkit.Item("c", "three", {"tag": "2"}),
        embedkit.Item("d", "four", {"odd key": "yes"}),
    ])
    assert collection.delete_where(filters) == len(expected)
    assert {"a", "b", "c", "d"} - {entry.id for entry in collection} == expected


@pytest.mark.parametrize("filter, message", [
    ("source", "Error: filter 'source' is not KEY=VALUE"),
    ("source=nowhere.pdf", "Error: no item in collection 'papers' matches source=nowhere.pdf"),
])
def test_delete_filter_errors(invoke, letters, tmp_path, db_path, filter, message):
    invoke("embed-multi", "papers", papers(tmp_path, one=[TERNARY])["one"], "-m", "test-letters")
    before = dump(db_path)
    result = invoke("delete", "papers", "--filter", filter)
    assert result.exit_code == 1
    assert result.stderr.strip() == message
    assert dump(db_path) == before


def test_deleting_a_collection_forgets_its_sources(db, letters, tmp_path):
    files = papers(tmp_path, one=[TERNARY])
    db.create_collection("papers", model="test-letters").embed_multi([PdfSource(files["one"])])
    db.delete_collection("papers")
    assert sources(db.path) == {}
    stats = db.create_collection("papers", model="test-letters").embed_multi([PdfSource(files["one"])])
    assert stats.embedded > 0 and stats.unchanged == 0


def test_a_pdf_without_a_title_gets_one_from_its_first_page(invoke, letters, tmp_path, db_path):
    from embedkit.sources.pdf import extract

    paper = pdfs.paper_pdf(tmp_path / "paper.pdf", "Ternary Weights for Large Language Models",
                           "Published as a conference paper at ICLR 2025", TERNARY * 3,
                           "arXiv:2402.17764v1 [cs.CL] 27 Feb 2024")
    title, pages = extract(paper.read_bytes())
    assert title == "Ternary Weights for Large Language Models"  # the largest upright type
    assert "arXiv:2402.17764v1" in pages[0] and "Published as a conference paper" in pages[0]
    # All in one size: the first line of the first page.
    plain = pdfs.text_pdf(tmp_path / "plain.pdf", ["Notes on routing\n\n" + ROUTING, "Page two."])
    assert extract(plain.read_bytes())[0] == "Notes on routing"
    # The PDF's own title comes first.
    titled = pdfs.text_pdf(tmp_path / "titled.pdf", ["Notes on routing\n\n" + ROUTING], title="Routing")
    assert extract(titled.read_bytes())[0] == "Routing"
    # Every chunk carries it.
    assert invoke("embed-multi", "papers", str(paper), "-m", "test-letters").exit_code == 0
    chunks = table(db_path).values()
    assert len(chunks) > 1
    assert {row["metadata"]["title"] for row in chunks} == {"Ternary Weights for Large Language Models"}


def test_extract_reports_pages_and_title(tmp_path):
    from embedkit.sources.pdf import extract

    data = pdfs.text_pdf(tmp_path / "t.pdf", ["first page", "second page"], title="  A Title ").read_bytes()
    assert extract(data) == ("A Title", ["first page", "second page"])
    with pytest.raises(EmbedkitError, match=r"not a PDF \(it does not start with %PDF-; the server sent text/html\)"):
        extract(b"<html></html>", "text/html; charset=utf-8")
