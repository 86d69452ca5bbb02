"""Model plugins: the example package in plugins/embedkit-hashed-words, really installed
(into a directory on PYTHONPATH) and found through its entry point."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import embedkit
from embedkit import models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "plugins", "embedkit-hashed-words")


def pip_install(source, target):
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--target", str(target), str(source)],
        check=True, capture_output=True,
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A directory where the example plugin is installed, as pip would for a user."""
    target = tmp_path_factory.mktemp("site")
    pip_install(EXAMPLE, target)
    return target


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    """A plugin whose registration fails."""
    source = tmp_path_factory.mktemp("broken-src")
    (source / "pyproject.toml").write_text(textwrap.dedent("""
        [build-system]
        requires = ["setuptools>=77"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "embedkit-broken"
        version = "1.0"
        [project.entry-points."embedkit.models"]
        broken = "embedkit_broken:register_models"
        [tool.setuptools]
        py-modules = ["embedkit_broken"]
    """))
    (source / "embedkit_broken.py").write_text("def register_models(register):\n    raise RuntimeError('no weights')\n")
    target = tmp_path_factory.mktemp("broken-site")
    pip_install(source, target)
    return target


def embedkit_cli(*args, path, cwd):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in path)}
    script = os.path.join(os.path.dirname(sys.executable), "embedkit")  # the installed command
    return subprocess.run([sys.executable, script, *args], capture_output=True, text=True, env=env, cwd=cwd)


def test_installed_plugin_models_are_listed_and_used(installed, tmp_path):
    listed = embedkit_cli("models", "--json", path=[installed], cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows = {row["id"]: row for row in json.loads(listed.stdout)}
    assert rows["hashed-words-256"] == {
        "id": "hashed-words-256", "dimensions": 256, "aliases": ["hashed-words"], "source": "plugin embedkit-hashed-words",
    }
    assert rows["hashed-words-1024"]["dimensions"] == 1024
    assert list(rows)[0] == "all-MiniLM-L6-v2"  # built-ins first

    items = tmp_path / "items.csv"
    items.write_text("id,content\nsql,back up the sqlite database\nbread,bake the rye bread\n")
    built = embedkit_cli("embed-multi", "notes", str(items), "-m", "hashed-words", "--store", path=[installed], cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    assert "2 embedded" in built.stderr
    found = embedkit_cli("similar", "notes", "-c", "sqlite database", path=[installed], cwd=tmp_path)
    assert [json.loads(line)["id"] for line in found.stdout.splitlines()] == ["sql", "bread"]
    assert json.loads(embedkit_cli("collections", "--json", path=[installed], cwd=tmp_path).stdout)[0]["model"] == "hashed-words-256"

    # Without the plugin, the collection still lists and searches by id; text search says why not.
    missing = embedkit_cli("similar", "notes", "-c", "sqlite", path=[], cwd=tmp_path)
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        "Error: unknown model 'hashed-words-256': use a name from 'embedkit models', a local "
        "sentence-transformers model directory, a Hugging Face name such as BAAI/bge-small-en-v1.5, "
        "openai/NAME or ollama/NAME"
    ]
    by_id = embedkit_cli("similar", "notes", "sql", path=[], cwd=tmp_path)
    assert [json.loads(line)["id"] for line in by_id.stdout.splitlines()] == ["bread"]


def test_a_broken_plugin_is_reported_and_the_others_still_load(installed, broken, tmp_path):
    listed = embedkit_cli("models", path=[installed, broken], cwd=tmp_path)
    assert listed.returncode == 0
    assert "hashed-words-256" in listed.stdout
    assert listed.stderr.strip().splitlines() == [
        "Warning: plugin embedkit-broken (embedkit_broken:register_models) failed to load: no weights"
    ]


def test_plugins_load_in_process_when_a_model_is_not_built_in(installed, db, monkeypatch):
    monkeypatch.syspath_prepend(str(installed))
    monkeypatch.setattr(models, "_plugins_loaded", False)
    monkeypatch.setattr(models, "_registry", dict(models._registry))
    assert "hashed-words" not in models._registry
    model = models.get_model("hashed-words")
    assert model.model_id == "hashed-words-256" and model.source == "plugin embedkit-hashed-words"
    notes = db.create_collection("notes", model="hashed-words")
    notes.embed_multi([embedkit.Item("a", "sqlite backup"), embedkit.Item("b", "rye bread")])
    vector = notes.vector("a")
    assert vector.shape == (256,) and np.count_nonzero(vector) == 3  # two words and one pair
    assert [entry.id for entry in notes.similar("backup of sqlite", n=1)] == ["a"]
