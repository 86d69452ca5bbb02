"""Items scored by their best part (windows): with the real default model, searches return
what a brute-force max over each item's own vector and its windows' vectors, computed here,
returns; the side table follows the items; the matching part is in the results."""

import json
import sqlite3

import numpy as np
import pytest

from embedkit import vectors
from embedkit.chunking import Chunker
from embedkit.errors import EmbedkitError
from embedkit.items import Item

TOPICS = [
    "the boundary layer on a swept wing separates under an adverse pressure gradient",
    "ice forms on helicopter rotor blades flying through cold clouds",
    "heat moves slowly through composite slabs with many layers",
    "shock waves stand in front of blunt bodies at hypersonic speed",
    "flutter of thin panels grows when the dynamic pressure rises",
    "jets mix with still air and spread in a turbulent cone",
]
QUERIES = ["rotor icing in clouds", "panel flutter", "hypersonic shock ahead of a blunt nose", "turbulent jet mixing",
           "heat conduction in layered slabs", "wing boundary layer separation"]


def long_text(first, last, repeat=25):
    """A text of about 600 tokens: one topic at the start, another only at the end."""
    return f"A study of how {TOPICS[first]}. " + " ".join([f"We measured how {TOPICS[first]}."] * repeat) + (
        f" At the very end, a note on how {TOPICS[last]}.")


ITEMS = [Item(f"long-{i}", long_text(i, (i + 3) % 6), {"kind": "long"}) for i in range(6)] + [
    Item(f"short-{i}", f"A short note on how {topic}.", {"kind": "short"}) for i, topic in enumerate(TOPICS)]


@pytest.fixture
def windowed(db, minilm):
    collection = db.create_collection("docs")
    stats = collection.embed_multi(ITEMS, store=True, windows=True)
    return collection, stats


def brute_force(collection, model, query, n, kind=None):
    """[(id, score, best part's (start, end) or None)]: each item's best of its own vector and
    the vectors of its windows (as cut by a tokens Chunker of what the model reads, overlap a
    quarter), each embedded here."""
    q = model.embed([query])[0]
    q = q / np.linalg.norm(q)
    chunker = Chunker("tokens", model.max_tokens, model.max_tokens // 4, lambda text: model.count_tokens([text])[0])
    scored = []
    for item in ITEMS:
        if kind is not None and item.metadata["kind"] != kind:
            continue
        own = vectors.normalize_rows(collection.vector(item.id)[None, :].copy())[0]
        best, part = float(own @ q), None
        if model.count_tokens([item.content])[0] > model.max_tokens:
            spans = chunker.spans(item.content)
            windows = vectors.normalize_rows(model.embed([item.content[a:b] for a, b in spans]))
            for span, score in zip(spans, windows @ q):
                if score > best:
                    best, part = float(score), span
        scored.append((item.id, best, part))
    return sorted(scored, key=lambda row: (-row[1], row[0]))[:n]


def window_counts(collection):
    """id -> how many windows with a vector the item has."""
    return dict(collection.db.conn.execute(
        "select id, count(*) from _embedkit_docs_windows where embedding is not null group by id").fetchall())


def test_searches_return_the_brute_force_best_of_items_and_their_windows(windowed, minilm):
    collection, stats = windowed
    counts = window_counts(collection)
    assert stats.embedded == len(ITEMS) and stats.windows == sum(counts.values())
    assert counts.keys() == {f"long-{i}" for i in range(6)} and min(counts.values()) >= 2
    for query in QUERIES:
        expected = brute_force(collection, minilm, query, 5)
        results = collection.similar(query, 5)
        assert [entry.id for entry in results] == [id for id, _, _ in expected], query
        for entry, (_, score, span) in zip(results, expected):
            assert entry.score == pytest.approx(score, abs=1e-5)
            if span is None:
                assert entry.part is None
            else:
                assert (entry.part.start, entry.part.end) == span
                assert entry.part.text == entry.content[span[0]:span[1]]
                assert entry.part.score == entry.score
        filtered = collection.similar(query, 3, metadata={"kind": "long"})
        assert [e.id for e in filtered] == [id for id, _, _ in brute_force(collection, minilm, query, 3, "long")]


def test_a_long_item_is_found_by_its_end_only_with_windows(db, minilm):
    plain = db.create_collection("plain")
    plain.embed_multi(ITEMS, store=True)
    windowed = db.create_collection("docs")
    windowed.embed_multi(ITEMS, store=True, windows=True)
    # long-4 is about panel flutter, and ends on how heat moves through slabs (topic 1): past
    # the 256 tokens the model reads, so its own vector never saw it.
    query = "a note on how ice forms on helicopter rotor blades"
    ranks = {name: [e.id for e in c.similar(query, 12)].index("long-4") for name, c in
             (("plain", plain), ("windowed", windowed))}
    assert ranks["windowed"] < ranks["plain"]
    found = next(e for e in windowed.similar(query, 12) if e.id == "long-4")
    assert "helicopter rotor" in found.part.text and found.part.end == len(found.content)


def test_windows_follow_the_items_and_a_rerun_embeds_nothing(windowed, minilm):
    collection, _ = windowed
    side = "_embedkit_docs_windows"
    before = window_counts(collection)
    calls = minilm.calls
    stats = collection.embed_multi(ITEMS, store=True)  # recorded: windows stay on
    assert (stats.embedded, stats.windows, minilm.calls) == (0, 0, calls)
    changed = [Item("long-0", long_text(0, 5, repeat=40), {"kind": "long"})]
    stats = collection.embed_multi(changed, store=True)
    assert stats.embedded == 1 and stats.windows == window_counts(collection)["long-0"] > before["long-0"]
    collection.delete("long-1")
    assert window_counts(collection)["long-1"] == before["long-1"]  # left until the next update, never searched
    assert all(e.id != "long-1" for e in collection.similar(TOPICS[1], 20))
    collection.embed_multi([], store=True)
    rows = dict(collection.db.conn.execute(f"select id, count(*) from {side} group by id").fetchall())
    assert "long-1" not in rows and rows["long-0"] == stats.windows and rows["short-0"] == 1  # checked: fits

    collection.embed_multi([], store=True, windows=False)
    assert collection.windows is None and collection.db.collection("docs").windows is None
    assert not collection.db.conn.execute(f"select 1 from sqlite_master where name = '{side}'").fetchone()
    assert all(e.part is None for e in collection.similar(QUERIES[0], 5))


def test_deleting_the_collection_drops_its_windows(windowed):
    collection, _ = windowed
    collection.db.delete_collection("docs")
    assert not collection.db.conn.execute("select 1 from sqlite_master where name = '_embedkit_docs_windows'").fetchone()


def test_windows_need_stored_text_and_a_model_that_counts_tokens(db, letters, tmp_path, invoke):
    collection = db.create_collection("docs")
    with pytest.raises(EmbedkitError, match="windows are cut from the stored text"):
        collection.embed_multi(ITEMS, windows=True)
    other = db.create_collection("letters", letters.model_id)
    with pytest.raises(EmbedkitError, match="windows need a model that counts tokens"):
        other.embed_multi(ITEMS, store=True, windows=True)
    assert len(collection) == len(other) == 0

    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps({"id": i.id, "text": i.content}) + "\n" for i in ITEMS))
    result = invoke("embed-multi", "docs", path, "--windows", "-d", tmp_path / "cli.db")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == ["Error: --windows cuts windows from the stored text: add --store"]
    assert not (tmp_path / "cli.db").exists()


