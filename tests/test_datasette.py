"""The Datasette plugin, through Datasette's own test client and its real command line."""

import asyncio
import json
import re
import threading
import time
from pathlib import Path

import pytest

import embedkit
from conftest import LettersModel
from datasettes import datasette_command, get_json, make, request, sql
from embedkit import models, sqlfunctions

pytestmark = pytest.mark.datasette

ROOT = Path(__file__).resolve().parent.parent
POSTS = [
    ("1", "Backing up SQLite: copy a live database safely with the .backup command or with Litestream.", "sqlite"),
    ("2", "Full-text search: SQLite's FTS5 extension builds an index of the words in your documents.", "sqlite"),
    ("3", "My sourdough starter: feed the starter flour and water every day and keep it somewhere warm.", "baking"),
    ("4", "Rye bread: a dense loaf of rye flour with caraway seeds that keeps for a week.", "baking"),
    ("5", "Publishing with Datasette: Datasette turns a SQLite file into a website and a JSON API.", "datasette"),
    ("6", "Bread recipes for beginners. " + "Knead, rest, shape and bake. " * 40, "baking"),
]


@pytest.fixture(scope="module")
def posts_db(tmp_path_factory, minilm):
    path = tmp_path_factory.mktemp("datasette") / "embeddings.db"
    with embedkit.Database(path) as db:
        posts = db.create_collection("posts")
        posts.embed_multi([embedkit.Item(id, text, {"tag": tag}) for id, text, tag in POSTS], store=True)
        db.conn.execute("create table notes (id text primary key, body text)")
        db.conn.execute("insert into notes values ('1', 'not a collection')")
    return path


# A generous limit for the model (SQL's is sql_time_limit_ms): the machine running the tests may be busy.
PATIENT = {"plugins": {"embedkit": {"model_time_limit_ms": 60000}}}


@pytest.fixture(scope="module")
def ds(posts_db):
    return patient([posts_db])


def patient(paths, config=None):
    return make(paths, {**PATIENT, **(config or {})}, settings={"sql_time_limit_ms": 60000})


def test_similar_to_typed_text_as_json(ds, posts_db):
    data = get_json(ds, "/embeddings/posts/-/similar.json?q=rye+bread+with+caraway&n=3")
    with embedkit.Database(posts_db) as db:
        expected = db.collection("posts").similar("rye bread with caraway", n=3)
    assert data["ok"] is True
    assert (data["database"], data["table"], data["model"], data["n"]) == ("embeddings", "posts", "all-MiniLM-L6-v2-int8", 3)
    assert [row["id"] for row in data["rows"]] == [entry.id for entry in expected] and data["rows"][0]["id"] == "4"
    assert [row["score"] for row in data["rows"]] == pytest.approx([entry.score for entry in expected], abs=1e-6)
    assert data["rows"][0]["metadata"] == {"tag": "baking"}
    assert data["rows"][0]["content"] == POSTS[3][1]
    assert set(data["rows"][0]) == {"id", "score", "content", "metadata"}  # no vector, base64 or otherwise


def test_similar_to_a_row_as_json(ds):
    data = get_json(ds, "/embeddings/posts/-/similar.json?id=3&n=10")
    ids = [row["id"] for row in data["rows"]]
    assert "3" not in ids and len(ids) == 5
    assert ids[0] in ("4", "6")  # the other baking posts first
    assert data["id"] == "3" and data["q"] is None


def test_one_result_per_metadata_value(ds):
    data = get_json(ds, "/embeddings/posts/-/similar.json?q=bread&unique=tag")
    assert [row["metadata"]["tag"] for row in data["rows"]][0] == "baking"
    assert sorted(row["metadata"]["tag"] for row in data["rows"]) == ["baking", "datasette", "sqlite"]


