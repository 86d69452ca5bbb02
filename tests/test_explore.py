"""Clusters, maps, heatmaps and classification by example, with the real default model."""

import csv
import importlib.util
import json
import sqlite3

import numpy as np
import pytest

import browser
import embedkit
import test_docs
from embedkit import Item
from embedkit.errors import EmbedkitError
from embedkit.explore.classify import Example
from embedkit.explore.loading import sample
from test_docs import page_env  # noqa: F401  (the fixture docs pages run in)

# Three topics anyone can tell apart: clusters of them must be the topics.
TOPICS = {
    "bread": [
        "Sourdough bread needs flour, water and a lively starter",
        "Rye bread with caraway seeds keeps for a week",
        "Knead the bread dough until it is smooth and elastic",
        "Brioche is a rich bread made with butter and eggs",
        "Bread flour has more protein than cake flour",
        "Bake the bread loaf in a hot oven with steam",
    ],
    "sqlite": [
        "SQLite stores a whole database in one file",
        "Back up a SQLite database with the backup command",
        "The FTS5 extension adds full-text search to SQLite",
        "SQLite transactions and the write-ahead log",
        "An index speeds up SQLite queries on large tables",
        "Vacuum a SQLite database to give space back",
    ],
    "bicycle": [
        "Fix a flat bicycle tyre with a patch kit",
        "Adjust the gears of a road bicycle",
        "Cycling in the rain needs mudguards and bicycle lights",
        "Clean and oil a bicycle chain every month",
        "Choose a bicycle frame size for your height",
        "Bicycle brake pads wear out and need replacing",
    ],
}


def topic_items():
    return [Item(f"{topic}-{i}", text, {"topic": topic, "title": text.split(" ")[0] + f" {topic} {i}"})
            for topic, texts in TOPICS.items() for i, text in enumerate(texts)]


@pytest.fixture
def topics(db, minilm):
    collection = db.create_collection("notes")
    collection.embed_multi(topic_items(), store=True)
    return collection


def rows(db, table):
    return db.conn.execute(f"select * from {table} order by 1").fetchall()


def groups(db, collection="notes"):
    """{cluster: set of the topics of its items}"""
    found = {}
    for id, number in db.conn.execute(f"select id, cluster from {collection}_clusters"):
        found.setdefault(number, set()).add(id.split("-")[0])
    return found


# Clusters


def test_clusters_are_the_topics_and_named_by_their_words(topics, db):
    result = topics.cluster(k=3, seed=0)
    assert result.how == "computed" and result.items == 18 and result.k == 3
    assert sorted(map(len, groups(db).values())) == [1, 1, 1], groups(db)
    names = {next(iter(topics_)): c.name for c, topics_ in zip(result.clusters, groups(db).values())}
    words = {"bread": "bread", "sqlite": "sqlite", "bicycle": "bicycle"}
    for c in result.clusters:
        topic = groups(db)[c.cluster]
        (topic,) = topic
        assert c.name.split(", ")[0] == words[topic], names
        assert c.size == 6 and len(c.central) == 3 and all(id.startswith(topic) for id in c.central)
        assert c.terms[: len(c.name.split(", "))] == c.name.split(", ")
    # The tables any SQL client reads: distances are cosine distances to the stored centroid.
    info = {row[0]: row for row in rows(db, "notes_cluster_info")}
    for id, number, distance in rows(db, "notes_clusters"):
        centroid = np.frombuffer(info[number][6], dtype="<f4")
        vector = topics.vector(id)
        cosine = vector @ centroid / np.linalg.norm(vector) / np.linalg.norm(centroid)
        assert distance == pytest.approx(1 - cosine, abs=1e-5)
        distances = [d for _, n, d in rows(db, "notes_clusters") if n == number]
        assert (distance >= sorted(distances)[2]) or id in json.loads(info[number][4])
    assert [row[1] for row in rows(db, "notes_cluster_info")] == [6, 6, 6]


