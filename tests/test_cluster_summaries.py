"""embedkit cluster --summarize: a chat model names and sums up the clusters, against the fake
chat server on 127.0.0.1 (tests/chatserver.py) and the real default model."""

import json
import os
import socket
import subprocess
import sys

import pytest

from chatserver import ChatServer
from embedkit import chat
from embedkit.errors import EmbedkitError
from embedkit.explore import summaries
from test_explore import TOPICS, topic_items

EMBEDKIT = os.path.join(os.path.dirname(sys.executable), "embedkit")


def terms_of(request):
    """The distinctive terms the prompt of request gives."""
    (line,) = [line for line in request["messages"][-1]["content"].splitlines() if line.startswith("Distinctive terms: ")]
    return line.removeprefix("Distinctive terms: ").split(", ")


def good(request):
    first = terms_of(request)[0]
    return json.dumps({"name": f"All about {first}", "summary": f"Every item here is about {first}."})


@pytest.fixture
def server():
    with ChatServer(answer=good) as running:
        yield running


@pytest.fixture
def topics(db, minilm):
    collection = db.create_collection("notes")
    collection.embed_multi(topic_items(), store=True)
    return collection


def model(server, name="openai/test-chat", **settings):
    return chat.get_chat_model(name, base_url=server.openai_url if name.startswith("openai") else server.url,
                               backoff=0, **settings)


def info(db):
    return db.conn.execute("select cluster, name, summary from notes_cluster_info order by cluster").fetchall()


def tfidf_names(collection):
    """The names the clusters get without a chat model."""
    return {c.cluster: c.name for c in collection.cluster(k=3, seed=0).clusters}


def test_names_and_summaries_are_stored_from_prompts_with_the_terms(topics, db, server):
    plain = tfidf_names(topics)
    result = topics.cluster(k=3, seed=0, summarize=model(server))
    assert result.how == "unchanged" and result.summarized == 3 and result.unreadable == []
    assert result.summary() == "18 items in 3 clusters, unchanged; 3 summarized by openai/test-chat"
    assert len(server.calls) == 3
    for c, request in zip(result.clusters, server.calls):
        prompt = request["messages"][-1]["content"]
        assert terms_of(request) == c.terms and c.terms
        # The five most central items' text, the three stored as central first.
        topic = c.central[0].split("-")[0]
        shown = [text for text in TOPICS[topic] if text in prompt]
        assert len(shown) == summaries.ITEMS and all(text in prompt for text in
                                                     (dict((i.id, i.content) for i in topic_items())[id] for id in c.central))
        assert len(prompt) < 200 + summaries.ITEMS * (summaries.SNIPPET + 5)
        assert request["messages"][0]["content"] == summaries.INSTRUCTIONS
        assert c.name == f"All about {plain[c.cluster].split(', ')[0]}"
    assert info(db) == [(c.cluster, c.name, c.summary) for c in result.clusters]
    assert {row[1] for row in info(db)} == {"All about bread", "All about sqlite", "All about bicycle"}
    assert [c.summary for c in topics.clusters()] == [f"Every item here is about {c.name[10:]}." for c in result.clusters]


def test_asking_again_asks_only_what_is_missing(topics, db, server):
    topics.cluster(k=3, seed=0, summarize=model(server))
    again = topics.cluster(k=3, seed=0, summarize=model(server))
    assert again.how == "unchanged" and again.summarized == 3 and len(server.calls) == 3
    # Without --summarize the summaries stay; --assign keeps them too.
    assert topics.cluster(k=3, seed=0).clusters[0].summary is not None
    assert topics.assign_clusters().clusters[0].summary is not None
    # Another model asks about every cluster again.
    other = topics.cluster(k=3, seed=0, summarize=model(server, "ollama/llama3.2"))
    assert other.summarized == 3 and len(server.calls) == 6 and server.calls[-1]["model"] == "llama3.2"
    # Clustering afresh starts without summaries.
    assert all(c.summary is None for c in topics.cluster(k=2, seed=0).clusters)


def test_retries_throttling_and_server_errors(topics, db, server):
    server.fail(429, times=2, retry_after="0")
    server.fail(500, times=1, retry_after="0")
    result = topics.cluster(k=3, seed=0, summarize=model(server))
    assert result.how == "computed" and result.summarized == 3 and len(server.calls) == 6


def test_a_malformed_answer_keeps_the_tfidf_name_with_a_warning(topics, db):
    def answer(request):
        if terms_of(request)[0] == "sqlite":
            return 'Sure! {"name": "SQLite"}'
        return good(request)

    plain = tfidf_names(topics)
    with ChatServer(answer=answer) as server:
        result = topics.cluster(k=3, seed=0, summarize=model(server))
    (sqlite,) = [c.cluster for c in result.clusters if c.terms[0] == "sqlite"]
    assert result.unreadable == [sqlite] and result.summarized == 2
    assert result.warning() == (f"openai/test-chat gave no JSON name and summary for cluster {sqlite}, "
                                "which keeps its TF-IDF name; run again to ask again")
    assert dict((row[0], row[1:]) for row in info(db))[sqlite] == (plain[sqlite], None)
    # Asking again asks only about that cluster.
    with ChatServer(answer=good) as server:
        again = topics.cluster(k=3, seed=0, summarize=model(server))
    assert len(server.calls) == 1 and again.summarized == 3 and again.warning() is None