def test_filters_and_min_score(ds):
    data = get_json(ds, "/embeddings/posts/-/similar.json?q=bread&filter=tag=sqlite&n=5")
    assert [row["metadata"]["tag"] for row in data["rows"]] == ["sqlite", "sqlite"]
    assert data["filter"] == {"tag": "sqlite"}
    data = get_json(ds, "/embeddings/posts/-/similar.json?q=rye+bread&min_score=0.3&n=6")
    assert data["rows"] and all(row["score"] >= 0.3 for row in data["rows"]) and len(data["rows"]) < 6
    data = get_json(ds, "/embeddings/posts/-/similar.json?id=3&filter=tag=baking")
    assert sorted(row["id"] for row in data["rows"]) == ["4", "6"]
    page = request(ds, "/embeddings/posts/-/similar?q=bread&filter=tag=sqlite")
    assert 'name="filter" value="tag=sqlite"' in page.text and page.text.count('<td class="score">') == 2


def test_keyword_and_hybrid_modes(ds):
    data = get_json(ds, "/embeddings/posts/-/similar.json?q=FTS5+extension&mode=keyword")
    assert data["mode"] == "keyword" and [row["id"] for row in data["rows"]] == ["2"]
    data = get_json(ds, "/embeddings/posts/-/similar.json?q=rye+caraway&mode=hybrid&n=2")
    assert data["rows"][0]["id"] == "4" and data["rows"][0]["score"] == pytest.approx(2 / 61)
    page = request(ds, "/embeddings/posts/-/similar?q=FTS5&mode=keyword")
    assert '<option value="keyword" selected>' in page.text


def test_similar_page_lists_results_with_links_and_snippets(ds):
    response = request(ds, "/embeddings/posts/-/similar?q=bread+recipes&n=6")
    assert response.status_code == 200
    html = response.text
    assert 'name="q" value="bread recipes"' in html
    assert html.count('<td class="score">') == 6
    assert '<a href="/embeddings/posts/4">4</a>' in html
    # a long text is cut to a snippet on the page; the JSON has it whole
    assert "Knead, rest, shape and bake." in html and "…</td>" in html
    assert POSTS[5][1] not in html
    assert '<td class="metadata"><span class="key">tag:</span> baking</td>' in html
    assert 'href="/embeddings/posts/-/similar.json?q=bread+recipes&amp;n=6"' in html
    assert "6 items, embedded with <code>all-MiniLM-L6-v2-int8</code>" in html


def test_similar_page_without_a_query_is_a_form(ds):
    response = request(ds, "/embeddings/posts/-/similar")
    assert response.status_code == 200
    assert '<input type="search" name="q"' in response.text
    assert 'class="score"' not in response.text


def test_row_page_links_to_similar_items(ds):
    html = request(ds, "/embeddings/posts/3").text
    assert 'link.href = "/embeddings/posts/-/similar?id=3";' in html
    assert "embedkit-similar" not in request(ds, "/embeddings/notes/1").text


def test_table_actions_offer_similar_items(ds):
    html = request(ds, "/embeddings/posts").text
    assert re.search(r'<a href="/embeddings/posts/-/similar"[^>]*>Similar items', html)
    assert re.search(r'<a href="/embeddings/posts/-/map"[^>]*>Map', html)
    assert "Similar items" not in request(ds, "/embeddings/notes").text


def test_related_lists_as_json(ds, posts_db):
    assert get_json(ds, "/embeddings/posts/-/related.json?id=3", status=404)["error"] == (
        "collection 'posts' has no related items yet: run embedkit related posts first")
    with embedkit.Database(posts_db) as db:
        posts = db.collection("posts")
        posts.compute_related(n=2)
        expected = posts.related("3", ["tag"])
    data = get_json(ds, "/embeddings/posts/-/related.json?id=3&field=tag")
    assert data == {"ok": True, "database": "embeddings", "table": "posts", **expected}
    assert [neighbour["tag"] for neighbour in data["related"]] == ["baking", "baking"]
    assert set(get_json(ds, "/embeddings/posts/-/related.json?id=3")["related"][0]) == {"id", "score", "tag"}
    assert get_json(ds, "/embeddings/posts/-/related.json", status=400)["error"] == (
        "give id, the item whose related items to list")
    assert get_json(ds, "/embeddings/posts/-/related.json?id=nope", status=404)["error"] == (
        "No item with id 'nope' in posts")
    assert get_json(ds, "/embeddings/notes/-/related.json?id=1", status=404)["error"] == (
        "notes is not an embedkit collection in embeddings")


