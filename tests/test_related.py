"""Related items (embedkit related, export-related, widget), checked against a numpy brute force.

The reference below is written independently of embedkit.related: the stored vectors, a full
float64 score matrix, the filter, --same and --min-score applied row by row, scores rounded to
6 decimals and ranked by (-score, id). Most tests use the real model on 48 short texts in four
sections; the exact ones use the deterministic test-letters model.
"""

import json
import os
import pathlib
import re
from importlib import resources

import numpy as np
import pytest

import embedkit
from embedkit import EmbedkitError, Item, related, storage
from embedkit.related import file_name

TOPICS = {
    "baking": [
        "How to feed a sourdough starter every day",
        "Kneading bread dough until it passes the windowpane test",
        "Baking a rye loaf in a Dutch oven",
        "Why my croissants came out flat and greasy",
        "Proofing yeast in warm water with a pinch of sugar",
        "A simple recipe for banana bread with walnuts",
        "Scoring baguettes before they go into a hot oven",
        "The best flour for chewy pizza crust",
        "Making cinnamon rolls the night before",
        "Hydration percentages in bread recipes explained",
        "Pie crust with cold butter stays flaky",
        "Steam in the oven gives bread a crackly crust",
    ],
    "astronomy": [
        "Jupiter's moons through a small backyard telescope",
        "How astronomers measure the distance to faraway galaxies",
        "The life cycle of a massive star ends in a supernova",
        "Watching the Perseid meteor shower in August",
        "Black holes bend light around them",
        "Exoplanets found by the transit method",
        "Saturn's rings are made of ice and rock",
        "A total solar eclipse crosses the continent",
        "Dark matter holds spiral galaxies together",
        "Mapping the Milky Way with the Gaia satellite",
        "Neutron stars spin hundreds of times per second",
        "Choosing an eyepiece to observe the Moon's craters",
    ],
    "programming": [
        "Writing unit tests for a Python function with pytest",
        "Git rebase versus merge for a feature branch",
        "SQLite indexes make queries on large tables fast",
        "Debugging a memory leak in a long running server",
        "Type hints catch bugs before the code runs",
        "Refactoring a thousand line function into small ones",
        "Async IO in Python with asyncio and await",
        "Profiling slow code to find the hot loop",
        "Designing a REST API with clear error messages",
        "Continuous integration runs the test suite on every push",
        "Rust's borrow checker prevents data races",
        "Parsing JSON safely from untrusted input",
    ],
    "gardening": [
        "Planting tomato seedlings after the last frost",
        "Composting kitchen scraps for rich garden soil",
        "Pruning roses in late winter",
        "Watering a vegetable garden in a heat wave",
        "Growing basil and parsley on a sunny windowsill",
        "Keeping slugs away from lettuce without poison",
        "Mulch keeps weeds down and the soil moist",
        "When to harvest potatoes from the garden",
        "Raised beds warm up earlier in spring",
        "Attracting bees with native flowering plants",
        "Dividing hostas and perennials in autumn",
        "Saving seeds from heirloom beans",
    ],
}
ADDED = [
    Item("added-0", "Focaccia topped with rosemary and sea salt",
         {"section": "baking", "title": "Focaccia", "url": "/baking/focaccia/", "kind": "post"}),
    Item("added-1", "Hawking radiation makes black holes evaporate slowly",
         {"section": "astronomy", "title": "Hawking radiation", "url": "/astronomy/hawking/", "kind": "post"}),
    Item("added-2", "Growing strawberries in hanging baskets",
         {"section": "gardening", "title": "Strawberries", "url": "/gardening/strawberries/", "kind": "page"}),
]
COUNT = sum(len(texts) for texts in TOPICS.values())  # 48

PLAIN = dict(n=5)
SAME = dict(n=4, min_score=0.2, same="section")
FILTERED = dict(n=4, metadata={"kind": "post"})


def base_items():
    for section, texts in TOPICS.items():
        for i, text in enumerate(texts):
            metadata = {"section": section, "title": text.split(" ")[0] + f" {section} {i}",
                        "url": f"/{section}/{i}/", "kind": "page" if i % 4 == 0 else "post"}
            yield Item(f"{section}-{i:02d}", text, metadata)


def copy_database(source, target):
    """A consistent copy of a database file (its WAL included), with SQLite's backup API."""
    src, dst = storage.sqlite3.connect(str(source)), storage.sqlite3.connect(str(target))
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


@pytest.fixture(scope="module")
def base_path(tmp_path_factory, minilm):
    path = tmp_path_factory.mktemp("related") / "base.db"
    with embedkit.Database(str(path)) as db:
        db.create_collection("posts").embed_multi(list(base_items()), store=True)
    return path


@pytest.fixture
def posts_db(base_path, tmp_path):
    path = tmp_path / "posts.db"
    copy_database(base_path, path)
    db = embedkit.Database(str(path))
    yield db
    db.close()


@pytest.fixture
def posts(posts_db):
    return posts_db.collection("posts")


# The reference -----------------------------------------------------------------------------


