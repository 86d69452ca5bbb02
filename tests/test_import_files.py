"""embedkit import: vectors from NL-JSON, JSON, CSV and .npy files."""

import json

import numpy as np
import pytest

import embedkit
from conftest import dump

VECTORS = np.random.default_rng(3).standard_normal((5, 8)).astype(np.float32)
IDS = ["a", "b", "c", "d", "e"]
TEXTS = ["apples and pears", "a bicycle", "sourdough", "the sea", "rye bread"]


def write_nl(path, vectors=VECTORS, ids=IDS):
    with open(path, "w") as fp:
        for i, (id, vector) in enumerate(zip(ids, vectors)):
            row = {"id": id, "embedding": [float(v) for v in vector], "content": TEXTS[i % 5], "metadata": {"n": i},
                   "tag": "x"}
            fp.write(json.dumps(row) + "\n")
    return path


def stored(db_path, name):
    with embedkit.Database(db_path) as db:
        collection = db.collection(name)
        return collection, {e.id: (collection.vector(e.id).tobytes(), e.content, e.metadata) for e in collection}


def test_nl_json_csv_json_and_npy(invoke, tmp_path, db_path):
    result = invoke("import", "nl", write_nl(tmp_path / "v.jsonl"), "--metadata-column", "tag")
    assert result.exit_code == 0 and result.output.startswith("5 added, 0 updated, 0 unchanged in "), result.output
    collection, rows = stored(db_path, "nl")
    assert collection.model_id is None and collection.dimensions == 8
    assert rows["c"] == (VECTORS[2].tobytes(), "sourdough", {"n": 2, "tag": "x"})  # bit for bit

    csv = tmp_path / "v.csv"
    csv.write_text("id,vector,title\n" + "".join(
        f'{id},"{json.dumps([float(v) for v in vector])}",{text}\n' for id, vector, text in zip(IDS, VECTORS, TEXTS)))
    invoke("import", "csv", csv, "--vector-column", "vector", "--content-column", "title")
    assert stored(db_path, "csv")[1]["b"] == (VECTORS[1].tobytes(), "a bicycle", None)

    array = tmp_path / "v.json"
    array.write_text(json.dumps([{"id": id, "embedding": vector.tolist()} for id, vector in zip(IDS, VECTORS)]))
    invoke("import", "json", array)
    assert stored(db_path, "json")[1]["e"] == (VECTORS[4].tobytes(), None, None)

    np.save(tmp_path / "v.npy", VECTORS)
    (tmp_path / "ids.txt").write_text("\n".join(IDS) + "\n")
    invoke("import", "npy", tmp_path / "v.npy", "--ids", tmp_path / "ids.txt")
    assert stored(db_path, "npy")[1]["d"][0] == VECTORS[3].tobytes()
    # The ids (and text) of a .npy file can come from a rows file too.
    rows_file = tmp_path / "rows.jsonl"
    rows_file.write_text("".join(json.dumps({"id": id, "content": text}) + "\n" for id, text in zip(IDS, TEXTS)))
    invoke("import", "npy2", tmp_path / "v.npy", "--ids", rows_file)
    assert stored(db_path, "npy2")[1]["a"] == (VECTORS[0].tobytes(), "apples and pears", None)

    again = invoke("import", "nl", tmp_path / "v.jsonl", "--metadata-column", "tag")
    assert again.output.startswith("0 added, 0 updated, 5 unchanged")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda rows: rows.__setitem__(3, rows[3].replace('"embedding": [', '"embedding": [0.5, ')), "the vector of 'd' has 9 dimensions, expected 8"),
        (lambda rows: rows.__setitem__(3, rows[3].replace('"embedding": [', '"embedding": [NaN, ')), "v.jsonl line 4: invalid JSON: NaN is not a JSON number"),
        (lambda rows: rows.__setitem__(2, rows[2].replace('"id": "c"', '"id": "a"')), "duplicate id 'a'"),
        (lambda rows: rows.__setitem__(4, rows[4].replace('"embedding": [', '"embedding": "x", "e2": [')), "v.jsonl line 5: the vector is not a JSON array of numbers"),
        (lambda rows: rows.__setitem__(1, "{not json"), "v.jsonl line 2: invalid JSON"),
        (lambda rows: rows.__setitem__(0, rows[0].replace('"id": "a", ', '')), "v.jsonl line 1: no 'id' column"),
    ],
)
def test_bad_input_is_refused_in_one_line_with_nothing_written(invoke, tmp_path, db_path, change, message):
    invoke("import", "vecs", write_nl(tmp_path / "first.jsonl", VECTORS[:1], ["first"]))
    before = dump(db_path)
    path = write_nl(tmp_path / "v.jsonl")
    rows = path.read_text().splitlines()
    change(rows)
    path.write_text("\n".join(rows) + "\n")
    result = invoke("import", "vecs", path)
    assert result.exit_code == 1
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert dump(db_path) == before