def test_bookkeeping_tables_are_hidden(ds):
    tables = {table["name"]: table["hidden"] for table in get_json(ds, "/embeddings.json")["tables"]}
    assert tables["posts"] is False and tables["notes"] is False
    assert tables["_embedkit_collections"] is True and tables["_embedkit_sources"] is True
    assert tables["_embedkit_migrations"] is True
    assert tables.get("_embedkit_related", True) is True


@pytest.mark.parametrize(
    "query, status, message",
    [
        ("n=0&q=bread", 400, "n must be a whole number from 1 to 100, not '0'"),
        ("n=101&q=bread", 400, "n must be a whole number from 1 to 100, not '101'"),
        ("n=ten&q=bread", 400, "n must be a whole number from 1 to 100, not 'ten'"),
        ("q=", 400, "q is empty: type some text to search for"),
        ("q=+++", 400, "q is empty: type some text to search for"),
        ("q=bread&id=1", 400, "give q (text to search for) or id (an item), not both"),
        ("q=" + "a" * 2001, 400, "q is 2,001 characters; at most 2,000 are searched"),
        ("id=nope", 404, "No item with id 'nope' in posts"),
        ("q=bread&mode=fuzzy", 400, "mode must be one of dense, keyword, hybrid, not 'fuzzy'"),
        ("id=1&mode=keyword", 400, "mode=keyword searches for q, a text, not for an item's id"),
        ("q=bread&filter=tag", 400, "filter 'tag' is not KEY=VALUE"),
        ("q=bread&min_score=high", 400, "min_score must be a number, not 'high'"),
    ],
)
def test_bad_parameters(ds, query, status, message):
    data = get_json(ds, f"/embeddings/posts/-/similar.json?{query}", status=status)
    assert data == {"ok": False, "error": message, "status": status, "title": None}
    page = request(ds, f"/embeddings/posts/-/similar?{query}")
    assert page.status_code == status
    assert message.replace("'", "&#39;") in page.text


def test_json_needs_a_query(ds):
    data = get_json(ds, "/embeddings/posts/-/similar.json", status=400)
    assert data["error"] == "give q (text to search for) or id (an item)"


@pytest.mark.parametrize(
    "path, message",
    [
        ("/nope/posts/-/similar.json?q=x", "Database not found: nope"),
        ("/embeddings/notes/-/similar.json?q=x", "notes is not an embedkit collection in embeddings"),
        ("/embeddings/missing/-/similar.json?q=x", "missing is not an embedkit collection in embeddings"),
    ],
)
def test_unknown_database_or_collection(ds, path, message):
    assert get_json(ds, path, status=404)["error"] == message


def test_a_collection_the_actor_may_not_view_is_not_searchable(posts_db):
    with embedkit.Database(posts_db) as db:
        db.collection("posts").compute_related(n=2)
    private = patient([posts_db], {"databases": {"embeddings": {"tables": {"posts": {"allow": {"id": "alice"}}}}}})
    for path in ("/embeddings/posts", "/embeddings/posts/-/similar?q=bread", "/embeddings/posts/-/similar.json?q=bread",
                 "/embeddings/posts/-/related.json?id=1", "/embeddings/posts/-/map"):
        assert request(private, path).status_code == 403, path
        assert request(private, path, actor={"id": "bob"}).status_code == 403, path
        assert request(private, path, actor={"id": "alice"}).status_code == 200, path
    assert get_json(private, "/embeddings/posts/-/similar.json?id=1", status=403) == {
        "ok": False, "error": "You do not have permission to view this table", "status": 403, "title": None}