def reference(collection, n=10, min_score=None, metadata=None, same=None):
    """id -> [(other id, score)] (items with an empty list left out), and every related id."""
    entries = [e for e in collection if all((e.metadata or {}).get(k) == v for k, v in (metadata or {}).items())]
    ids = [e.id for e in entries]
    if not ids:
        return {}, set()
    matrix = np.stack([collection.vector(id) for id in ids]).astype(np.float64)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    scores = matrix @ matrix.T  # float64: as near the true cosines as it gets
    groups = [json.dumps((e.metadata or {}).get(same)) if same else None for e in entries]
    lists = {}
    for i, id in enumerate(ids):
        row = [
            (round(float(scores[i, j]), 6), ids[j])
            for j in range(len(ids))
            if j != i and groups[j] == groups[i] and (min_score is None or scores[i, j] >= min_score)
        ]
        row.sort(key=lambda pair: (-pair[0], pair[1]))
        if row:
            lists[id] = [(other, score) for score, other in row[:n]]
    return lists, set(ids)


def stored_lists(collection):
    lists = {}
    rows = collection.db.conn.execute(
        f"select id, other_id, rank, score from {storage.quote(collection.name + '_related')} order by id, rank")
    for id, other, rank, score in rows:
        lists.setdefault(id, []).append((other, score))
        assert rank == len(lists[id]), f"ranks of {id!r} are not 1, 2, 3..."
    return lists


def state_ids(collection):
    return {row[0] for row in collection.db.conn.execute(
        f"select id from {storage.RELATED_ITEMS} where collection = ?", [collection.name])}


# embedkit scales the vectors to unit length in float32: a score a little off the exact one
# may round to the neighbouring 6th decimal.
TOLERANCE = 1e-6 + 1e-9


def assert_same_lists(got, expected):
    assert sorted(got) == sorted(expected), "different items have related lists"
    for id in expected:
        assert [o for o, _ in got[id]] == [o for o, _ in expected[id]], f"related ids of {id!r}"
        assert all(abs(a - b) <= TOLERANCE for (_, a), (_, b) in zip(got[id], expected[id])), f"scores of {id!r}"


def check_reference(collection, settings):
    expected, ids = reference(collection, **settings)
    assert_same_lists(stored_lists(collection), expected)
    assert state_ids(collection) == ids
    return expected


def from_scratch(collection, settings, tmp_path):
    """The lists a full computation gives in a fresh copy of the database."""
    path = tmp_path / f"scratch-{len(list(tmp_path.iterdir()))}.db"
    copy_database(_path_of(collection), path)
    with embedkit.Database(str(path)) as db:
        copy = db.collection(collection.name)
        db.conn.execute(f"drop table if exists {storage.quote(collection.name + '_related')}")
        db.conn.execute(f"delete from {storage.RELATED} where collection = ?", [collection.name])
        db.conn.execute(f"delete from {storage.RELATED_ITEMS} where collection = ?", [collection.name])
        stats = copy.compute_related(**settings)
        assert stats.computed == stats.items and stats.patched == stats.unchanged == 0
        return stored_lists(copy)


def _path_of(collection):
    return collection.db.conn.execute("pragma database_list").fetchone()[2]


def rerun(collection, settings, tmp_path, brute_force=True):
    """compute_related, then: the table equals the brute force and a from-scratch computation,
    and an immediate re-run does nothing."""
    stats = collection.compute_related(**settings)
    if brute_force:
        check_reference(collection, settings)
    assert stored_lists(collection) == from_scratch(collection, settings, tmp_path)
    again = collection.compute_related(**settings)
    assert (again.computed, again.patched, again.unchanged) == (0, 0, stats.items)
    return stats


def holders(collection, *ids):
    """How many stored lists (other than the items' own) hold any of ids."""
    marks = ",".join("?" * len(ids))
    return collection.db.conn.execute(
        f"select count(distinct id) from {storage.quote(collection.name + '_related')} "
        f"where other_id in ({marks}) and id not in ({marks})", [*ids, *ids]).fetchone()[0]


def set_metadata(collection, id, **changes):
    entry = collection.get(id)
    collection.embed_multi([Item(id, entry.content, {**entry.metadata, **changes})], store=True)


def add_items(posts_db, items):
    stats = posts_db.collection("posts").embed_multi(items, store=True)
    assert stats.embedded + stats.reused == len(items)


# Full computation ----------------------------------------------------------------------------


@pytest.mark.parametrize("settings", [
    PLAIN,
    dict(n=5, min_score=0.35),
    dict(n=3, metadata={"kind": "post"}),
    dict(n=4, same="section"),
    dict(n=100),
    dict(n=6, min_score=0.2, metadata={"kind": "post"}, same="section"),
], ids=["plain", "min-score", "filter", "same", "n-too-large", "all"])
def test_full_computation_equals_brute_force(posts, settings):
    stats = posts.compute_related(**settings)
    expected = check_reference(posts, settings)
    items = len(state_ids(posts))
    assert (stats.items, stats.computed, stats.patched, stats.unchanged, stats.removed) == (items, items, 0, 0, 0)
    lists = stored_lists(posts)
    if settings.get("metadata"):
        assert items == sum(1 for e in posts if e.metadata["kind"] == "post") < COUNT
    else:
        assert items == COUNT
    if settings["n"] == 100:
        assert all(len(lists[id]) == COUNT - 1 for id in state_ids(posts))
    if settings.get("min_score"):
        assert all(score >= settings["min_score"] for ranked in lists.values() for _, score in ranked)
        assert any(len(ranked) < settings["n"] for ranked in expected.values()), "min-score should cut some lists"
    if settings.get("same"):
        assert all(id.split("-")[0] == other.split("-")[0] for id, ranked in lists.items() for other, _ in ranked)
    for id, ranked in lists.items():
        assert id not in [other for other, _ in ranked]
        assert [score for _, score in ranked] == sorted((score for _, score in ranked), reverse=True)
        assert all(score == round(score, 6) for _, score in ranked)