def test_the_cli_records_windows_and_similar_names_the_matching_part(invoke, tmp_path, minilm):
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps({"id": i.id, "text": i.content}) + "\n" for i in ITEMS))
    result = invoke("embed-multi", "docs", path, "--windows", "--store")
    assert result.exit_code == 0, result.output
    windows = sqlite3.connect(tmp_path / "embeddings.db").execute(
        "select count(*) from _embedkit_docs_windows where embedding is not null").fetchone()[0]
    assert f"12 embedded, 0 reused, 0 updated, 0 unchanged, 0 failed, {windows} windows" in result.output
    assert "longer than" not in result.output  # the windows read the rest
    assert "0 embedded" in invoke("embed-multi", "docs", path, "--store").output
    settings = sqlite3.connect(tmp_path / "embeddings.db").execute(
        "select settings from _embedkit_collections").fetchone()[0]
    assert json.loads(settings)["windows"] == {"size": 256, "overlap": 64}
    lines = [json.loads(line) for line in invoke("similar", "docs", "-c", "a note on how ice forms on helicopter rotor blades").output.splitlines()]
    long4 = next(line for line in lines if line["id"] == "long-4")
    assert long4["part"]["number"] >= 2 and long4["score"] == long4["part"]["score"]
    assert long4["content"][long4["part"]["start"]:long4["part"]["end"]] == long4["part"]["text"]
    assert all("part" not in line for line in lines if line["id"].startswith("short"))
    plain = invoke("similar", "docs", "-c", "a note on how ice forms on helicopter rotor blades", "--plain").output
    assert f"best part: characters {long4['part']['start']}-{long4['part']['end']}" in plain


def test_one_item_embedded_alone_gets_its_windows(windowed, minilm):
    collection, _ = windowed
    stats = collection.embed("long-9", long_text(2, 1), store=True)
    assert stats.windows >= 2 and stats.windows == window_counts(collection)["long-9"]