def test_sql_functions_in_datasette(ds):
    query = "select embedkit_dims(embedkit_query('posts', :q)) as dims, embedkit_dims(embedkit_embed(:q)) as default_dims"
    assert sql(ds, "embeddings", query, q="hello")["rows"] == [{"dims": 384, "default_dims": 384}]
    ranked = sql(ds, "embeddings", "select id from posts order by embedkit_cosine(embedding, "
                 "embedkit_query('posts', :q)) desc limit 1", q="sourdough")
    assert ranked["rows"] == [{"id": "3"}]


def test_embedding_in_sql_is_bounded(ds, posts_db):
    too_long = "select embedkit_embed('" + "word " * 401 + "')"
    # Python's sqlite3 gives every function error the same message...
    data = sql(ds, "embeddings", too_long, status=400)
    assert data["error"] == "user-defined function raised exception"

    def reason(conn):
        with pytest.raises(Exception) as error:
            conn.execute(too_long)
        return sqlfunctions.explain(error.value)

    # ...the reason, on Datasette's own connections (and in its log):
    reason = asyncio.run(ds.get_database("embeddings").execute_fn(reason))
    assert reason == "embedkit_embed: text is 2,005 characters; at most 2,000 may be embedded here"

    def reason_of(query):
        def run(conn):
            with pytest.raises(Exception) as error:
                conn.execute(query).fetchall()
            return sqlfunctions.explain(error.value)

        return asyncio.run(ds.get_database("embeddings").execute_fn(run))

    # A statement that would embed row after row stops at the cap on model calls
    many = ("with recursive n(i) as (select 1 union all select i + 1 from n limit 100000) "
            "select count(embedkit_embed('text number ' || i)) from n")
    started = time.monotonic()
    assert reason_of(many) == ("embedkit_embed: this statement has already asked for 10 vectors, the most one "
                               "may here; search for one text at a time")
    assert time.monotonic() - started < 10
    # the same text over and over is embedded once, and is no call at all the next time
    same = sql(ds, "embeddings", "with recursive n(i) as (select 1 union all select i + 1 from n limit 500) "
                                 "select count(embedkit_embed('the same text')) as n from n")
    assert same["rows"] == [{"n": 500}]


def test_canned_query_with_q_is_a_search_form(posts_db):
    canned = patient([posts_db], {"databases": {"embeddings": {"queries": {"search": {
        "sql": "select id, embedkit_cosine(embedding, embedkit_query('posts', :q)) as score "
               "from posts order by score desc limit 3"}}}}})
    assert 'name="q"' in request(canned, "/embeddings/search").text
    data = get_json(canned, "/embeddings/search.json?_shape=objects&q=rye+caraway+loaf")
    assert [row["id"] for row in data["rows"]][0] == "4"


def test_new_rows_show_while_embed_multi_writes(tmp_path):
    """Datasette keeps answering while another connection writes, and sees each commit."""

    class Slow(LettersModel):
        model_id = "test-slow-letters"

        def _embed(self, texts):
            time.sleep(0.02)  # a write every few milliseconds, for a while
            return super()._embed(texts)

    models.register(Slow())
    path = tmp_path / "embeddings.db"
    with embedkit.Database(path) as db:
        db.create_collection("notes", model="test-slow-letters")
    live = patient([path])
    assert get_json(live, "/embeddings/notes.json?_shape=objects")["rows"] == []

    def write():
        with embedkit.Database(path) as db:
            items = (embedkit.Item(f"n{i:03d}", f"note {i} " + "a e i o u"[: i % 9 + 1]) for i in range(300))
            db.collection("notes").embed_multi(items, store=True, batch_size=5)

    writer = threading.Thread(target=write)
    writer.start()
    counts = []
    while writer.is_alive():
        counts.append(sql(live, "embeddings", "select count(*) as n from notes")["rows"][0]["n"])
        get_json(live, "/embeddings/notes/-/similar.json?q=note+aaa&n=3")
    writer.join()
    assert counts == sorted(counts) and len(set(counts)) > 2, counts  # saw the rows arrive, batch by batch
    final = get_json(live, "/embeddings/notes/-/similar.json?q=note+aaa&n=100")
    assert len(final["rows"]) == 100
    assert sql(live, "embeddings", "select count(*) as n from notes")["rows"][0]["n"] == 300


