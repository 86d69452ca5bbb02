import os
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

import embedkit
from embedkit import models, storage
from embedkit.cli import cli
from embedserver import EmbedServer

# Fixtures that load the real model: tests using them (directly or through other fixtures) are
# marked `model`, so `pytest -m "not (browser or model or slow)"` runs the quick part.
REAL_MODEL_FIXTURES = {"minilm", "torch_minilm"}


def pytest_collection_modifyitems(config, items):
    chromium = shutil.which("chromium") is not None
    # CI sets EMBEDKIT_REQUIRE_BROWSER=1: there a missing Chromium fails the browser tests
    # (each says how to install it) instead of skipping them.
    required = os.environ.get("EMBEDKIT_REQUIRE_BROWSER", "") not in ("", "0")
    skip = pytest.mark.skip(
        reason="Chromium is not installed (apt-get install chromium): the browser tests look at pages in it"
    )
    for item in items:
        if REAL_MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.model)
        if item.get_closest_marker("browser") and not chromium and not required:
            item.add_marker(skip)


class LettersModel(models.EmbeddingModel):
    """A tiny deterministic model for exact scores: counts of a, e, i, o, u, spaces, digits, plus 1."""

    model_id = "test-letters"
    dimensions = 8
    source = "tests"

    def _embed(self, texts):
        return np.array(
            [
                [t.count(c) for c in "aeiou "] + [sum(ch.isdigit() for ch in t), 1]
                for t in (text.lower() for text in texts)
            ],
            dtype=np.float32,
        )


LETTERS = models.register(LettersModel())


class TableModel(models.EmbeddingModel):
    """A test model that returns the vector its table holds for each text: embed_multi
    writes chosen vectors."""

    source = "tests"

    def __init__(self, model_id, dimensions):
        super().__init__()
        self.model_id, self.dimensions = model_id, dimensions
        self.table = {}

    def _embed(self, texts):
        return np.array([self.table[text] for text in texts], dtype=np.float32)


@pytest.fixture
def letters():
    """The deterministic test model, with its call counter reset."""
    LETTERS.calls = 0
    return LETTERS


@pytest.fixture(scope="session", autouse=True)
def cache_dir(tmp_path_factory):
    """Models are prepared (all-MiniLM-L6-v2-int8) in the session's own cache, not the user's."""
    path = tmp_path_factory.mktemp("cache")
    previous = os.environ.get("EMBEDKIT_CACHE_DIR")
    os.environ["EMBEDKIT_CACHE_DIR"] = str(path)
    yield path
    if previous is None:
        del os.environ["EMBEDKIT_CACHE_DIR"]
    else:
        os.environ["EMBEDKIT_CACHE_DIR"] = previous


@pytest.fixture(autouse=True)
def user_dir(tmp_path_factory, monkeypatch):
    """Each test's own keys.json and models.json, never the real user's."""
    path = tmp_path_factory.mktemp("user")
    monkeypatch.setenv("EMBEDKIT_USER_DIR", str(path))
    for variable in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OLLAMA_HOST"):
        monkeypatch.delenv(variable, raising=False)
    return path


@pytest.fixture(scope="session")
def minilm():
    """The real default model, all-MiniLM-L6-v2-int8, prepared in the session's cache and loaded
    once per test session (so no test's output depends on whether it came first)."""
    model = models.get_model()
    model.load()
    return model


@pytest.fixture(scope="session")
def torch_minilm():
    """The same model on torch, all-MiniLM-L6-v2 (loaded once per test session)."""
    pytest.importorskip("sentence_transformers")
    model = models.get_model("all-MiniLM-L6-v2")
    model.load()
    return model


@pytest.fixture
def db_path(tmp_path):
    return str(tmp_path / "embeddings.db")


@pytest.fixture
def db(db_path):
    database = embedkit.Database(db_path)
    yield database
    database.close()


@pytest.fixture
def runner(tmp_path, monkeypatch):
    """A CliRunner working in tmp_path, so the default embeddings.db lands there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EMBEDKIT_DATABASE", raising=False)
    return CliRunner()


@pytest.fixture
def invoke(runner):
    def run(*args, input=None):
        return runner.invoke(cli, [str(a) for a in args], input=input, catch_exceptions=False)

    return run


@pytest.fixture(scope="module")
def embed_service():
    """The fake embedding service (embedserver.py), for `embedkit` run in subprocesses with the
    environment command_env() makes."""
    with EmbedServer() as server:
        yield server


def command_env(tmp_path, server) -> dict:
    """The environment of the installed `embedkit` run in a subprocess: openai/ models answered
    by server, the test's own user directory, and none of the caller's database, lock timeout
    or debug settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("EMBEDKIT_DATABASE", "EMBEDKIT_LOCK_TIMEOUT", "EMBEDKIT_DEBUG", "OPENAI_"))}
    env.update(OPENAI_BASE_URL=server.openai_url, OPENAI_API_KEY="sk-test", EMBEDKIT_USER_DIR=str(tmp_path / "user"))
    return env


def dump(path):
    """Everything in a database file (schema and rows) as text, to assert a command left it unchanged."""
    if not os.path.exists(path):
        return None
    # embedkit's own SQLite library: a second one in the process would not know the first's
    # locks (POSIX locks are per process), and closing its connection could delete the WAL
    # of a connection the first still has open.
    conn = storage.sqlite3.connect(path)
    try:
        lines = [sql for (sql,) in conn.execute("select sql from sqlite_master where sql is not null order by type, name")]
        tables = conn.execute("select name from sqlite_master where type = 'table' order by name").fetchall()
        for (table,) in tables:
            lines += sorted(f"{table}: {row!r}" for row in conn.execute(f'select * from "{table}"'))
        return "\n".join(lines)
    finally:
        conn.close()


from httpserver import http_server  # noqa: E402,F401  (a real HTTP server on 127.0.0.1)