def test_real_embeddings_relate_texts_of_one_topic(posts):
    posts.compute_related(n=3)
    lists = stored_lists(posts)
    same_topic = sum(id.split("-")[0] == ranked[0][0].split("-")[0] for id, ranked in lists.items())
    assert same_topic >= 0.9 * COUNT


def test_related_document_api(posts):
    with pytest.raises(EmbedkitError, match="has no related items yet"):
        posts.related("baking-00")
    posts.compute_related(n=2)
    document = posts.related("baking-00")
    assert document["id"] == "baking-00" and len(document["related"]) == 2
    first = document["related"][0]
    entry = posts.get(first["id"])
    assert first == {"id": first["id"], "score": stored_lists(posts)["baking-00"][0][1], **entry.metadata}
    assert list(first) == ["id", "score", *sorted(entry.metadata)]
    assert posts.related("baking-00", fields=["url", "title", "missing"])["related"][0] == {
        "id": first["id"], "score": first["score"], "url": entry.metadata["url"], "title": entry.metadata["title"]}
    with pytest.raises(EmbedkitError, match="no item with id 'nope'"):
        posts.related("nope")


def test_blocks_of_rows_give_the_same_lists(posts_db, base_path, tmp_path, monkeypatch):
    """A tiny memory bound: every row is a block of its own, in _top and in _merge."""
    posts = posts_db.collection("posts")
    posts.compute_related(**SAME)
    expected = stored_lists(posts)
    add_items(posts_db, ADDED)
    posts.compute_related(**SAME)
    expected_after = stored_lists(posts)

    path = tmp_path / "blocks.db"
    copy_database(base_path, path)
    monkeypatch.setattr(related, "BLOCK_MB", 0)
    calls = []
    with embedkit.Database(str(path)) as db:
        small = db.collection("posts")
        stats = small.compute_related(**SAME, progress=lambda done, total: calls.append((done, total)))
        assert stats.computed == COUNT
        assert calls == [(1, COUNT)] * COUNT  # one row per block
        assert stored_lists(small) == expected
        add_items(db, ADDED)
        stats = small.compute_related(**SAME)
        assert stats.computed == len(ADDED) and stats.patched > 0
        assert stored_lists(small) == expected_after


def test_n_must_be_positive(posts):
    with pytest.raises(EmbedkitError, match="at least 1"):
        posts.compute_related(n=0)
    assert not storage.table_exists(posts.db.conn, "posts_related")


# Incremental re-runs -------------------------------------------------------------------------


@pytest.mark.parametrize("settings", [PLAIN, SAME, FILTERED], ids=["plain", "same", "filter"])
def test_adding_items_patches_lists(posts_db, posts, settings, tmp_path):
    rerun(posts, settings, tmp_path)
    before = len(state_ids(posts))
    add_items(posts_db, ADDED)
    stats = rerun(posts, settings, tmp_path)
    new = len(state_ids(posts)) - before
    assert new == (2 if settings is FILTERED else 3)
    # New items are in no old list: only their own lists are computed, others gain them.
    assert (stats.items, stats.computed, stats.removed) == (before + new, new, 0)
    assert stats.patched > 0 and stats.patched + stats.unchanged == before


@pytest.mark.parametrize("settings", [PLAIN, SAME, FILTERED], ids=["plain", "same", "filter"])
def test_changing_content_recomputes_lists_holding_the_item(posts, settings, tmp_path):
    rerun(posts, settings, tmp_path)
    id = "astronomy-01"  # a post, in every setting
    holding = holders(posts, id)
    posts.embed_multi([Item(id, "Grinding your own flour for whole wheat bread", posts.get(id).metadata)], store=True)
    stats = rerun(posts, settings, tmp_path)
    assert stats.computed == 1 + holding < stats.items
    assert stats.patched + stats.unchanged == stats.items - stats.computed
    if settings is PLAIN:
        assert stats.patched > 0  # now a baking text: baking lists gain it
        assert any(id in [o for o, _ in ranked] for b, ranked in stored_lists(posts).items() if b.startswith("baking"))


def test_changing_the_same_key_moves_an_item_between_groups(posts, tmp_path):
    rerun(posts, SAME, tmp_path)
    id = "gardening-07"  # potatoes, moved to baking
    holding = holders(posts, id)
    set_metadata(posts, id, section="baking")
    stats = rerun(posts, SAME, tmp_path)
    assert stats.computed == 1 + holding < COUNT
    assert stats.patched > 0  # some baking list takes it
    lists = stored_lists(posts)
    assert all(other.startswith("baking") for other, _ in lists[id])
    assert not any(id in [o for o, _ in lists[g]] for g in lists if g.startswith("gardening"))