def _datasette_cli(*args, cwd):
    # A generous time limit for the model: the machine running the tests may be busy.
    result = datasette_command(*args, "--setting", "sql_time_limit_ms", "60000", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_installing_embedkit_activates_the_plugin(ds, posts_db):
    plugins = [plugin for plugin in get_json(ds, "/-/plugins.json") if plugin["name"] == "embedkit-sqlite"]
    assert len(plugins) == 1 and plugins[0]["version"] == embedkit.__version__
    assert plugins[0]["templates"] is True  # its pages come from the package's templates/
    assert {"register_routes", "prepare_connection", "extra_body_script", "startup"} <= set(plugins[0]["hooks"])
    # and in a fresh `datasette` process, with no configuration
    page = _datasette_cli(str(posts_db), "--get", "/embeddings/posts/-/similar.json?q=bread", cwd=ROOT)
    assert json.loads(page)["rows"][0]["metadata"]["tag"] == "baking"


def test_a_template_dir_overrides_the_similar_page(posts_db, tmp_path):
    """As with any Datasette plugin, a --template-dir file of the same name replaces the page."""
    (tmp_path / "embedkit_similar.html").write_text(
        '{% extends "base.html" %}{% block content %}<p id="mine">{{ rows|length }} rows for {{ q }}</p>'
        "{% endblock %}"
    )
    page = _datasette_cli(str(posts_db), "--template-dir", str(tmp_path), "--get",
                          "/embeddings/posts/-/similar?q=bread&n=3", cwd=ROOT)
    assert '<p id="mine">3 rows for bread</p>' in page


@pytest.fixture(scope="module")
def papers_ds(tmp_path_factory):
    path = tmp_path_factory.mktemp("datasette-papers") / "papers.db"
    url = "https://example.org/papers/ternary.pdf"
    with embedkit.Database(path) as db:
        db.create_collection("papers", "test-letters").embed_multi([
            embedkit.Item("notes.md", "notes about ternary weights"),
            embedkit.Item(f"{url}#page=1&chunk=1", "ternary weights need no multiplications",
                          {"source": url, "page": 1, "chunk": 1}),
            embedkit.Item("local.pdf#page=1&chunk=1", "ternary local copy", {"source": "local.pdf", "page": 1}),
        ], store=True)
    return make([path])


def test_a_row_url_typed_with_a_dot_in_the_id_reaches_the_row(papers_ds):
    response = request(papers_ds, "/papers/papers/notes.md")
    assert response.status_code == 302
    assert response.headers["location"] == "/papers/papers/notes~2Emd"
    page = request(papers_ds, response.headers["location"])
    assert page.status_code == 200 and "notes about ternary weights" in page.text
    # Only for an item that is there, in a collection.
    assert request(papers_ds, "/papers/papers/missing.md").status_code == 404
    # The similar page links rows in the form Datasette reads.
    html = request(papers_ds, "/papers/papers/-/similar?q=ternary+weights").text
    assert '<a href="/papers/papers/notes~2Emd">notes.md</a>' in html


def test_url_sources_are_links_on_the_similar_page(papers_ds):
    html = request(papers_ds, "/papers/papers/-/similar?q=ternary").text
    url = "https://example.org/papers/ternary.pdf"
    assert f'<span class="key">source:</span> <a href="{url}">{url}</a>' in html
    assert '<span class="key">source:</span> local.pdf' in html  # a path is not a link
