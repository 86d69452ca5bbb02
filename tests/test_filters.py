"""Filters applied before ranking (metadata, SQL), --min-score and MMR, on every search path."""

import json

import numpy as np
import pytest

import embedkit
from embedkit import EmbedkitError, Item, search
from test_search import DIMS, PlainClient, assert_same, brute_force, open_db, paths, table_model  # noqa: F401


@pytest.fixture
def tagged(db_path, table_model):
    """2000 random vectors; 1% of them tagged rare, and a number n from 0 to 6 on each."""
    rng = np.random.default_rng(7)
    matrix = rng.standard_normal((2000, DIMS)).astype(np.float32)
    ids = [f"t{i:04d}" for i in range(2000)]
    metadata = [{"group": "rare" if i % 100 == 0 else "common", "n": i % 7} for i in range(2000)]
    table_model.table.update({f"text {id}": row for id, row in zip(ids, matrix)})
    with embedkit.Database(db_path) as db:
        db.create_collection("tagged", model="test-search-table").embed_multi(
            [Item(id, f"text {id}", meta) for id, meta in zip(ids, metadata)], batch_size=500
        )
    return ids, matrix, metadata


def subset(ids, matrix, metadata, keep):
    chosen = [i for i in range(len(ids)) if keep(metadata[i])]
    return [ids[i] for i in chosen], matrix[chosen]


QUERY = np.random.default_rng(3).standard_normal(DIMS).astype(np.float32)


@pytest.mark.parametrize("kind", ["sqlite-vec", "stdlib"])
def test_metadata_filter_ranks_only_matching_items_on_every_path(db_path, tagged, paths, kind, monkeypatch):
    ids, matrix, metadata = tagged
    rare_ids, rare_matrix = subset(ids, matrix, metadata, lambda m: m["group"] == "rare")
    expected = brute_force(rare_ids, rare_matrix, QUERY, 15)
    db = open_db(db_path, kind)
    collection = db.collection("tagged")
    search.forget(db.key)
    search._searched.clear()
    seen = []
    for _ in range(3):  # one-off scan, then the cached matrix, then its value index
        paths.clear()
        results = collection.similar_by_vector(QUERY, 15, metadata={"group": "rare"})
        assert_same(results, expected)
        assert len(results) == 15  # filled from the 20 rare items, never starved
        search.wait_for_cache()
        seen.append(sorted(paths))
    assert seen == ([["_sqlite_vec_top"], ["_load", "_sqlite_vec_top"], []] if kind == "sqlite-vec"
                    else [["_load"], [], []])
    monkeypatch.setattr(search, "CACHE_MB", 0)
    monkeypatch.setattr(search, "CHUNK_ROWS", 137)
    search.forget(db.key)
    paths.clear()
    assert_same(collection.similar_by_vector(QUERY, 15, metadata={"group": "rare"}), expected)
    assert paths == (["_sqlite_vec_top"] if kind == "sqlite-vec" else ["_chunked_top"])
    db.close()


def test_where_and_metadata_together_and_text_values_match_numbers(db_path, tagged, paths):
    ids, matrix, metadata = tagged
    db = embedkit.Database(db_path)
    collection = db.collection("tagged")
    keep = lambda m: m["n"] == 3 and m["group"] == "common"  # noqa: E731
    expected = brute_force(*subset(ids, matrix, metadata, keep), QUERY, 10)
    for _ in range(3):
        assert_same(collection.similar_by_vector(QUERY, 10, metadata={"n": "3"},
                                                 where="json_extract(metadata, '$.group') = 'common'"), expected)
        assert_same(collection.similar_by_vector(QUERY, 10, metadata={"n": 3, "group": "common"}), expected)
    # a filter nothing matches: no results, not an error
    assert collection.similar_by_vector(QUERY, 10, metadata={"group": "none"}) == []
    db.close()


def test_similar_by_id_with_a_filter_excludes_the_item(db_path, tagged):
    ids, matrix, metadata = tagged
    probe = ids[300]  # a rare one
    rare_ids, rare_matrix = subset(ids, matrix, metadata, lambda m: m["group"] == "rare")
    expected = brute_force(rare_ids, rare_matrix, matrix[300], 19, exclude=probe)
    with embedkit.Database(db_path) as db:
        for _ in range(3):
            results = db.collection("tagged").similar_by_id(probe, 50, metadata={"group": "rare"})
            assert_same(results, expected)


def test_filters_see_writes_by_other_clients(db_path, tagged):
    ids, matrix, metadata = tagged
    with embedkit.Database(db_path) as db:
        collection = db.collection("tagged")
        before = collection.similar_by_vector(QUERY, 30, metadata={"group": "rare"})
        assert len(before) == 20
        collection.similar_by_vector(QUERY, 30, metadata={"group": "rare"})  # cached, with its value index
        PlainClient(db_path).execute(
            "update tagged set metadata = json_set(metadata, '$.group', 'rare') where id = ?", [ids[1]]
        )
        after = collection.similar_by_vector(QUERY, 30, metadata={"group": "rare"})
        assert len(after) == 21 and ids[1] in [e.id for e in after]