def test_metadata_the_settings_do_not_use_changes_nothing(posts, tmp_path):
    rerun(posts, SAME, tmp_path)
    table = stored_lists(posts)
    set_metadata(posts, "baking-05", title="A new title")
    stats = rerun(posts, SAME, tmp_path)
    assert (stats.computed, stats.patched, stats.unchanged) == (0, 0, COUNT)
    assert stored_lists(posts) == table
    holder = next(id for id, ranked in table.items() if "baking-05" in [o for o, _ in ranked])
    assert next(e for e in posts.related(holder)["related"] if e["id"] == "baking-05")["title"] == "A new title"


@pytest.mark.parametrize("settings", [PLAIN, SAME, FILTERED], ids=["plain", "same", "filter"])
def test_deleting_items_recomputes_lists_holding_them(posts, settings, tmp_path):
    rerun(posts, settings, tmp_path)
    gone = ["programming-02", "gardening-07"]  # posts, in every setting
    holding = holders(posts, *gone)
    items = len(state_ids(posts))
    assert posts.delete(gone) == 2
    stats = rerun(posts, settings, tmp_path)
    assert (stats.items, stats.removed, stats.computed) == (items - 2, 2, holding)
    assert 0 < stats.computed < stats.items
    assert not set(gone) & (set(stored_lists(posts)) | {o for r in stored_lists(posts).values() for o, _ in r})


def test_an_item_leaving_and_joining_the_filter(posts, tmp_path):
    rerun(posts, FILTERED, tmp_path)
    items = len(state_ids(posts))
    leaving, joining = "programming-05", "programming-04"  # a post, and a page
    assert "programming-04" not in state_ids(posts)
    holding = holders(posts, leaving)
    set_metadata(posts, leaving, kind="page")
    set_metadata(posts, joining, kind="post")
    stats = rerun(posts, FILTERED, tmp_path)
    assert (stats.items, stats.removed) == (items, 1)
    assert stats.computed == 1 + holding  # the joining item's own list, and those holding the leaving one
    assert leaving not in stored_lists(posts) and leaving not in state_ids(posts)
    assert joining in stored_lists(posts)


def test_a_quarter_changed_is_one_full_pass(posts, tmp_path):
    rerun(posts, SAME, tmp_path)
    moved = [f"baking-{i:02d}" for i in range(12)] + ["astronomy-00"]  # 13 of 48: over 25%
    for id in moved:
        set_metadata(posts, id, section="gardening")
    stats = rerun(posts, SAME, tmp_path)
    assert (stats.computed, stats.patched, stats.unchanged) == (COUNT, 0, 0)


def test_a_quarter_exactly_is_still_patched(posts, tmp_path):
    rerun(posts, SAME, tmp_path)
    for i in range(12):  # 12 of 48
        set_metadata(posts, f"baking-{i:02d}", section="gardening")
    stats = rerun(posts, SAME, tmp_path)
    assert stats.computed < COUNT and stats.patched > 0


def test_several_kinds_of_change_at_once(posts_db, posts, tmp_path):
    rerun(posts, SAME, tmp_path)
    add_items(posts_db, ADDED[:2])
    posts.delete(["astronomy-03"])
    posts.embed_multi([Item("gardening-02", "Pruning apple trees in late winter", posts.get("gardening-02").metadata)],
                      store=True)
    set_metadata(posts, "programming-11", section="astronomy")
    stats = rerun(posts, SAME, tmp_path)
    assert stats.removed == 1 and stats.items == COUNT + 1
    assert stats.computed < stats.items and stats.patched + stats.unchanged > 0


@pytest.mark.parametrize("change", [
    dict(n=6), dict(min_score=0.3), dict(metadata={"kind": "post"}), dict(same="section"),
], ids=["n", "min-score", "filter", "same"])
def test_changed_settings_recompute_everything(posts, change, tmp_path):
    rerun(posts, PLAIN, tmp_path)
    settings = {**PLAIN, **change}
    stats = posts.compute_related(**settings)
    assert stats.computed == stats.items == len(state_ids(posts)) and stats.patched == stats.unchanged == 0
    check_reference(posts, settings)
    stats = posts.compute_related(**PLAIN)  # and back
    assert stats.computed == COUNT
    check_reference(posts, PLAIN)


def test_a_dropped_table_is_computed_again(posts, tmp_path):
    posts.compute_related(**PLAIN)
    posts.db.conn.execute("drop table posts_related")
    stats = posts.compute_related(**PLAIN)
    assert stats.computed == COUNT
    check_reference(posts, PLAIN)


# Exact cases with the letters model ---------------------------------------------------------


@pytest.fixture
def letters_db(letters, db_path):
    db = embedkit.Database(db_path)
    yield db
    db.close()


def test_exact_scores(letters_db):
    docs = letters_db.create_collection("docs", "test-letters")
    docs.embed_multi([Item("a", "a"), Item("aa", "aa"), Item("e", "e")], store=True)
    docs.compute_related(n=5)
    assert stored_lists(docs) == {
        "a": [("aa", 0.948683), ("e", 0.5)],  # 3/sqrt(10); 1/2
        "aa": [("a", 0.948683), ("e", 0.316228)],  # 1/sqrt(10)
        "e": [("a", 0.5), ("aa", 0.316228)],
    }
    docs.compute_related(n=1, min_score=0.6)
    assert stored_lists(docs) == {"a": [("aa", 0.948683)], "aa": [("a", 0.948683)]}
    assert docs.related("e") == {"id": "e", "related": []}