def test_same_seed_same_clusters_in_another_database(tmp_path, minilm):
    tables = []
    for name in ("a", "b"):
        with embedkit.Database(tmp_path / f"{name}.db") as db:
            collection = db.create_collection("notes")
            collection.embed_multi(list(reversed(topic_items())) if name == "b" else topic_items(), store=True)
            collection.cluster(k=4, seed=7)
            tables.append((rows(db, "notes_clusters"), [row[:6] for row in rows(db, "notes_cluster_info")]))
    assert tables[0] == tables[1]


def test_rerun_with_same_settings_changes_nothing_and_other_settings_recompute(topics, db):
    topics.cluster(k=3, seed=0)
    before = rows(db, "notes_clusters")
    again = topics.cluster(k=3, seed=0)
    assert again.how == "unchanged" and [c.name for c in again.clusters] == [c.name for c in topics.clusters()]
    assert rows(db, "notes_clusters") == before
    other = topics.cluster(k=2, seed=0)
    assert other.how == "computed" and len(rows(db, "notes_cluster_info")) == 2


def test_new_items_join_the_nearest_cluster_without_reclustering(topics, db):
    topics.cluster(k=3, seed=0)
    info_before = rows(db, "notes_cluster_info")
    bread = next(c.cluster for c in topics.clusters() if c.name.startswith("bread"))
    topics.embed_multi([Item("new-loaf", "A whole wheat bread loaf rises slowly overnight", None)], store=True)
    topics.delete("sqlite-0")
    result = topics.assign_clusters()
    assert result.how == "assigned" and result.assigned == 1 and result.removed == 1 and result.items == 18
    clusters = dict((id, n) for id, n, _ in rows(db, "notes_clusters"))
    assert clusters["new-loaf"] == bread and "sqlite-0" not in clusters
    info = rows(db, "notes_cluster_info")
    # Centroids and names are those of the clustering; sizes follow the items.
    assert [row[2:] for row in info] == [row[2:] for row in info_before]
    sizes = {row[0]: row[1] for row in info}
    assert sizes[bread] == 7 and sorted(sizes.values()) == [5, 6, 7]
    # Items assigned before keep their cluster; a clustering again starts afresh.
    assert topics.cluster(k=3, seed=0).how == "computed"


def test_auto_k_finds_the_three_topics(topics, db):
    result = topics.cluster(k="auto", seed=0)
    assert result.k == 3, result.silhouettes
    assert result.silhouettes[3] == max(result.silhouettes.values())
    assert sorted(map(len, groups(db).values())) == [1, 1, 1]


def test_cluster_filters_choose_the_items(topics, db):
    result = topics.cluster(k=2, seed=0, where="json_extract(metadata, '$.topic') != 'sqlite'")
    assert result.items == 12
    assert set().union(*groups(db).values()) == {"bread", "bicycle"}
    assert topics.cluster(k=2, seed=0, metadata={"topic": "bread"}).items == 6


def test_cluster_errors(topics, db, tmp_path):
    with pytest.raises(EmbedkitError, match="cannot make 30 clusters of 18 items"):
        topics.cluster(k=30)
    with pytest.raises(EmbedkitError, match="k must be a whole number of at least 2"):
        topics.cluster(k=1)
    with pytest.raises(EmbedkitError, match="is not valid SQL here"):
        topics.cluster(k=2, where="no_such_column = 1")
    with pytest.raises(EmbedkitError, match="has no clusters yet: run embedkit cluster notes first"):
        topics.assign_clusters()
    db.conn.execute("create table notes_clusters (x)")
    with pytest.raises(EmbedkitError, match="notes_clusters is already a table that embedkit did not make"):
        topics.cluster(k=2)
    assert rows(db, "notes_clusters") == []


def test_missing_extra_is_named_in_one_line(topics, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "sklearn.cluster", None)
    with pytest.raises(EmbedkitError, match=r"^clustering needs the 'explore' extra: pip install 'embedkit-sqlite\[explore\]'$"):
        topics.cluster(k=2)


