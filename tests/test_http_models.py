"""Models served over HTTP (OpenAI-compatible and Ollama), against a real server on 127.0.0.1
that these tests start and program to throttle, fail, reset connections and stall."""

import collections
import email.utils
import json
import math
import sqlite3
import time

import numpy as np
import pytest

import embedkit
from embedkit import config, models, service
from embedkit.errors import EmbedkitError
from embedkit.models import PartialEmbedding, http
from embedserver import DIMENSIONS, EmbedServer, vector

TOPICS = ["weather", "football", "cooking", "taxes", "music", "trains", "gardens", "planets", "poetry", "coffee"]
KEY = "sk-test"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A user directory of its own, no keys or service URLs from the environment, and models
    looked up afresh (openai/NAME is made again for each test's server)."""
    monkeypatch.setenv("EMBEDKIT_USER_DIR", str(tmp_path / "user"))
    for variable in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OLLAMA_HOST", "EMBEDKIT_DATABASE"):
        monkeypatch.delenv(variable, raising=False)
    for cache in ("_registry", "_made", "_configured"):
        if hasattr(models, cache):
            monkeypatch.setattr(models, cache, dict(getattr(models, cache)))


@pytest.fixture
def server():
    """A started fake embedding service accepting the OpenAI key sk-test."""
    with EmbedServer(keys=[KEY]) as started:
        yield started


@pytest.fixture
def openai_env(server, monkeypatch):
    """openai/NAME models pointed at the fake service, with its key in OPENAI_API_KEY."""
    monkeypatch.setenv("OPENAI_BASE_URL", server.openai_url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    return server


def text_of(i):
    return f"Note {i} about {TOPICS[i % 10]}, number {i * 7}"


def write_items(path, n, start=0):
    with open(path, "w") as f:
        for i in range(start, start + n):
            f.write(json.dumps({"id": f"item-{i:03d}", "text": text_of(i)}) + "\n")
    return str(path)


def stored(db_path, table):
    """id -> vector of every row of a collection's table."""
    conn = sqlite3.connect(db_path)
    try:
        return {id: np.frombuffer(blob, dtype="<f4") for id, blob in conn.execute(f'select id, embedding from "{table}"')}
    finally:
        conn.close()


def db_file(db):
    """The file of an open embedkit.Database."""
    return db.conn.execute("pragma database_list").fetchone()[2]


def configure(name, **settings):
    """A model in the user's models.json, as `embedkit models add` writes it."""
    models_json = config.read(config.MODELS)
    models_json.setdefault("models", {})[name] = settings
    config.write(config.MODELS, models_json)


def assert_vectors_match(rows, prefix="", dimensions=None):
    """Each stored vector is the fake service's vector for its own item's text."""
    for id, stored_vector in rows.items():
        expected = vector(prefix + text_of(int(id.split("-")[1])), dimensions)
        np.testing.assert_allclose(stored_vector, expected, atol=1e-6, err_msg=id)


def error_line(result):
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    return lines[0]


# Building collections with each kind of model


def test_cli_openai_collection_and_similar_use_the_collection_model_and_prefixes(invoke, openai_env, tmp_path):
    server = openai_env
    items = write_items(tmp_path / "items.jsonl", 30)
    result = invoke("embed-multi", "notes", items, "-m", "openai/fake-small",
                    "--query-prefix", "query: ", "--document-prefix", "passage: ")
    assert result.exit_code == 0, result.output
    assert "30 embedded" in result.output
    rows = stored(tmp_path / "embeddings.db", "notes")
    assert len(rows) == 30
    assert_vectors_match(rows, prefix="passage: ")
    assert sorted(server.texts("ok")) == sorted("passage: " + text_of(i) for i in range(30))
    assert {call.body["model"] for call in server.calls} == {"fake-small"}
    assert {call.headers["Authorization"] for call in server.calls} == {f"Bearer {KEY}"}

    listed = json.loads(invoke("collections", "--json").output)
    assert listed == [{"name": "notes", "model": "openai/fake-small", "dimensions": DIMENSIONS, "count": 30, "chunking": None}]

    server.reset_counts()
    result = invoke("similar", "notes", "-c", "trains", "-n", "3")  # no -m: the collection's model
    assert result.exit_code == 0, result.output
    assert server.texts() == ["query: trains"]
    found = {json.loads(line)["id"] for line in result.output.splitlines()}
    assert found == {"item-005", "item-015", "item-025"}  # the notes about trains


def test_python_ollama_collection_with_host_from_ollama_host(server, monkeypatch, db):
    monkeypatch.setenv("OLLAMA_HOST", server.url.removeprefix("http://"))  # as `ollama serve` accepts it
    notes = db.get_or_create_collection("notes", model="ollama/fake-embed", query_prefix="search_query: ",
                                        document_prefix="search_document: ")
    stats = notes.embed_multi([embedkit.Item(f"item-{i:03d}", text_of(i)) for i in range(12)])
    assert stats.embedded == 12
    assert {call.api for call in server.calls} == {"ollama"}
    assert all("Authorization" not in call.headers for call in server.calls)
    assert_vectors_match(stored(db_file(db), "notes"), prefix="search_document: ")
    assert notes.dimensions == DIMENSIONS
    assert notes.model.source == f"Ollama at {server.url}"

    hits = notes.similar("cooking", n=2)
    assert hits[0].id == "item-002" and hits[0].score > hits[1].score
    assert server.calls[-1].texts == ["search_query: cooking"]


def test_configured_models_of_both_apis(invoke, server, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_SERVICE_KEY", KEY)
    configure("work-embed", api="openai", base_url=server.openai_url + "/", model_name="fake-large",
              key_env="FAKE_SERVICE_KEY", batch_size=4)
    configure("home-embed", api="ollama", base_url=server.url, model_name="fake-embed", dimensions=16)
    items = write_items(tmp_path / "items.jsonl", 10)

    assert invoke("embed-multi", "work", items, "-m", "work-embed").exit_code == 0
    assert invoke("embed-multi", "home", items, "-m", "home-embed").exit_code == 0

    assert_vectors_match(stored(tmp_path / "embeddings.db", "work"))
    # Ollama's vectors cut to 16 numbers and renormalised, as OpenAI's dimensions parameter does.
    home = stored(tmp_path / "embeddings.db", "home")
    assert {len(v) for v in home.values()} == {16}
    assert_vectors_match(home, dimensions=16)
    openai_calls = [call for call in server.calls if call.api == "openai"]
    assert sorted(len(call.texts) for call in openai_calls) == [2, 4, 4]
    assert all("dimensions" not in call.body for call in server.calls)
    assert {c["model"] for c in json.loads(invoke("collections", "--json").output)} == {"work-embed", "home-embed"}


# Batching, concurrency, order, dimensions


def test_requests_are_batched_and_concurrency_is_bounded(server, monkeypatch):
    server.latency = 0.1
    model = http.OpenAIModel("fake", base_url=server.openai_url, model_name="fake", key_env="FAKE_KEY",
                             batch_size=10, concurrency=3)
    assert model.texts_per_call == 30
    texts = [text_of(i) for i in range(95)]
    monkeypatch.setenv("FAKE_KEY", KEY)
    vectors = model.embed(texts)
    assert sorted(len(call.texts) for call in server.calls) == [5] + [10] * 9
    assert 1 < server.max_in_flight <= 3
    np.testing.assert_allclose(vectors, [vector(t) for t in texts], atol=1e-6)  # data came reversed
    assert server.embedded == collections.Counter(texts)


def test_ollama_keeps_one_request_in_flight_by_default(server, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", server.url)
    server.latency = 0.02
    model = http.from_prefix("ollama/fake-embed")
    assert (model.batch_size, model.concurrency) == (32, 1)
    model.embed([text_of(i) for i in range(70)])
    assert [len(call.texts) for call in server.calls] == [32, 32, 6]
    assert server.max_in_flight == 1


def test_openai_dimensions_are_asked_of_the_service(openai_env, db):
    server = openai_env
    notes = db.create_collection("short", model="openai/fake-small", dimensions=8)
    assert notes.dimensions == 8
    notes.embed_multi([embedkit.Item(f"item-{i:03d}", text_of(i)) for i in range(5)])
    assert {call.body.get("dimensions") for call in server.calls} == {8}
    assert_vectors_match(stored(db_file(db), "short"), dimensions=8)

    model = models.get_model("openai/fake-small")
    assert model.truncated(8) is model.truncated(8)
    assert model.truncated(8).model_id == "openai/fake-small" and model.dimensions is None
    server.reset_counts()
    assert model.embed(["hello"]).shape == (1, DIMENSIONS)
    assert "dimensions" not in server.calls[0].body


def test_a_vector_of_the_wrong_length_is_refused(server):
    model = http.OpenAIModel("fake", base_url=server.openai_url, model_name="fake", dimensions=8)
    server.keys = None
    server.fail("dims")
    with pytest.raises(EmbedkitError, match=r"^model fake: .*returned vectors of 9 dimensions, not 8$"):
        model.embed(["hello"])


# Faults: every item stored once, or a clear error and a state a re-run completes


def fault_model(server, retries=8):
    """A configured model with small batches, several in flight, fast retries and timeouts."""
    configure("fake-openai", api="openai", base_url=server.openai_url, model_name="fake", key_name="fake",
              batch_size=5, concurrency=3, timeout=0.5, retries=retries, backoff=0.001)
    config.set_key("fake", KEY)
    return "fake-openai"


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param({"kind": 429, "times": 8, "retry_after": "0"}, id="429-storm"),
        pytest.param({"kind": 500}, id="500-once"),
        pytest.param({"kind": 503, "times": 2}, id="503-twice"),
        pytest.param({"kind": "reset", "times": 2}, id="connection-reset"),
        pytest.param({"kind": "close"}, id="connection-closed"),
        pytest.param({"kind": "stall", "seconds": 3}, id="stall-past-timeout"),
    ],
)
def test_transient_faults_are_retried_and_every_item_is_stored_once(invoke, server, tmp_path, fault):
    model = fault_model(server)
    server.fail(**fault)
    items = write_items(tmp_path / "items.jsonl", 40)
    result = invoke("embed-multi", "notes", items, "-m", model)
    assert result.exit_code == 0, result.output
    assert "40 embedded" in result.output
    rows = stored(tmp_path / "embeddings.db", "notes")
    assert sorted(rows) == [f"item-{i:03d}" for i in range(40)]
    assert_vectors_match(rows)
    assert server.embedded == collections.Counter(text_of(i) for i in range(40))  # each paid for once
    failed = [outcome for outcome in server.outcomes() if outcome != "ok"]
    assert len(failed) == fault.get("times", 1)


def test_retry_after_is_honoured(server):
    model = http.OllamaModel("fake", base_url=server.url, model_name="fake", backoff=0.001)
    server.fail(429, retry_after="0.4")
    model.embed(["hello"])
    first, second = server.calls
    assert (first.outcome, second.outcome) == ("429", "ok")
    assert second.started - first.finished >= 0.35


def test_a_batch_that_keeps_failing_stops_the_run_and_a_rerun_completes_it(invoke, server, tmp_path):
    model = fault_model(server, retries=3)
    server.fail(429, times=math.inf, match=text_of(17), retry_after="0")
    items = write_items(tmp_path / "items.jsonl", 60)
    result = invoke("embed-multi", "notes", items, "-m", model)
    assert result.exit_code != 0
    url = server.openai_url + "/embeddings"
    assert error_line(result) == (
        f"Error: model fake-openai: POST {url} failed after 4 attempts (429 Too Many Requests: fault injected: 429); "
        "re-running embeds what is missing"
    )
    assert server.outcomes().count("429") == 4  # the one batch holding item 17, tried 4 times

    # What the service answered is stored, each once; nothing else.
    first = stored(tmp_path / "embeddings.db", "notes")
    assert "item-017" not in first
    assert {text_of(int(id[5:])) for id in first} == set(server.embedded)
    assert set(server.embedded.values()) == {1}
    assert_vectors_match(first)

    server.clear()
    server.reset_counts()
    result = invoke("embed-multi", "notes", items, "-m", model)
    assert result.exit_code == 0, result.output
    assert f"{60 - len(first)} embedded" in result.output
    assert sorted(server.embedded) == sorted(text_of(i) for i in range(60) if f"item-{i:03d}" not in first)
    assert set(server.embedded.values()) == {1}
    rows = stored(tmp_path / "embeddings.db", "notes")
    assert sorted(rows) == [f"item-{i:03d}" for i in range(60)]
    assert_vectors_match(rows)


def test_partial_embedding_carries_what_succeeded(server):
    model = http.OpenAIModel("fake", base_url=server.openai_url, model_name="fake", key_name="fake",
                             batch_size=2, concurrency=1, retries=1, backoff=0.001)
    config.set_key("fake", KEY)
    server.fail(500, times=math.inf, match="third")
    texts = ["first text", "second text", "third text", "fourth text", "fifth text"]
    with pytest.raises(PartialEmbedding) as caught:
        model.embed(texts)
    assert sorted(caught.value.vectors) == [0, 1]
    for index, value in caught.value.vectors.items():
        np.testing.assert_allclose(value, vector(texts[index]), atol=1e-6)
    assert "fifth text" not in server.texts()  # no request starts once one has failed for good
    assert str(caught.value).startswith(f"model fake: POST {server.openai_url}/embeddings failed after 2 attempts (500")


def test_a_server_that_never_answers_ends_in_a_clear_error_and_a_rerun_finishes(invoke, server, tmp_path):
    model = fault_model(server, retries=1)
    server.fail("stall", times=math.inf, seconds=3)
    items = write_items(tmp_path / "items.jsonl", 5)
    started = time.monotonic()
    result = invoke("embed-multi", "notes", items, "-m", model)
    assert time.monotonic() - started < 3
    assert result.exit_code != 0
    assert error_line(result) == (
        f"Error: model fake-openai: POST {server.openai_url}/embeddings failed after 2 attempts "
        "(no answer within 0.5 s); re-running embeds what is missing"
    )
    assert not stored(tmp_path / "embeddings.db", "notes")
    server.clear()
    assert invoke("embed-multi", "notes", items, "-m", model).exit_code == 0
    assert len(stored(tmp_path / "embeddings.db", "notes")) == 5
    assert server.embedded == collections.Counter(text_of(i) for i in range(5))


@pytest.mark.parametrize(
    "kind, message",
    [
        ("malformed", "answered with something that is not JSON"),
        ("count", "sent a malformed answer: 2 embeddings for 3 texts"),
        ("index", "sent a malformed answer: the indexes [2, 0, 0] are not 0 to 2, each once"),
        ("numbers", "sent a malformed answer: the vectors are not lists of numbers of one length"),
    ],
)
def test_malformed_answers_are_errors_not_retried(server, kind, message):
    model = http.OpenAIModel("fake", base_url=server.openai_url, model_name="fake")
    server.keys = None
    server.fail(kind)
    with pytest.raises(EmbedkitError) as caught:
        model.embed(["one", "two", "three"])
    assert str(caught.value).startswith(f"model fake: {server.openai_url}/embeddings ")
    assert message in str(caught.value)
    assert len(server.calls) == 1
    assert "\n" not in str(caught.value)


def test_a_refused_request_is_not_retried_and_says_why(server):
    model = http.OllamaModel("fake", base_url=server.url, model_name="fake", batch_size=2, retries=5)
    server.fail(400, times=math.inf, match="long", message="input length exceeds the context length")
    texts = ["short one", "short two", "a long one"]
    with pytest.raises(PartialEmbedding) as caught:
        model.embed(texts)
    assert str(caught.value) == (
        f"model fake: {server.url}/api/embed refused the request (400 Bad Request: input length exceeds "
        "the context length)"
    )
    assert sorted(caught.value.vectors) == [0, 1]
    assert server.outcomes() == ["ok", "400"]

    server.models = {"nomic-embed-text"}
    with pytest.raises(EmbedkitError, match=r'404 Not Found: model "fake" not found, try pulling it first\)$'):
        model.embed(["short one"])


def test_an_exhausted_quota_is_not_retried(server):
    model = http.OpenAIModel("fake", base_url=server.openai_url, model_name="fake", retries=5, backoff=0.001)
    server.keys = None
    server.fail(429, times=math.inf, code="insufficient_quota", message="You exceeded your current quota")
    with pytest.raises(EmbedkitError, match=r"refused the request \(429 Too Many Requests: You exceeded your current quota\)$"):
        model.embed(["hello"])
    assert server.outcomes() == ["429"]


def test_retry_after_headers_are_read():
    assert service.retry_after({"retry-after": "2"}) == 2.0
    assert service.retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    soon = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < service.retry_after({"retry-after": soon}) <= 30
    assert service.retry_after({"retry-after": "soon"}) is None
    assert service.retry_after({}) is None


def test_a_wrong_url_fails_at_once(tmp_path):
    with EmbedServer() as gone:
        url = gone.url
    model = http.OllamaModel("fake", base_url=url, model_name="fake", retries=6, backoff=1.0)
    started = time.monotonic()
    with pytest.raises(EmbedkitError, match=rf"^model fake: cannot connect to {url}/api/embed: "):
        model.embed(["hello"])
    assert time.monotonic() - started < 1


# Keys


def test_a_missing_key_is_named_before_any_request(invoke, server, monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_BASE_URL", server.openai_url)
    result = invoke("embed-multi", "notes", write_items(tmp_path / "items.jsonl", 3), "-m", "openai/fake-small")
    assert result.exit_code != 0
    assert error_line(result) == (
        "Error: no API key for model openai/fake-small: set OPENAI_API_KEY or run 'embedkit keys set openai'"
    )
    assert server.calls == []


def test_a_wrong_key_is_refused_at_once_and_never_shown(invoke, server, monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_BASE_URL", server.openai_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-secret-123")
    result = invoke("embed-multi", "notes", write_items(tmp_path / "items.jsonl", 3), "-m", "openai/fake-small")
    assert result.exit_code != 0
    assert error_line(result) == (
        f"Error: model openai/fake-small: the API key in OPENAI_API_KEY was refused by {server.openai_url} "
        "(401 Unauthorized)"
    )
    assert "sk-wrong-secret-123" not in result.output
    assert server.outcomes() == ["401"]  # not retried


def test_keys_come_from_the_environment_before_keys_json(server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", server.openai_url)
    model = http.from_prefix("openai/fake-small")
    config.set_key("openai", KEY)
    model.embed(["from keys.json"])
    assert server.calls[-1].headers["Authorization"] == f"Bearer {KEY}"

    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    with pytest.raises(EmbedkitError, match=r"the API key in OPENAI_API_KEY was refused"):
        model.embed(["from the environment"])
    assert server.calls[-1].headers["Authorization"] == "Bearer sk-from-env"

    monkeypatch.delenv("OPENAI_API_KEY")
    config.set_key("openai", "sk-stale")
    with pytest.raises(EmbedkitError) as caught:
        model.embed(["from keys.json again"])
    assert str(caught.value) == (
        f"model openai/fake-small: the API key 'openai' in keys.json ('embedkit keys set openai' replaces it) "
        f"was refused by {server.openai_url} (401 Unauthorized)"
    )
    assert "sk-stale" not in str(caught.value)


def test_a_server_wanting_a_key_that_the_model_has_none_for(server):
    model = http.OpenAIModel("local", base_url=server.openai_url, model_name="fake")
    with pytest.raises(EmbedkitError) as caught:
        model.embed(["hello"])
    assert str(caught.value) == (
        f"model local: {server.openai_url} wants an API key (401 Unauthorized); give the model key_name or key_env"
    )
    assert "Authorization" not in server.calls[0].headers


# Settings


def test_check_settings_fills_defaults_and_normalises():
    checked = http.check_settings("m", {"api": "ollama", "model_name": "nomic-embed-text", "base_url": "gpu-box"})
    assert checked == {
        "api": "ollama", "base_url": "http://gpu-box:11434", "model_name": "nomic-embed-text", "key_name": None,
        "key_env": None, "dimensions": None, "batch_size": 32, "concurrency": 1, "timeout": 120.0, "retries": 6,
        "backoff": 1.0,
    }
    openai = http.check_settings("m", {"model_name": "text-embedding-3-small"})
    assert openai["base_url"] == "https://api.openai.com/v1"
    assert (openai["key_name"], openai["key_env"]) == ("openai", "OPENAI_API_KEY")
    assert (openai["batch_size"], openai["concurrency"], openai["timeout"]) == (100, 4, 60.0)
    local = http.check_settings("m", {"model_name": "x", "base_url": "http://127.0.0.1:8000/v1/embeddings"})
    assert (local["base_url"], local["key_name"], local["key_env"]) == ("http://127.0.0.1:8000/v1", None, None)
    assert http.check_settings("m", checked) == checked
    model = http.from_settings("m", checked)
    assert isinstance(model, http.OllamaModel) and model.texts_per_call == 32
    assert model.source == "Ollama at http://gpu-box:11434"


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"api": "cohere", "model_name": "x"}, "model m: api should be 'openai' or 'ollama', not 'cohere'"),
        ({"model_name": ""}, "model m: model_name should be the model's name on the server, not ''"),
        ({"model_name": "x", "base_url": "ftp://host"}, "model m: base_url should start with http:// or https://"),
        ({"model_name": "x", "batch_size": 0}, "model m: batch_size should be a positive whole number, not 0"),
        ({"model_name": "x", "concurrency": 2.5}, "model m: concurrency should be a positive whole number, not 2.5"),
        ({"model_name": "x", "dimensions": True}, "model m: dimensions should be a positive whole number, not True"),
        ({"model_name": "x", "timeout": 0}, "model m: timeout should be a number of seconds above 0, not 0"),
        ({"model_name": "x", "retries": -1}, "model m: retries should be a whole number (0 or more), not -1"),
        ({"model_name": "x", "key_env": "MY-KEY"}, "model m: key_env should be the name of an environment variable"),
        ({"model_name": "x", "batchsize": 10}, "model m: unknown setting 'batchsize' for an HTTP model"),
    ],
)
def test_bad_settings_name_the_model_and_the_setting(settings, message):
    with pytest.raises(EmbedkitError) as caught:
        http.check_settings("m", settings)
    assert str(caught.value).startswith(message)


def test_prefixes(monkeypatch):
    assert http.from_prefix("all-MiniLM-L6-v2") is None
    assert http.from_prefix("mistral/embed") is None
    monkeypatch.setenv("OPENAI_BASE_URL", "not a url")
    with pytest.raises(EmbedkitError, match=r"^model openai/x: OPENAI_BASE_URL should start with http://"):
        http.from_prefix("openai/x")
    with pytest.raises(EmbedkitError, match=r"give the model's name after ollama/"):
        http.from_prefix("ollama/")
    model = http.from_prefix("ollama/nomic-embed-text")
    assert (model.model_id, model.model_name, model.base_url) == (
        "ollama/nomic-embed-text", "nomic-embed-text", "http://127.0.0.1:11434"
    )