def test_empty_and_single_item_collections(letters_db, tmp_path):
    empty = letters_db.create_collection("empty", "test-letters")
    assert empty.compute_related().summary() == "0 items: 0 lists computed, 0 updated, 0 unchanged"
    assert empty.export_related(tmp_path / "e").files == 0
    one = letters_db.create_collection("one", "test-letters")
    one.embed_multi([Item("only", "a")], store=True)
    stats = one.compute_related()
    assert (stats.items, stats.computed) == (1, 1)
    one.export_related(tmp_path / "one")
    assert json.loads((tmp_path / "one" / "only.json").read_text()) == {"id": "only", "related": []}


def test_ties_are_settled_by_id_beyond_the_slack(letters_db, tmp_path):
    """Equal content has equal vectors (and reuses them): many exactly equal scores."""
    docs = letters_db.create_collection("docs", "test-letters")
    twins = [Item(f"t{i:02d}", "same words") for i in range(60)]
    others = [Item(f"x{i:03d}", "o" * i + " u" * (i % 5) + " a" * (i % 3)) for i in range(1, 200)]
    docs.embed_multi(twins + others, store=True)
    settings = dict(n=3)
    docs.compute_related(**settings)
    lists = stored_lists(docs)
    # (the others' integer vectors have exact ties too, which float rounding may settle either way)
    expected, _ = reference(docs, **settings)
    twins_only = lambda lists: {id: ranked for id, ranked in lists.items() if id[0] == "t"}  # noqa: E731
    assert_same_lists(twins_only(lists), twins_only(expected))
    assert lists["t00"] == [("t01", 1.0), ("t02", 1.0), ("t03", 1.0)]
    assert [o for o, _ in lists["t59"]] == ["t00", "t01", "t02"]
    # an equal item with a lower id joins every twin's list: patched, as a full pass has it
    docs.embed_multi([Item("a-twin", "same words")], store=True)
    stats = rerun(docs, settings, tmp_path, brute_force=False)
    assert stats.computed == 1 and stats.patched >= 60  # every twin's list, and others holding a twin
    assert [o for o, _ in stored_lists(docs)["t00"]] == ["a-twin", "t01", "t02"]
    # one twin deleted: lists holding it are computed again, and find the next twin by id
    docs.delete(["t01"])
    stats = rerun(docs, settings, tmp_path, brute_force=False)
    assert stats.computed >= 60  # every other twin held t01
    assert [o for o, _ in stored_lists(docs)["t05"]] == ["a-twin", "t00", "t02"]


def test_items_without_the_same_key_are_one_group(letters_db):
    docs = letters_db.create_collection("docs", "test-letters")
    docs.embed_multi([Item("a", "a", {"s": 1}), Item("b", "a e", {"s": "1"}), Item("c", "a i"),
                      Item("d", "a o", {"s": None}), Item("e", "a u", {"s": 1})], store=True)
    docs.compute_related(n=5, same="s")
    assert {id: sorted(o for o, _ in r) for id, r in stored_lists(docs).items()} == {
        "a": ["e"], "e": ["a"], "c": ["d"], "d": ["c"]}  # "1" is not 1; missing is null


# Export ---------------------------------------------------------------------------------------


def listing(directory):
    return sorted(str(p.relative_to(directory)) for p in pathlib.Path(directory).rglob("*"))


def compact(data):
    return (json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def mtimes(directory):
    return {p.name: p.stat().st_mtime_ns for p in pathlib.Path(directory).iterdir()}


def age(directory):
    """Give every file an old mtime, so that any rewrite shows."""
    for p in pathlib.Path(directory).iterdir():
        os.utime(p, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))


def test_export_writes_a_file_per_item(posts, tmp_path):
    posts.compute_related(**SAME)
    out = tmp_path / "site" / "related"
    stats = posts.export_related(out)
    assert (stats.files, stats.written, stats.removed) == (COUNT, COUNT, 0)
    index = json.loads((out / "index.json").read_text())
    assert index == {"collection": "posts", "files": {e.id: file_name(e.id) + ".json" for e in posts}}
    assert listing(out) == sorted([*index["files"].values(), "index.json"])
    for id, name in index["files"].items():
        data = (out / name).read_bytes()
        assert data == compact(posts.related(id))  # compact JSON of exactly Collection.related
    assert (out / "index.json").read_bytes() == compact(index)

    before = {p.name: p.read_bytes() for p in out.iterdir()}
    age(out)
    times = mtimes(out)
    stats = posts.export_related(out)
    assert (stats.files, stats.written, stats.removed) == (COUNT, 0, 0)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert mtimes(out) == times  # nothing rewritten, not even the index