def test_deleting_a_collection_drops_its_explore_tables(topics, db):
    topics.cluster(k=3, seed=0)
    topics.classify([Example("baking", id="bread-0"), Example("cycling", id="bicycle-0")])
    db.delete_collection("notes")
    left = {row[0] for row in db.conn.execute("select name from sqlite_master where name like 'notes%'")}
    assert left == set() and db.conn.execute("select count(*) from _embedkit_explore").fetchone() == (0,)


def test_names_without_stored_text(db, minilm):
    """Titles in the metadata stand in for the text; with neither, the most central items name a cluster."""
    titled = db.create_collection("titled")
    titled.embed_multi(topic_items(), store=False)
    for c in titled.cluster(k=3, seed=0).clusters:
        assert c.name.split(", ")[0] in TOPICS, c.name
    bare = db.create_collection("bare")
    bare.embed_multi([Item(item.id, item.content) for item in topic_items()], store=False)
    for c in bare.cluster(k=3, seed=0).clusters:
        assert c.terms == [] and c.name == " / ".join(c.central[:2])


# Classification by example


def write_examples(path, rows_, header):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows_)
    return path


def test_classify_by_example_ids_and_texts(topics, db):
    examples = [Example("baking", id="bread-0"), Example("baking", id="bread-1"),
                Example("databases", text="storing data in SQL tables"), Example("cycling", id="bicycle-2")]
    result = topics.classify(examples)
    assert result.items == 18 and result.labelled == 18
    assert result.counts == {"baking": 6, "cycling": 6, "databases": 6}
    found = {id: (label, score, margin) for id, label, score, margin in rows(db, "notes_labels")}
    topic_label = {"bread": "baking", "sqlite": "databases", "bicycle": "cycling"}
    assert all(found[id][0] == topic_label[id.split("-")[0]] for id in found)
    # score: cosine similarity to the mean of the label's example vectors; margin: over the second best.
    centroids = {"baking": (topics.vector("bread-0") + topics.vector("bread-1")) / 2,
                 "cycling": topics.vector("bicycle-2"),
                 "databases": topics.model.embed(["storing data in SQL tables"])[0]}
    for id, (_, score, margin) in found.items():
        vector = topics.vector(id)
        cosines = sorted((float(vector @ c / np.linalg.norm(vector) / np.linalg.norm(c)) for c in centroids.values()),
                         reverse=True)
        assert score == pytest.approx(cosines[0], abs=1e-5) and margin == pytest.approx(cosines[0] - cosines[1], abs=1e-5)


def test_min_score_leaves_uncertain_items_unlabelled(topics, db):
    examples = [Example("baking", id="bread-0"), Example("cycling", id="bicycle-0")]
    scores = {id: score for id, _, score, _ in (topics.classify(examples) and rows(db, "notes_labels"))}
    threshold = float(np.median(list(scores.values())))
    result = topics.classify(examples, min_score=threshold)
    found = {id: (label, score) for id, label, score, _ in rows(db, "notes_labels")}
    assert result.labelled == sum(score >= threshold for score in scores.values()) < 18
    for id, (label, score) in found.items():
        assert (label is None) == (score < threshold), (id, label, score)
    # The examples are labelled as themselves, with a score of 1.
    assert found["bread-0"] == ("baking", 1.0)


def test_classify_the_pure_sql_way_agrees(topics, db):
    """docs/explore.md's SQL: centroids by embedkit_centroid, best label by a window function."""
    topics.classify([Example("baking", id="bread-0"), Example("cycling", id="bicycle-0"),
                     Example("databases", id="sqlite-0")])
    db.conn.executescript("""
        create table examples (id text, label text);
        insert into examples values ('bread-0', 'baking'), ('bicycle-0', 'cycling'), ('sqlite-0', 'databases');
    """)
    by_sql = db.conn.execute("""
        with centroids as (
          select label, embedkit_centroid(embedding) as centroid
          from examples join notes using (id) group by label
        ),
        scores as (
          select notes.id, label, embedkit_cosine(notes.embedding, centroid) as score
          from notes, centroids
        ),
        ranked as (
          select id, label, score, row_number() over (partition by id order by score desc) as rank
          from scores
        )
        select id, label, round(score, 4) from ranked where rank = 1 order by id
    """).fetchall()
    assert by_sql == [(id, label, round(score, 4)) for id, label, score, _ in rows(db, "notes_labels")]


