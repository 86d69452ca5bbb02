"""Stemming as a collection setting, stop words, RM3, Rocchio, convex fusion and rerank,
through Collection.similar and the commands."""

import json

import pytest

import embedkit
from embedkit import fulltext
from embedkit.errors import EmbedkitError
from embedkit.items import Item
from embedkit.rerank import get_reranker

ITEMS = [
    Item("flow", "Laminar flow over a flat plate stays smooth."),
    Item("flows", "Turbulent flows mix quickly behind the wing."),
    Item("heat", "Heat conduction in composite slabs with layers."),
    Item("slabs", "Layered slabs conduct heat slowly through each layer."),
    Item("the", "The the the."),
]


@pytest.fixture
def notes(db):
    collection = db.create_collection("notes", model="test-letters")
    collection.embed_multi(ITEMS, store=True)
    return collection


def ids(entries):
    return [entry.id for entry in entries]


def test_new_collections_stem_and_old_ones_can_be_rebuilt(notes, db):
    assert fulltext.stemming(db.conn, "notes") == "porter"
    assert set(ids(notes.similar("flowing", 5, mode="keyword"))) == {"flow", "flows"}
    fulltext.rebuild(notes, "none")
    assert fulltext.stemming(db.conn, "notes") == "none"
    assert ids(notes.similar("flowing", 5, mode="keyword")) == []
    assert ids(notes.similar("flows", 5, mode="keyword")) == ["flows"]
    fulltext.rebuild(notes, "porter")
    assert set(ids(notes.similar("flows", 5, mode="keyword"))) == {"flow", "flows"}
    # The setting is the collection's: a new connection reads it, and writes stay indexed.
    again = embedkit.Database(db.path).collection("notes")
    again.embed_multi([Item("new", "Flowing water.")], store=True)
    assert "new" in ids(again.similar("flow", 5, mode="keyword"))


def test_stop_words_are_dropped_from_keyword_queries(notes):
    assert "the" not in ids(notes.similar("what is the heat of the slabs", 5, mode="keyword"))
    assert "the" in ids(notes.similar("what is the heat of the slabs", 5, mode="keyword", stop_words=False))


def test_expansion_finds_documents_without_the_query_words(notes):
    plain = ids(notes.similar("composite", 5, mode="keyword"))
    expanded = ids(notes.similar("composite", 5, mode="keyword", expand=True))
    assert plain == ["heat"]
    # "slabs", "layer", "heat" come from the top result and bring in the other slab item.
    assert expanded[0] == "heat" and "slabs" in expanded


def test_feedback_and_convex_fusion_run_and_are_checked(notes):
    hybrid = notes.similar("heat slabs", 3, mode="hybrid", feedback=2)
    assert len(hybrid) == 3
    convex = notes.similar("heat slabs", 5, mode="hybrid", fusion="convex", alpha=0.0)
    # alpha 0: keyword scores alone, normalised (the best is 1).
    assert convex[0].score == pytest.approx(1.0) and convex[0].id in {"heat", "slabs"}
    dense = notes.similar("heat slabs", 2, feedback=3)
    assert len(dense) == 2
    with pytest.raises(EmbedkitError, match="unknown fusion 'max'"):
        notes.similar("heat", fusion="max", mode="hybrid")
    with pytest.raises(EmbedkitError, match="alpha must be from 0 to 1"):
        notes.similar("heat", fusion="convex", alpha=2, mode="hybrid")


def test_rerank_through_similar(notes, http_server):
    def by_length(request):
        texts = request.json()["texts"]
        body = [{"index": i, "score": float(len(text))} for i, text in enumerate(texts)]
        return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()

    http_server.handler("/rerank", by_length)
    results = notes.similar("heat layer slabs", 2, mode="hybrid", rerank=get_reranker("tei", url=http_server.url))
    longest = sorted(ITEMS, key=lambda item: -len(item.content))
    assert ids(results) == [item.id for item in longest[:2]]
    assert results[0].score == float(len(longest[0].content))


def test_index_stemming_command(invoke, notes, db_path):
    result = invoke("index", "notes", "--stemming", "none", "-d", db_path)
    assert "Rebuilt the keyword index of notes with stemming none" in result.output
    found = invoke("similar", "notes", "-c", "flowing", "--keyword", "-d", db_path)
    assert found.output == ""
    invoke("index", "notes", "--stemming", "porter", "-d", db_path)
    found = invoke("similar", "notes", "-c", "flowing", "--keyword", "-d", db_path)
    assert {json.loads(line)["id"] for line in found.output.splitlines()} == {"flow", "flows"}


def test_similar_options_on_the_command_line(invoke, notes, db_path):
    plain = invoke("similar", "notes", "-c", "composite", "--keyword", "-d", db_path)
    expanded = invoke("similar", "notes", "-c", "composite", "--keyword", "--expand", "-d", db_path)
    assert len(expanded.output.splitlines()) > len(plain.output.splitlines())
    result = invoke("similar", "notes", "-c", "heat", "--hybrid", "--fusion", "convex", "--alpha", "0", "-d", db_path)
    assert json.loads(result.output.splitlines()[0])["score"] == pytest.approx(1.0)


def test_eval_takes_the_options(invoke, notes, db_path, tmp_path):
    (tmp_path / "q.jsonl").write_text('{"_id": "1", "text": "composite"}\n')
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n1\tslabs\t1\n")
    args = ["eval", "notes", "--queries", tmp_path / "q.jsonl", "--qrels", tmp_path / "qrels.tsv", "--mode", "keyword",
            "--json", "-d", db_path]
    plain = json.loads(invoke(*args).output.split("\n1 query")[0])
    expanded = json.loads(invoke(*args, "--expand").output.split("\n1 query")[0])
    assert plain["keyword"]["Recall@100"] == 0.0
    assert expanded["keyword"]["Recall@100"] == 1.0


def test_eval_scores_chunks_as_their_documents(invoke, db, db_path, tmp_path):
    from embedkit import Chunker

    chunks = db.create_collection("chunks", model="test-letters")
    long = "Heat conduction in slabs. " * 3 + "Composite layers resist heat."
    chunks.embed_multi([Item("doc1", long), Item("doc2", "Turbulent flows mix quickly.")], store=True,
                       chunker=Chunker("recursive", size=40, overlap=0))
    assert len(chunks) > 2
    (tmp_path / "q.jsonl").write_text('{"_id": "1", "text": "composite layers"}\n')
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n1\tdoc1\t1\n")
    args = ["eval", "chunks", "--queries", tmp_path / "q.jsonl", "--qrels", tmp_path / "qrels.tsv", "--mode", "keyword",
            "--json", "-d", db_path]
    by_chunk = invoke(*args)
    assert "relevant documents" in by_chunk.output  # doc1 is no item id: warned, and never found
    assert json.loads(by_chunk.output.split("\n1 query")[0].split("\n", 1)[1])["keyword"]["nDCG@10"] == 0.0
    by_document = invoke(*args, "--unique", "source")
    assert "Warning" not in by_document.output
    assert json.loads(by_document.output.split("\n1 query")[0])["keyword"]["nDCG@10"] == 1.0