def test_a_nan_or_zero_vector_names_its_id(invoke, tmp_path, db_path):
    vectors = VECTORS.copy()
    vectors[2, 5] = np.inf
    # Python's json writes Infinity, which is not JSON: refused where it is read.
    assert "a.jsonl line 3: invalid JSON: Infinity is not a JSON number" in invoke("import", "v", write_nl(tmp_path / "a.jsonl", vectors)).output
    np.save(tmp_path / "a.npy", vectors)
    (tmp_path / "ids.txt").write_text("".join(id + "\n" for id in IDS))
    assert "the vector of 'c' contains NaN or infinite values" in invoke("import", "v", tmp_path / "a.npy", "--ids", tmp_path / "ids.txt").output
    vectors = VECTORS.copy()
    vectors[4] = 0
    assert "the vector of 'e' is all zeros" in invoke("import", "v", write_nl(tmp_path / "b.jsonl", vectors)).output
    with embedkit.Database(db_path) as db:
        assert db.collection("v").count() == 0


def test_npy_needs_ids_that_pair_up(invoke, tmp_path):
    np.save(tmp_path / "v.npy", VECTORS)
    (tmp_path / "ids.txt").write_text("a\nb\n")
    assert "give their ids with --ids FILE" in invoke("import", "v", tmp_path / "v.npy").output
    assert "has 5 vectors and" in invoke("import", "v", tmp_path / "v.npy", "--ids", tmp_path / "ids.txt").output
    np.save(tmp_path / "flat.npy", VECTORS[0])
    assert "must hold a 2-d array of numbers" in invoke("import", "v", tmp_path / "flat.npy", "--ids", tmp_path / "ids.txt").output


def test_model_recorded_so_text_search_embeds_with_it(invoke, tmp_path, db_path, letters):
    vectors = letters.embed(TEXTS)
    write_nl(tmp_path / "v.jsonl", vectors)
    result = invoke("import", "fruit", tmp_path / "v.jsonl", "-m", "test-letters", "--metadata-column", "tag")
    assert result.exit_code == 0, result.output
    found = json.loads(invoke("similar", "fruit", "-c", "apples and pears", "-n", "1").output)
    assert found["id"] == "a" and found["score"] == pytest.approx(1.0)
    # The vectors count as the model's: embedding the same texts embeds nothing.
    letters.calls = 0
    source = tmp_path / "texts.jsonl"
    source.write_text("".join(json.dumps({"id": id, "content": text, "metadata": {"n": i, "tag": "x"}}) + "\n"
                              for i, (id, text) in enumerate(zip(IDS, TEXTS))))
    assert "0 embedded, 0 reused, 0 updated, 5 unchanged" in invoke("embed-multi", "fruit", source, "--store").output
    assert letters.calls == 0
    # Without --model the collection has none, and says so when asked to embed.
    invoke("import", "bare", tmp_path / "v.jsonl")
    assert "collection 'bare' has no model" in invoke("similar", "bare", "-c", "apples").output
    assert json.loads(invoke("similar", "bare", "a", "-n", "1").output)["id"] in IDS