def test_classify_errors(topics, tmp_path):
    with pytest.raises(EmbedkitError, match="at least two labels"):
        topics.classify([Example("baking", id="bread-0")])
    with pytest.raises(EmbedkitError, match="example 'nope' \\(baking\\) is not an item of 'notes'"):
        topics.classify([Example("baking", id="nope"), Example("cycling", id="bicycle-0")])
    from embedkit.explore.classify import read_examples

    with pytest.raises(EmbedkitError, match="x.csv: needs a header with label and either id or text, not id, text, label"):
        read_examples(b"id,text,label\n1,a,b\n", "x.csv")
    with pytest.raises(EmbedkitError, match="x.csv, line 3: empty label"):
        read_examples(b"id,label\n1,a\n2,\n", "x.csv")
    assert read_examples(b"text,label\nrye,baking\n", "x.csv") == [Example("baking", text="rye")]


# Maps


def test_map_sampling_rule_is_stable():
    ids = [f"item-{i}" for i in range(1000)]
    chosen = {ids[i] for i in sample(ids, 100)}
    reordered = list(reversed(ids))
    assert len(chosen) == 100 and chosen == {reordered[i] for i in sample(reordered, 100)}
    grown = ids + [f"new-{i}" for i in range(100)]
    kept = {grown[i] for i in sample(grown, 100)}
    # An item shown stays shown unless a new item took its place.
    assert len(kept) == 100 and kept - chosen == kept - set(ids) and 0 < len(kept - set(ids)) < 100
    assert list(sample(ids[:50], 100)) == list(range(50))