@pytest.mark.parametrize("answer, parsed", [
    ('{"name": "Bread", "summary": "Baking bread."}', ("Bread", "Baking bread.")),
    ('```json\n{"name": " Bread ", "summary": "Baking bread.", "extra": 1}\n```', ("Bread", "Baking bread.")),
    ('<think>bread, surely</think>\n{"name": "Bread", "summary": "Baking bread."}', ("Bread", "Baking bread.")),
    ('Name: Bread. Summary: Baking bread.', None),
    ('{"name": "Bread"}', None),
    ('{"name": "", "summary": "Baking bread."}', None),
    ('{"name": "Bread\\nand more", "summary": "Baking bread."}', None),
    ('{"name": "' + "x" * 61 + '", "summary": "Baking bread."}', None),
    ('{"name": "Bread", "summary": 3}', None),
    ('[{"name": "Bread", "summary": "Baking bread."}]', None),
    ('{"name": "Bread", "summary": "Baking bread."} And more words.', None),
])
def test_answers_are_read_strictly(answer, parsed):
    assert summaries.parse(answer) == parsed


def test_a_failing_model_leaves_the_clusters_and_the_answers_so_far(topics, db):
    with ChatServer() as server:
        def first_only(request):
            server.fail(400, times=100)  # every later request is refused (not retried)
            return good(request)

        server.answer = first_only
        with pytest.raises(EmbedkitError, match=r"^chat model openai/test-chat: .* refused the request \(400"):
            topics.cluster(k=3, seed=0, summarize=model(server))
        assert len(server.calls) == 2
    rows = info(db)
    assert len(rows) == 3 and sum(summary is not None for _, _, summary in rows) == 1
    assert db.conn.execute("select count(*) from notes_clusters").fetchone() == (18,)
    with ChatServer(answer=good) as server:
        result = topics.cluster(k=3, seed=0, summarize=model(server))
    assert result.how == "unchanged" and len(server.calls) == 2 and result.summarized == 3


def test_a_storm_of_server_errors_gives_up_in_one_line(topics, db, server):
    server.fail(500, times=100, retry_after="0")
    with pytest.raises(EmbedkitError, match=r"failed after 3 attempts \(500") as error:
        topics.cluster(k=3, seed=0, summarize=model(server, retries=2))
    assert "\n" not in str(error.value) and len(server.calls) == 3
    assert [row[2] for row in info(db)] == [None, None, None]


def test_an_unknown_model_fails_before_clustering(topics, db):
    with pytest.raises(EmbedkitError, match="unknown chat model 'gpt-4o'"):
        topics.cluster(k=3, summarize="gpt-4o")
    assert db.conn.execute("select count(*) from sqlite_master where name like 'notes_clust%'").fetchone() == (0,)


def run(*args, env=None):
    return subprocess.run([EMBEDKIT, *map(str, args)], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, **(env or {})))


def test_cli_refused_key_is_one_line_exit_1_and_never_shown(topics, db_path, tmp_path):
    secret = "sk-wrong-secret-4242"
    with ChatServer(keys=["sk-good-7777"], answer=good) as server:
        args = ["cluster", "notes", "-k", "3", "--summarize", "openai/test-chat", "--base-url", server.openai_url,
                "--key-env", "CHAT_KEY", "-d", db_path]
        refused = run(*args, env={"CHAT_KEY": secret})
        assert refused.returncode == 1 and refused.stdout == ""
        assert refused.stderr.splitlines() == [
            f"Error: chat model openai/test-chat: the API key in CHAT_KEY was refused by {server.openai_url} "
            "(401 Unauthorized)"]
        # The clusters are stored, with their TF-IDF names.
        assert "3 clusters, unchanged" in run("cluster", "notes", "-k", "3", "-d", db_path).stderr
        accepted = run(*args, "--plain", env={"CHAT_KEY": "sk-good-7777"})
        assert accepted.returncode == 0, accepted.stderr
        assert server.headers[-1]["Authorization"] == "Bearer sk-good-7777"
    lines = accepted.stdout.splitlines()
    assert lines[0].split() == ["cluster", "size", "name", "summary"] and "All about" in lines[1]
    assert accepted.stderr.strip().endswith("18 items in 3 clusters, unchanged; 3 summarized by openai/test-chat")
    stored = open(db_path, "rb").read()
    assert secret.encode() not in stored and b"sk-good-7777" not in stored


def test_cli_summarize_with_ollama_and_option_errors(topics, db_path, invoke, monkeypatch):
    with ChatServer(answer=lambda request: "not JSON") as server:
        monkeypatch.setenv("OLLAMA_HOST", server.url)
        result = invoke("cluster", "notes", "-k", "3", "--summarize", "ollama/llama3.2", "-d", db_path)
        assert result.exit_code == 0 and len(server.calls) == 3 and server.calls[0]["model"] == "llama3.2"
    assert [json.loads(line)["summary"] for line in result.stdout.splitlines()] == [None, None, None]
    assert ("Warning: ollama/llama3.2 gave no JSON name and summary for clusters 0, 1, 2, which keep their TF-IDF "
            "names; run again to ask again") in result.stderr
    assert result.stderr.count("Warning") == 1
    bad = invoke("cluster", "notes", "--base-url", "http://127.0.0.1:9", "-d", db_path)
    assert bad.exit_code == 1 and "--base-url, --key-env and --timeout go with --summarize MODEL" in bad.output
    bad = invoke("cluster", "notes", "--assign", "--summarize", "ollama/x", "-d", db_path)
    assert bad.exit_code == 1 and "give no -k, --filter, --where or --summarize" in bad.output


def test_no_answer_within_the_timeout_gives_up_in_one_line(topics, db):
    """A server that takes the connection and never answers."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
        slow = chat.get_chat_model("openai/test-chat", base_url=url, timeout=0.5, retries=1, backoff=0)
        with pytest.raises(EmbedkitError, match=r"failed after 2 attempts \(no answer within 0.5 s\)$"):
            topics.cluster(k=3, seed=0, summarize=slow)
    assert db.conn.execute("select count(*) from notes_clusters").fetchone() == (18,)