def test_export_rewrites_only_changed_files(posts, tmp_path):
    posts.compute_related(**PLAIN)
    out = tmp_path / "out"
    posts.export_related(out)
    age(out)
    times = mtimes(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    set_metadata(posts, "baking-03", title="Croissants")  # shown in the lists holding it
    posts.compute_related(**PLAIN)
    stats = posts.export_related(out)
    holding = holders(posts, "baking-03")
    assert stats.written == holding > 0
    changed = {p.name for p in out.iterdir() if p.read_bytes() != before[p.name]}
    assert len(changed) == holding
    assert {name for name, t in mtimes(out).items() if t != times[name]} == changed


def test_export_removes_files_of_deleted_items(posts, tmp_path):
    posts.compute_related(**PLAIN)
    out = tmp_path / "out"
    posts.export_related(out)
    posts.delete(["baking-04"])
    posts.compute_related(**PLAIN)
    stats = posts.export_related(out)
    assert (stats.files, stats.removed) == (COUNT - 1, 1)
    assert not (out / "baking-04.json").exists()
    index = json.loads((out / "index.json").read_text())
    assert "baking-04" not in index["files"] and len(index["files"]) == COUNT - 1
    assert all(e["id"] != "baking-04" for p in out.glob("*-*.json") for e in json.loads(p.read_text())["related"])


def test_export_never_removes_files_it_did_not_list(posts, tmp_path):
    posts.compute_related(**FILTERED)
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.json"
    victim.write_text("{}")
    mine = {"notes.txt": "hello", "baking-00.json": "my own", "extra.json": "{}", "index.json.bak": "x"}
    for name, text in mine.items():
        (out / name).write_text(text)
    (out / "sub").mkdir()
    (out / "sub" / "a.json").write_text("{}")
    posts.export_related(out)  # baking-00 is a page: not exported, and its file is not ours
    # a hand-edited index naming files out of the directory, or under other names
    index = json.loads((out / "index.json").read_text())
    index["files"].update({"x": "../victim.json", "y": "sub/a.json", "z": "notes.txt", "/abs": "/etc/passwd"})
    (out / "index.json").write_text(json.dumps(index))
    posts.export_related(out)
    assert victim.read_text() == "{}"
    for name, text in mine.items():
        assert (out / name).read_text() == text
    assert (out / "sub" / "a.json").exists()
    # a file an earlier export listed under its proper name is removed when its item goes
    set_metadata(posts, "baking-01", kind="page")
    posts.compute_related(**FILTERED)
    assert posts.export_related(out).removed == 1
    assert not (out / "baking-01.json").exists()


def test_export_combined(posts, tmp_path):
    posts.compute_related(**SAME)
    out = tmp_path / "out"
    stats = posts.export_related(out, combined=True)
    assert (stats.files, stats.written) == (1, 1)
    assert listing(out) == ["related.json"]
    data = (out / "related.json").read_bytes()
    expected = {"collection": "posts", "items": {e.id: posts.related(e.id)["related"] for e in posts}}
    assert data == compact(expected)
    age(out)
    times = mtimes(out)
    assert posts.export_related(out, combined=True).written == 0
    assert mtimes(out) == times
    fields = posts.export_related(out, fields=["url"], combined=True)
    assert fields.written == 1
    items = json.loads((out / "related.json").read_text())["items"]
    assert all(list(e) == ["id", "score", "url"] for ranked in items.values() for e in ranked)


def test_export_fields(posts, tmp_path):
    posts.compute_related(**PLAIN)
    posts.export_related(tmp_path / "a", fields=["url", "title"])
    posts.export_related(tmp_path / "b", fields=["nothing"])
    for id in ("baking-00", "gardening-11"):
        a = json.loads((tmp_path / "a" / f"{id}.json").read_text())
        assert a == posts.related(id, fields=["url", "title"])
        assert all(list(e) == ["id", "score", "url", "title"] for e in a["related"])
        b = json.loads((tmp_path / "b" / f"{id}.json").read_text())
        assert all(list(e) == ["id", "score"] for e in b["related"])
        assert [e["id"] for e in a["related"]] == [e["id"] for e in b["related"]] == [
            o for o, _ in stored_lists(posts)[id]]


TRICKY = ["Post 1", "../x", "..", ".", "日本語", "a" * 300, "b" * 299 + "é", "A", "a", "index", "con", "CON",
          "nul", ".hidden", "x/y", "x\\y", "related", "index.json", "~41", "tab\there", "🍞 bread", "e\u0301"]


def test_export_tricky_ids(letters_db, tmp_path):
    docs = letters_db.create_collection("docs", "test-letters")
    docs.embed_multi([Item(id, f"text {i} " + "a" * i) for i, id in enumerate(TRICKY)], store=True)
    docs.compute_related(n=3)
    outside = lambda: {p for p in listing(tmp_path) if not p.startswith(("embeddings.db", "out"))}  # noqa: E731
    before = outside()
    out = tmp_path / "out"
    stats = docs.export_related(out)
    assert stats.files == stats.written == len(TRICKY)
    assert outside() == before  # nothing written next to the directory ("../x")
    assert all("/" not in name and "\\" not in name for name in listing(out))
    index = json.loads((out / "index.json").read_text())["files"]
    assert sorted(index) == sorted(TRICKY)
    names = listing(out)
    assert len(names) == len(TRICKY) + 1  # every item a file of its own, and the index
    assert len({name.lower() for name in names}) == len(names)  # also on a case-insensitive disk
    for id in TRICKY:
        path = out / (file_name(id) + ".json")
        assert index[id] == path.name
        assert path.resolve().parent == out.resolve()
        assert json.loads(path.read_text(encoding="utf-8")) == docs.related(id)
    assert docs.export_related(out).written == 0


# file_name --------------------------------------------------------------------------------------

NAME = re.compile(r"(?:[a-z0-9_-]|~[0-9A-F]{2})+|~~[0-9a-f]{40}")
WINDOWS = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}


