"""embedkit ask and the chat client, against a real fake chat server on 127.0.0.1."""

import json

import pytest

from chatserver import ChatServer
from embedkit import ask, chat
from embedkit.errors import EmbedkitError
from embedkit.items import Item

QUESTION = "which tokens skip a layer?"
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
def server():
    with ChatServer() as running:
        yield running


@pytest.fixture
def papers(db):
    collection = db.create_collection("papers", model="test-letters")
    collection.embed_multi(
        [
            Item("mod#1", "Tokens skip a layer when the router sends them around the block.",
                 {"source": "pdfs/mixture-of-depths.pdf", "page": 3, "title": "Mixture-of-Depths"}),
            Item("bitnet#1", "Ternary weights make every layer cheap.", {"source": "pdfs/bitnet.pdf", "page": 1}),
            Item("note", "Sourdough needs warm kitchens."),
        ],
        store=True,
    )
    return collection


def openai_model(server, **settings):
    return chat.get_chat_model("openai/test-chat", base_url=server.openai_url, **settings)


# The chat client


def test_openai_streams_pieces(server):
    model = openai_model(server)
    pieces = list(model.stream(MESSAGES))
    assert len(pieces) > 1
    assert "".join(pieces) == "The answer is in [1]."
    assert server.calls[0] == {"model": "test-chat", "messages": MESSAGES, "stream": True}


def test_ollama_streams_pieces(server):
    model = chat.get_chat_model("ollama/llama3.2", base_url=server.url, temperature=0)
    assert model.complete(MESSAGES) == "The answer is in [1]."
    assert server.calls[0]["options"] == {"temperature": 0}


def test_retries_throttling_and_server_errors(server):
    server.fail(503, times=2, retry_after="0")
    model = openai_model(server, backoff=0)
    assert model.complete(MESSAGES) == "The answer is in [1]."
    assert len(server.calls) == 3


def test_retries_a_dropped_connection(server):
    server.fail("reset")
    assert openai_model(server, backoff=0).complete(MESSAGES) == "The answer is in [1]."
    assert len(server.calls) == 2


def test_gives_up_after_the_retries(server):
    server.fail(429, times=10, retry_after="0")
    with pytest.raises(EmbedkitError, match=r"chat model openai/test-chat: POST .* failed after 3 attempts \(429"):
        openai_model(server, retries=2, backoff=0).complete(MESSAGES)
    assert len(server.calls) == 3


def test_no_retry_on_a_bad_request(server):
    server.fail(400, times=5)
    with pytest.raises(EmbedkitError, match="refused the request \\(400"):
        openai_model(server, backoff=0).complete(MESSAGES)
    assert len(server.calls) == 1


def test_a_refused_key_is_never_shown(monkeypatch):
    with ChatServer(keys=["sk-good"]) as server:
        monkeypatch.setenv("CHAT_KEY", "sk-wrong-secret")
        with pytest.raises(EmbedkitError) as error:
            openai_model(server, key_env="CHAT_KEY").complete(MESSAGES)
        assert "the API key in CHAT_KEY was refused" in str(error.value)
        assert "sk-wrong-secret" not in str(error.value)
        monkeypatch.setenv("CHAT_KEY", "sk-good")
        assert openai_model(server, key_env="CHAT_KEY").complete(MESSAGES) == "The answer is in [1]."
        assert server.headers[-1]["Authorization"] == "Bearer sk-good"


def test_missing_key_for_openai_says_how_to_set_it():
    with pytest.raises(EmbedkitError, match="no API key for chat model openai/gpt-4o-mini: set OPENAI_API_KEY"):
        chat.get_chat_model("openai/gpt-4o-mini").complete(MESSAGES)


def test_an_answer_cut_off_is_an_error_not_a_retry(server):
    server.fail("cut")
    pieces = []
    with pytest.raises(EmbedkitError, match="the answer was cut off"):
        for piece in openai_model(server).stream(MESSAGES):
            pieces.append(piece)
    assert pieces and len(server.calls) == 1


def test_an_error_in_the_stream(server):
    server.fail("error")
    with pytest.raises(EmbedkitError, match="the server stopped with an error: model overloaded"):
        openai_model(server).complete(MESSAGES)


