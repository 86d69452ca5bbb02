"""Rerankers: a real (tiny, built here) sentence-transformers CrossEncoder, and HTTP rerank
APIs (Cohere-, Jina- and TEI-shaped) served on 127.0.0.1.

No cross-encoder's weights can be had offline on the test machines, so the local path is
tested with a tiny BERT cross-encoder with random weights, built and saved by the test: it
exercises loading and scoring, not ranking quality.
"""

import json

import pytest

from embedkit import rerank
from embedkit.errors import EmbedkitError
from embedkit.items import Entry

ENTRIES = [Entry("a", 0.9, "alpha beta"), Entry("b", 0.8, "gamma delta"), Entry("c", 0.7, "beta gamma")]


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("tiny-cross-encoder")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "alpha", "beta", "gamma", "delta", "query"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = transformers.BertTokenizer(str(folder / "vocab.txt"))
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=64, num_labels=1)
    model = transformers.BertForSequenceClassification(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    # The scores the saved model gives, computed without embedkit or sentence-transformers.
    model.eval()
    with torch.no_grad():
        batch = tokenizer(["query"] * 3, [e.content for e in ENTRIES], return_tensors="pt", padding=True)
        logits = model(**batch).logits[:, 0]
    return str(folder), torch.sigmoid(logits).tolist()


def test_cross_encoder_reorders_by_its_scores(tiny_cross_encoder):
    folder, expected = tiny_cross_encoder
    reranker = rerank.get_reranker(folder)
    assert isinstance(reranker, rerank.CrossEncoderReranker)
    result = rerank.rerank(reranker, "query", ENTRIES)
    order = sorted(range(3), key=lambda i: -expected[i])
    assert [e.id for e in result] == [ENTRIES[i].id for i in order]
    assert [e.score for e in result] == pytest.approx([expected[i] for i in order], abs=1e-5)
    assert len(rerank.rerank(reranker, "query", ENTRIES, n=2)) == 2


def test_unknown_cross_encoder_is_one_line():
    with pytest.raises(EmbedkitError, match="cannot load cross-encoder 'no-such/cross-encoder'"):
        rerank.rerank(rerank.get_reranker("no-such/cross-encoder"), "q", ENTRIES)


def _reranking(shape):
    def answer(request):
        body = request.json()
        texts = body["texts"] if shape == "tei" else body["documents"]
        # Relevance: how many words of the query a text has.
        scored = [(i, float(len(set(body["query"].split()) & set(text.split())))) for i, text in enumerate(texts)]
        scored.sort(key=lambda pair: -pair[1])
        if shape == "tei":
            result = [{"index": i, "score": s} for i, s in scored]
        else:
            result = {"results": [{"index": i, "relevance_score": s} for i, s in scored]}
        return 200, {"Content-Type": "application/json"}, json.dumps(result).encode()
    return answer


@pytest.mark.parametrize("spec, path, shape", [
    ("cohere/rerank-v3.5", "/v2/rerank", "cohere"),
    ("jina/jina-reranker-v2", "/v1/rerank", "jina"),
    ("tei", "/rerank", "tei"),
])
def test_http_rerank_apis(http_server, monkeypatch, spec, path, shape):
    monkeypatch.setenv("COHERE_API_KEY", "co-key")
    monkeypatch.setenv("JINA_API_KEY", "jina-key")
    http_server.handler(path, _reranking(shape))
    base = http_server.url + path.removesuffix("/rerank")
    reranker = rerank.get_reranker(spec, url=base)
    result = rerank.rerank(reranker, "beta gamma", ENTRIES)
    assert [e.id for e in result] == ["c", "a", "b"]
    assert [e.score for e in result] == [2.0, 1.0, 1.0]
    request = http_server.requests[-1]
    if shape == "tei":
        assert request.json() == {"query": "beta gamma", "texts": ["alpha beta", "gamma delta", "beta gamma"]}
        assert "authorization" not in request.headers
    else:
        assert request.json()["model"] == spec.split("/")[1]
        assert request.headers["authorization"] == f"Bearer {'co-key' if shape == 'cohere' else 'jina-key'}"


def test_http_rerank_retries_then_fails_in_one_line(http_server):
    calls = []

    def busy(request):
        calls.append(request)
        return 503, {"Content-Type": "application/json", "Retry-After": "0"}, b'{"error": "busy"}'

    http_server.handler("/rerank", busy)
    reranker = rerank.HTTPReranker("tei", None, http_server.url, retries=2)
    with pytest.raises(EmbedkitError, match=r"reranker tei: POST .*/rerank failed after 3 attempts \(503"):
        rerank.rerank(reranker, "q", ENTRIES)
    assert len(calls) == 3


def test_tei_needs_a_url(monkeypatch):
    monkeypatch.delenv("TEI_URL", raising=False)
    with pytest.raises(EmbedkitError, match="give the server's URL with --rerank-url or TEI_URL"):
        rerank.get_reranker("tei")


def test_rerank_needs_stored_text():
    with pytest.raises(EmbedkitError, match="item 'x' has none"):
        rerank.rerank(rerank.get_reranker("tei", url="http://127.0.0.1:9"), "q", [Entry("x", 1.0, None)])