def decode(name):
    """The id of a name that is not a hash: file_name undone."""
    data, i = bytearray(), 0
    while i < len(name):
        if name[i] == "~":
            data.append(int(name[i + 1 : i + 3], 16))
            i += 3
        else:
            data += name[i].encode()
            i += 1
    return data.decode("utf-8")


def sample_ids():
    rng = np.random.default_rng(7)
    alphabet = list("aAbBzZ09_-~.%/\\ :*?\"<>|é日\U0001f35e\x00\t") + ["\u0301", "\U0010ffff"]
    ids = set(TRICKY) | WINDOWS | {w.upper() for w in WINDOWS} | {w + ".txt" for w in WINDOWS}
    ids |= {"", "~", "~~", "~7E", "~7e", "a" * 200, "a" * 201, "é" * 33, "é" * 34, "aux1", "com10", "Index"}
    ids |= {"".join(rng.choice(alphabet, size=int(rng.integers(1, 12)))) for _ in range(3000)}
    ids |= {"".join(rng.choice(alphabet, size=int(rng.integers(60, 90)))) for _ in range(200)}
    return sorted(ids)


def test_file_names_are_safe_and_distinct():
    ids = sample_ids()
    names = {id: file_name(id) for id in ids}
    assert len(set(names.values())) == len(ids)
    assert len({name.lower() for name in names.values()}) == len(ids)  # "A" and "a" too
    for id, name in names.items():
        if id == "":
            assert name == ""
            continue
        assert NAME.fullmatch(name), (id, name)
        assert len(name) <= 200
        assert name.lower() not in WINDOWS | {"index"}
        if not name.startswith("~~"):
            assert decode(name) == id
    assert file_name("a" * 200) == "a" * 200
    assert re.fullmatch(r"~~[0-9a-f]{40}", file_name("a" * 201))
    assert file_name("é" * 33) == "~C3~A9" * 33 and file_name("é" * 34).startswith("~~")
    assert file_name("Post 1") == "~50ost~201"
    assert file_name("../x") == "~2E~2E~2Fx"
    assert file_name("con") == "~63on" and file_name("CON") == "~43~4F~4E" and file_name("com10") == "com10"
    assert file_name("index") == "~69ndex"


# The command line -------------------------------------------------------------------------------


@pytest.fixture
def cli_db(letters, tmp_path):
    """embeddings.db in the runner's directory: a test-letters collection `docs`."""
    path = tmp_path / "embeddings.db"
    with embedkit.Database(str(path)) as db:
        db.create_collection("docs", "test-letters").embed_multi(
            [Item(f"d{i:02d}", f"doc {i}" + " a" * (i % 5) + " e" * (i % 3) + " o" * (i % 7),
                  {"section": "s" + str(i % 3), "kind": "post" if i % 4 else "page", "title": f"Doc {i}"})
             for i in range(24)],
            store=True,
        )
    return path


def dump(path):
    """Every schema entry and row of the database, as text. (Through embedkit's own sqlite3 module: closing a
    connection of a second SQLite library in the process would drop this one's WAL locks.)"""
    conn = storage.sqlite3.connect(str(path))
    try:
        lines = []
        for name, sql in conn.execute("select name, sql from sqlite_master order by type, name").fetchall():
            lines.append(sql)
            if sql and sql.lower().startswith("create table"):
                lines += sorted(map(repr, conn.execute(f"select * from {storage.quote(name)}")))
        return "\n".join(map(str, lines))
    finally:
        conn.close()


def one_line_error(result, *fragments):
    assert result.exit_code not in (0, None)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def test_cli_related(invoke, cli_db, tmp_path):
    result = invoke("related", "docs", "-n", "3")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == "24 items: 24 lists computed, 0 updated, 0 unchanged\n"
    assert result.stdout == ""
    result = invoke("related", "docs", "-n", "3")
    assert result.stderr == "24 items: 0 lists computed, 0 updated, 24 unchanged\n"
    with embedkit.Database(str(cli_db)) as db:
        docs = db.collection("docs")
        check_reference(docs, dict(n=3))
        docs.delete(["d05"])
    result = invoke("related", "docs", "-n", "3")
    assert result.exit_code == 0
    assert re.fullmatch(r"23 items: \d+ lists computed, \d+ updated, \d+ unchanged, 1 removed\n", result.stderr)

    args = ["--min-score", "0.5", "--filter", "kind=post", "--same", "section", "-d", str(cli_db)]
    result = invoke("related", "docs", "-n", "2", *args)
    assert result.exit_code == 0, result.stderr
    with embedkit.Database(str(cli_db)) as db:
        check_reference(db.collection("docs"), dict(n=2, min_score=0.5, metadata={"kind": "post"}, same="section"))