def test_no_server_fails_at_once():
    model = chat.get_chat_model("ollama/x", base_url="http://127.0.0.1:9", timeout=2)
    with pytest.raises(EmbedkitError, match="cannot connect to http://127.0.0.1:9/api/chat"):
        model.complete(MESSAGES)


@pytest.mark.parametrize("name, message", [
    ("gpt-4o", "use openai/NAME or ollama/NAME"),
    ("openai/", "give the model's name after openai/"),
])
def test_bad_model_names(name, message):
    with pytest.raises(EmbedkitError, match=message):
        chat.get_chat_model(name)


# Passages and prompts


def test_retrieve_numbers_passages_with_title_and_page(papers):
    passages = ask.retrieve(papers, QUESTION, 2, mode="keyword")
    assert [p.number for p in passages] == [1, 2]
    assert passages[0].entry.id == "mod#1"
    assert passages[0].citation().startswith("[1] Mixture-of-Depths, page 3 (score ")
    assert passages[1].title == "bitnet.pdf"
    text = ask.context(passages)
    assert text.startswith("[1] Mixture-of-Depths, page 3\nTokens skip a layer")
    messages = ask.messages(QUESTION, passages)
    assert "[1] Mixture-of-Depths" in messages[1]["content"] and messages[1]["content"].endswith(QUESTION)


def test_min_score_refuses(papers):
    with pytest.raises(ask.NoPassage, match="no passage of collection 'papers' scores 100 or more"):
        ask.retrieve(papers, QUESTION, min_score=100, mode="keyword")


def test_retrieve_needs_stored_text(db):
    bare = db.create_collection("bare", model="test-letters")
    bare.embed_multi([Item("a", "some text")])
    with pytest.raises(EmbedkitError, match="stores no text to quote"):
        ask.retrieve(bare, "text", mode="dense")


# The command


def test_ask_streams_the_answer_then_the_sources(invoke, papers, server, db_path):
    result = invoke("ask", "papers", QUESTION, "-m", "openai/test-chat", "--base-url", server.openai_url, "-n", "2", "--keyword", "-d", db_path)
    assert result.exit_code == 0, result.output
    answer, _, sources = result.output.partition("\nSources:\n")
    assert answer.strip() == "The answer is in [1]."
    assert sources.splitlines()[0].startswith("[1] Mixture-of-Depths, page 3 (score ")
    assert sources.splitlines()[1].startswith("[2] bitnet.pdf, page 1 (score ")
    prompt = server.calls[0]["messages"]
    assert prompt[0]["role"] == "system" and "[1] Mixture-of-Depths, page 3" in prompt[1]["content"]


def test_ask_context_only(invoke, papers, server, db_path):
    plain = invoke("ask", "papers", QUESTION, "--context-only", "-n", "1", "--keyword", "-d", db_path)
    assert plain.output == "[1] Mixture-of-Depths, page 3\nTokens skip a layer when the router sends them around the block.\n"
    data = json.loads(invoke("ask", "papers", QUESTION, "--context-only", "--json", "-n", "1", "--keyword",
                             "-d", db_path).output)
    assert data["question"] == QUESTION
    assert data["passages"][0]["id"] == "mod#1" and data["passages"][0]["page"] == 3
    assert server.calls == []


def test_ask_min_score_asks_no_model(runner, papers, server, db_path):
    from embedkit.cli import cli

    result = runner.invoke(cli, ["ask", "papers", QUESTION, "-m", "ollama/x", "--base-url", server.url,
                                 "--keyword", "--min-score", "100", "-d", db_path])
    assert result.exit_code == 1
    assert "no passage of collection 'papers' scores 100 or more" in result.output
    assert server.calls == []


def test_ask_without_a_model_says_how(runner, papers, db_path, monkeypatch):
    from embedkit.cli import cli

    monkeypatch.delenv("EMBEDKIT_CHAT_MODEL", raising=False)
    result = runner.invoke(cli, ["ask", "papers", QUESTION, "--keyword", "-d", db_path])
    assert result.exit_code == 1 and "give a chat model with -m openai/NAME" in result.output