def test_min_score_trims_results(db_path, tagged):
    ids, matrix, metadata = tagged
    expected = brute_force(ids, matrix, QUERY, 2000)
    threshold = expected[7][1]
    with embedkit.Database(db_path) as db:
        results = db.collection("tagged").similar_by_vector(QUERY, 50, min_score=threshold)
    assert [e.id for e in results] == [id for id, score in expected if score >= threshold][:50]
    assert all(e.score >= threshold for e in results) and len(results) == 8


def test_bad_where_is_one_clear_error(db_path, tagged):
    with embedkit.Database(db_path) as db:
        collection = db.collection("tagged")
        with pytest.raises(EmbedkitError, match="the condition 'nope = 1' is not valid SQL here: no such column: nope"):
            collection.similar_by_vector(QUERY, 5, where="nope = 1")
        with pytest.raises(EmbedkitError, match="only execute one statement"):
            collection.similar_by_vector(QUERY, 5, where="1); drop table tagged; --")
        assert collection.count() == 2000


def test_mmr_spreads_near_duplicates(db_path, table_model):
    rng = np.random.default_rng(11)
    e = np.eye(DIMS, dtype=np.float32)
    base = e[0]  # the query
    duplicate = 0.8 * e[0] + 0.6 * e[1]  # cosine 0.8 with the query
    vectors = {
        # three near-identical items, at clearly different distances from the query
        "dup-a": duplicate, "dup-b": duplicate + 0.01 * e[2], "dup-c": duplicate + 0.02 * e[3],
        "near": 0.7 * e[0] + 0.71 * e[4],  # less relevant, but unlike the duplicates
    }
    for i in range(20):
        vectors[f"other-{i:02d}"] = rng.standard_normal(DIMS).astype(np.float32)
    table_model.table.update({f"text {id}": v for id, v in vectors.items()})
    with embedkit.Database(db_path) as db:
        collection = db.create_collection("dups", model="test-search-table")
        collection.embed_multi([Item(id, f"text {id}") for id in vectors])
        plain = [e.id for e in collection.similar_by_vector(base, 3)]
        assert plain == ["dup-a", "dup-b", "dup-c"]
        assert [e.id for e in collection.similar_by_vector(base, 3, mmr=1.0)] == plain
        diverse = [e.id for e in collection.similar_by_vector(base, 3, mmr=0.5)]
        assert diverse[:2] == ["dup-a", "near"]
        assert sum(id.startswith("dup-") for id in diverse) == 1
        # scores stay the cosine similarity to the query
        scores = {e.id: e.score for e in collection.similar_by_vector(base, 24)}
        assert [e.score for e in collection.similar_by_vector(base, 3, mmr=0.5)] == pytest.approx(
            [scores[id] for id in diverse])
        with pytest.raises(EmbedkitError, match="from 0 to 1"):
            collection.similar_by_vector(base, 3, mmr=1.5)


def test_cli_filters(invoke, letters, tmp_path):
    (tmp_path / "notes.csv").write_text(
        "id,content,kind\n1,aaa aaa,x\n2,aaa eee,y\n3,eee eee,y\n4,aaa,y\n5,ooo,x\n"
    )
    assert invoke("embed-multi", "notes", "notes.csv", "-m", "test-letters", "--metadata-column", "kind",
                  "--store").exit_code == 0
    def ids(*args):
        result = invoke("similar", "notes", *args)
        assert result.exit_code == 0, result.output
        return [json.loads(line)["id"] for line in result.output.splitlines()]

    assert ids("-c", "aaa", "-n", "2", "--filter", "kind=y") == ["4", "2"]
    # cosines with "aaa": ooo 1/10, eee eee 1/sqrt(380); aaa 1, aaa aaa 19/sqrt(380)
    assert ids("-c", "aaa", "-n", "5", "--where", "id in ('3', '5')") == ["5", "3"]
    assert ids("-c", "aaa", "--min-score", "0.97") == ["4", "1"]
    assert ids("1", "--filter", "kind=x") == ["5"]
    result = invoke("similar", "notes", "-c", "aaa", "--where", "nope = 1")
    assert result.exit_code == 1 and result.output.strip() == (
        "Error: the condition 'nope = 1' is not valid SQL here: no such column: nope")
    result = invoke("similar", "notes", "1", "--keyword")
    assert result.exit_code == 1 and "searches for a text" in result.output
    result = invoke("similar", "notes", "-c", "aaa", "--mmr", "2")
    assert result.exit_code == 2 and "2" in result.output