def test_cli_export_and_widget(invoke, cli_db, tmp_path):
    assert invoke("related", "docs").exit_code == 0
    result = invoke("export-related", "docs", "site/related", "-f", "title")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == "24 files, 24 written, 0 unchanged in site/related\n"
    out = tmp_path / "site" / "related"
    with embedkit.Database(str(cli_db)) as db:
        docs = db.collection("docs")
        assert (out / "d03.json").read_bytes() == compact(docs.related("d03", fields=["title"]))
        docs.delete(["d03"])
    assert invoke("related", "docs").exit_code == 0
    result = invoke("export-related", "docs", "site/related", "--field", "title")
    assert re.fullmatch(r"23 files, \d+ written, \d+ unchanged, 1 removed in site/related\n", result.stderr)
    assert not (out / "d03.json").exists()
    result = invoke("export-related", "docs", "site/all", "--combined")
    assert result.stderr == "1 files, 1 written, 0 unchanged in site/all\n"
    assert sorted(json.loads((tmp_path / "site/all/related.json").read_text())["items"]) == [
        f"d{i:02d}" for i in range(24) if i != 3]

    result = invoke("widget", "site/assets")
    assert result.exit_code == 0
    assert result.stdout == os.path.join("site/assets", "related.js") + "\n"
    packaged = (resources.files("embedkit") / "static" / "related.js").read_bytes()
    assert (tmp_path / "site/assets/related.js").read_bytes() == packaged
    assert invoke("widget", "site/assets").exit_code == 0  # again, over the old copy


def test_cli_errors(invoke, cli_db, tmp_path):
    before = dump(str(cli_db))
    one_line_error(invoke("related", "nope"), "nope")
    one_line_error(invoke("export-related", "nope", "out"), "nope")
    one_line_error(invoke("export-related", "docs", "out"), "has no related items yet", "embedkit related docs")
    assert not (tmp_path / "out").exists()
    one_line_error(invoke("related", "docs", "-n", "0"), "0")
    one_line_error(invoke("related", "docs", "--filter", "kind"), "KEY=VALUE")
    one_line_error(invoke("related", "docs", "-d", str(tmp_path / "missing.db")), "does not exist")
    assert dump(str(cli_db)) == before

    with embedkit.Database(str(cli_db)) as db:
        db.conn.execute("create table docs_related (id integer primary key, note text)")
        db.conn.execute("insert into docs_related (note) values ('mine')")
    before = dump(str(cli_db))
    one_line_error(invoke("related", "docs"), "docs_related", "rename it")
    assert dump(str(cli_db)) == before


def test_a_collection_named_like_the_table(invoke, cli_db):
    with embedkit.Database(str(cli_db)) as db:
        db.create_collection("docs_related", "test-letters")
    before = dump(str(cli_db))
    one_line_error(invoke("related", "docs"), "docs_related")
    assert dump(str(cli_db)) == before


def test_deleting_a_collection_drops_its_related_items(invoke, cli_db, tmp_path):
    with embedkit.Database(str(cli_db)) as db:
        db.collection("docs").compute_related(n=2)
        db.create_collection("other", "test-letters").embed_multi([Item("x", "a"), Item("y", "e")], store=True)
        db.collection("other").compute_related(n=2)
        db.delete_collection("docs")
        assert not storage.table_exists(db.conn, "docs_related")
        for table in (storage.RELATED, storage.RELATED_ITEMS):
            assert db.conn.execute(f"select count(*) from {table} where collection = 'docs'").fetchone()[0] == 0
            assert db.conn.execute(f"select count(*) from {table} where collection = 'other'").fetchone()[0] > 0
        # a new collection of that name starts afresh
        docs = db.create_collection("docs", "test-letters")
        docs.embed_multi([Item("a", "a"), Item("b", "a e")], store=True)
        assert docs.compute_related(n=2).computed == 2
        assert stored_lists(docs) == {"a": [("b", 0.707107)], "b": [("a", 0.707107)]}  # 2/(sqrt(2)*2)
    result = invoke("collections", "delete", "other", "--yes")
    assert result.exit_code == 0, result.stderr
    with embedkit.Database(str(cli_db)) as db:
        assert not storage.table_exists(db.conn, "other_related")
        state = f"select count(*) from {storage.RELATED_ITEMS} where collection = 'other'"
        assert db.conn.execute(state).fetchone()[0] == 0


def test_similar_by_id_answers_from_fresh_related_lists(db, letters, monkeypatch):
    coll = db.create_collection("fresh", model="test-letters")
    coll.embed_multi([embedkit.Item(f"i{n:02d}", "a e i o u " * (n % 5 + 1) + "x" * n) for n in range(30)])
    coll.compute_related(n=6)
    answered = []
    real = related.precomputed

    def spy(*args):
        answered.append(real(*args))
        return answered[-1]

    monkeypatch.setattr(related, "precomputed", spy)
    fast = coll.similar_by_id("i03", n=5, min_score=0.9)
    assert answered[-1] is not None  # from the stored list
    assert coll.similar_by_id("i03", n=7) and answered[-1] is None  # longer than computed: searched
    coll.embed("new", "a a a")  # stale now: searched
    assert coll.similar_by_id("i03", n=5) and answered[-1] is None
    monkeypatch.undo()
    coll.delete(["new"])
    coll.compute_related(n=6)
    exact = coll.similar_by_id("i03", n=5, min_score=0.9, exact=True)
    assert [(e.id, round(e.score, 5), e.content) for e in fast] == [(e.id, round(e.score, 5), e.content) for e in exact]