def test_map_png_and_html_are_written(topics, tmp_path):
    topics.cluster(k=3, seed=0)
    result = topics.map(tmp_path / "map.png")
    assert result.color_by == "cluster" and len(result.ids) == 18
    assert [g["name"] for g in result.groups] == [f"{c.cluster}: {c.name}" for c in topics.clusters()]
    png = (tmp_path / "map.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    topics.map(tmp_path / "again.png")
    assert (tmp_path / "again.png").read_bytes() == png  # the same map, the same bytes
    by_topic = topics.map(tmp_path / "map.html", color_by="topic", max_points=10)
    assert len(by_topic.ids) == 10 and by_topic.total == 18 and {g["name"] for g in by_topic.groups} <= set(TOPICS)
    page = (tmp_path / "map.html").read_text()
    assert "<script src" not in page and "http" not in page.replace("http-equiv", "")  # nothing fetched
    with pytest.raises(EmbedkitError, match="map.svg: a map is written as .html or .png"):
        topics.map(tmp_path / "map.svg")


def map_page(url):
    return browser.Page(url)


def screen(page, id):
    """The viewport position of an item's point."""
    return page.evaluate(
        "(function () { var root = document.querySelector('[data-embedkit-map]');"
        " var box = root.embedkitMap.canvas.getBoundingClientRect();"
        f" var at = root.embedkitMap.screenPosition({json.dumps(id)});"
        " return [box.left + at[0], box.top + at[1]]; })()"
    )


def drawn(page):
    return int(page.evaluate("document.querySelector('.embedkit-map canvas').getAttribute('data-drawn')"))


def tip(page):
    return page.evaluate("(function () { var t = document.querySelector('.embedkit-map-tip');"
                         " return t.style.display === 'none' ? null : t.innerText; })()")


def test_html_map_in_a_browser(topics, tmp_path):
    topics.cluster(k=3, seed=0)
    topics.map(tmp_path / "map.html", link="https://example.com/notes/{id}?from=map")
    with map_page((tmp_path / "map.html").as_uri()) as page:
        assert drawn(page) == 18
        legend = page.evaluate("Array.from(document.querySelectorAll('.embedkit-map-legend li')).map(li => li.textContent)")
        assert legend == [f"{c.cluster}: {c.name} (6)" for c in topics.clusters()]
        # Hovering over a point shows that item: its title, id, cluster and text.
        x, y = screen(page, "sqlite-1")
        page.mouse("mouseMoved", x, y)
        shown = tip(page)
        assert shown is not None, "no tooltip after hovering over sqlite-1"
        sqlite = next(c for c in topics.clusters() if c.name.startswith("sqlite"))
        assert shown.splitlines() == ["Back sqlite 1", "sqlite-1", f"{sqlite.cluster}: {sqlite.name}",
                                      TOPICS["sqlite"][1]]
        page.mouse("mouseMoved", 2, 2)
        assert tip(page) is None
        # Hiding a cluster in the legend hides its points.
        page.evaluate("document.querySelectorAll('.embedkit-map-legend li')[0].click()")
        assert drawn(page) == 12
        page.evaluate("document.querySelectorAll('.embedkit-map-legend li')[0].click()")
        # Zooming in on a point (6 times) leaves fewer points in view, and that one under the
        # mouse (which stands on whole pixels: up to half a pixel off, times 6).
        x, y = [round(v) for v in screen(page, "bread-2")]
        for _ in range(3):
            page.mouse("mouseWheel", x, y, deltaX=0, deltaY=-400)
        assert drawn(page) < 18
        assert screen(page, "bread-2") == pytest.approx([x, y], abs=3.5)
        # Clicking a point opens its link.
        page.mouse("mousePressed", x, y)
        page.mouse("mouseReleased", x, y)
        page.wait_for("location.href.startsWith('https://example.com/') || location.href.startsWith('chrome-error')")
        assert page.evaluate("document.querySelector('.embedkit-map') === null")


def test_datasette_map_page(tmp_path):
    """/<db>/<collection>/-/map in a real Datasette and browser: points drawn, hover shows an
    item, clicking opens its row page; an unknown color key is a clear error."""
    db_path = browser.build_posts(tmp_path)
    with embedkit.Database(db_path) as db:
        db.collection("posts").cluster(k=2, seed=0)
        names = [f"{c.cluster}: {c.name}" for c in db.collection("posts").clusters()]
    with browser.serve(db_path) as url:
        with browser.Page(url + "/embeddings/posts/-/map") as page:
            assert page.evaluate("document.querySelector('h1').textContent") == "Map of posts"
            assert drawn(page) == 5
            legend = page.evaluate("Array.from(document.querySelectorAll('.embedkit-map-legend li')).map(li => li.textContent)")
            assert [entry.rsplit(" (", 1)[0] for entry in legend] == names
            x, y = screen(page, "4")
            page.mouse("mouseMoved", x, y)
            assert "A dense loaf of rye flour" in tip(page)
            page.mouse("mousePressed", x, y)
            page.mouse("mouseReleased", x, y)
            page.wait_for("location.pathname === '/embeddings/posts/4'")
        with browser.Page(url + "/embeddings/posts/-/map?color=tag") as page:
            legend = page.evaluate("Array.from(document.querySelectorAll('.embedkit-map-legend li')).map(li => li.textContent)")
            assert sorted(legend) == ["baking (2)", "datasette (1)", "sqlite (2)"]
        page = browser.parse(browser.chromium("--dump-dom", url + "/embeddings/notes/-/map"))
        assert "notes is not an embedkit collection in embeddings" in page.text()


# Heatmaps


def test_heatmap_of_items_and_texts(topics, tmp_path):
    result = topics.heatmap(["bread-0", "sqlite-0"], ["riding a bicycle to work"])
    assert result.labels == ["bread-0", "sqlite-0", "riding a bicycle to work"]
    assert result.ids == ["bread-0", "sqlite-0", None]
    vectors = np.stack([topics.vector("bread-0"), topics.vector("sqlite-0"),
                        topics.model.embed(["riding a bicycle to work"])[0]]).astype(np.float64)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    assert np.allclose(result.matrix, vectors @ vectors.T, atol=1e-4)
    assert np.allclose(result.matrix, result.matrix.T) and np.all(np.diag(result.matrix) == 1)
    for name in ("heatmap.png", "heatmap.html", "heatmap.json"):
        topics.heatmap(["bread-0", "sqlite-0"], ["riding a bicycle to work"], tmp_path / name)
    assert (tmp_path / "heatmap.png").read_bytes().startswith(b"\x89PNG")
    assert json.loads((tmp_path / "heatmap.json").read_text()) == result.to_dict()
    page = browser.parse((tmp_path / "heatmap.html").read_text())
    cells = [td.text() for td in page.find_all("td")]
    assert cells == [f"{v:.2f}" for v in result.matrix.ravel()]
    with pytest.raises(EmbedkitError, match="at most 50 items and texts, not 51"):
        topics.heatmap(["bread-0"] * 51)
    with pytest.raises(EmbedkitError, match="no item with id 'nope'"):
        topics.heatmap(["bread-0", "nope"])


# The command line


def test_cli(topics, db_path, invoke, tmp_path):
    result = invoke("cluster", "notes", "-k", "3", "-d", db_path)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["size"] for line in lines] == [6, 6, 6] and "18 items in 3 clusters, computed" in result.stderr
    plain = invoke("cluster", "notes", "-k", "3", "--plain", "-d", db_path)
    assert plain.stdout.splitlines()[0].split() == ["cluster", "size", "name"] and "unchanged" in plain.stderr
    assert invoke("cluster", "notes", "--assign", "-d", db_path).exit_code == 0
    bad = invoke("cluster", "notes", "-k", "many", "-d", db_path)
    assert bad.exit_code == 2 and "'many' is not a whole number or 'auto'" in bad.output

    heat = invoke("heatmap", "notes", "bread-0", "-c", "a bicycle", "-d", db_path)
    assert json.loads(heat.stdout)["labels"] == ["bread-0", "a bicycle"]

    out = tmp_path / "m.html"
    assert invoke("map", "notes", "-o", out, "-d", db_path).stderr.strip() == f"18 items in {out}"

    examples = write_examples(tmp_path / "labels.csv", [("bread-0", "baking"), ("sqlite-0", "databases"),
                                                        ("bicycle-0", "cycling")], ["id", "label"])
    labelled = invoke("classify", "notes", "--examples", examples, "--min-score", "0.99", "-d", db_path)
    counts = [json.loads(line) for line in labelled.stdout.splitlines()]
    assert counts == [{"label": "baking", "items": 1}, {"label": "cycling", "items": 1},
                      {"label": "databases", "items": 1}, {"label": None, "items": 15}]
    missing = invoke("classify", "notes", "--examples", tmp_path / "nope.csv", "-d", db_path)
    assert missing.exit_code == 1 and missing.output.strip().endswith("nope.csv: No such file or directory")
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("select count(*) from notes_labels where label is null").fetchone() == (15,)


# The pictures of docs/explore.md


def test_docs_pictures_are_those_the_page_draws(page_env):
    """docs/images/explore-*.png are what docs/explore.md's commands draw (regenerate them with
    python docs/explore_pictures.py)."""
    from matplotlib import image

    pictures = importlib.util.spec_from_file_location("explore_pictures", test_docs.DOCS / "explore_pictures.py")
    module = importlib.util.module_from_spec(pictures)
    pictures.loader.exec_module(module)
    test_docs.run_page("explore.md", page_env)
    for made, kept in module.PICTURES.items():
        drawn, shown = image.imread(page_env / made), image.imread(test_docs.DOCS / "images" / kept)
        assert drawn.shape == shown.shape, f"{kept} is not what docs/explore.md draws: run python docs/explore_pictures.py"
        assert np.abs(drawn - shown).mean() < 0.01, f"{kept} differs from what docs/explore.md draws"
