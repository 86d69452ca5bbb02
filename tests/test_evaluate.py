"""embedkit eval: the trec_eval metrics by hand, the BEIR files, the runs and the command.

The metric functions were also checked once against pytrec_eval (pytrec_eval-terrier 0.5.11,
outside this project) on 5,000 random queries with graded judgments: every per-query value of
ndcg_cut_10, map_cut_100 and recall_100 was identical.
"""

import json
import math
import pathlib

import pytest

import embedkit
from embedkit import evaluate as ev
from embedkit.errors import EmbedkitError
from embedkit.items import Entry

DATA = pathlib.Path(__file__).resolve().parent / "data" / "eval"


def close(a, b):
    return a == pytest.approx(b, abs=1e-9, rel=0)


# The metrics, computed by hand


def test_graded_relevance():
    judgments = {"a": 3, "b": 2, "c": 1, "z": 0}  # z is judged not relevant
    ranked = ["x", "a", "c", "b"]  # x is not judged: gain 0
    # DCG  = 0/log2(2) + 3/log2(3) + 1/log2(4) + 2/log2(5)
    #      = 0 + 3/1.5849625 + 1/2 + 2/2.3219281 = 1.8927893 + 0.5 + 0.8613531 = 3.2541424
    # IDCG = 3/log2(2) + 2/log2(3) + 1/log2(4)   (grades sorted: 3, 2, 1; z's 0 adds nothing)
    #      = 3 + 1.2618595 + 0.5 = 4.7618595
    # nDCG@10 = 3.2541424 / 4.7618595 = 0.6833764  (raw grades as gains, not 2**grade - 1)
    expected = (3 / math.log2(3) + 1 / 2 + 2 / math.log2(5)) / (3 + 2 / math.log2(3) + 1 / 2)
    assert close(expected, 0.6833763936083916)
    assert close(ev.ndcg(ranked, judgments), expected)
    # Relevant: a, b, c (3; z has grade 0). They are at ranks 2, 3, 4:
    # AP = (P@2 + P@3 + P@4) / 3 = (1/2 + 2/3 + 3/4) / 3 = 1.9166667 / 3 = 0.6388889
    assert close(ev.average_precision(ranked, judgments), (1 / 2 + 2 / 3 + 3 / 4) / 3)
    # Recall@100 = 3 found / 3 relevant = 1
    assert ev.recall(ranked, judgments) == 1.0
    assert ev.scores(ranked, judgments) == {
        "nDCG@10": ev.ndcg(ranked, judgments),
        "MAP@100": ev.average_precision(ranked, judgments),
        "Recall@100": 1.0,
    }


def test_grade_does_not_matter_to_map_and_recall():
    # AP and recall count grade > 0 as relevant, whatever the grade: a at rank 1 of 2 relevant.
    # AP = P@1 / 2 = 1/2; recall = 1/2
    for grade in (1, 4):
        judgments = {"a": grade, "b": 1}
        assert close(ev.average_precision(["a", "x"], judgments), 0.5)
        assert close(ev.recall(["a", "x"], judgments), 0.5)


def test_ndcg_cuts_at_10_and_so_does_the_ideal():
    judgments = {f"r{i}": 1 for i in range(1, 13)}  # 12 relevant, grade 1
    ranked = ["n"] + [f"r{i}" for i in range(1, 13)]  # r1..r9 at ranks 2..10, r10..r12 below the cut
    # DCG@10  = sum over ranks 2..10 of 1/log2(rank + 1) = 1/log2(3) + ... + 1/log2(11) = 3.5435593
    # IDCG@10 = ten grade-1 documents (not twelve): sum over ranks 1..10 = 1 + 3.5435593 = 4.5435593
    # nDCG@10 = 3.5435593 / 4.5435593 = 0.7799082
    dcg = sum(1 / math.log2(rank + 1) for rank in range(2, 11))
    assert close(dcg, 3.543559338088346)
    assert close(ev.ndcg(ranked, judgments), dcg / (1 + dcg))
    # AP: relevant at ranks 2..13, the k-th of them at rank k+1: sum of k/(k+1) for k = 1..12, / 12
    #   = (1/2 + 2/3 + 3/4 + ... + 12/13) / 12 = 9.8198662 / 12 = 0.8183222
    assert close(ev.average_precision(ranked, judgments), sum(k / (k + 1) for k in range(1, 13)) / 12)
    assert close(ev.average_precision(ranked, judgments), 0.8183221870721872)


def test_map_and_recall_cut_at_k():
    judgments = {"a": 1, "b": 1}
    ranked = ["x", "a", "y", "z", "b"]  # b at rank 5
    # AP@3: only a (rank 2) counts: (1/2) / 2 relevant = 0.25. AP@100: (1/2 + 2/5) / 2 = 0.45
    assert close(ev.average_precision(ranked, judgments, k=3), 0.25)
    assert close(ev.average_precision(ranked, judgments), 0.45)
    # Recall@3 = 1/2, Recall@100 = 2/2
    assert close(ev.recall(ranked, judgments, k=3), 0.5)
    assert ev.recall(ranked, judgments) == 1.0
    # b alone at rank 101 is past every cut
    far = [f"x{i}" for i in range(100)] + ["b"]
    assert ev.scores(far, {"b": 2}) == {"nDCG@10": 0.0, "MAP@100": 0.0, "Recall@100": 0.0}


def test_no_relevant_document_retrieved():
    judgments = {"a": 2, "b": 0}
    for ranked in (["x", "y", "b"], []):  # b is judged, but not relevant; [] retrieved nothing
        assert ev.scores(ranked, judgments) == {"nDCG@10": 0.0, "MAP@100": 0.0, "Recall@100": 0.0}


def test_query_whose_judgments_are_all_zero_scores_zero():
    # trec_eval evaluates a query in the qrels with no relevant document: every measure is 0
    # (the ideal DCG is 0, and there is nothing to divide AP and recall by).
    assert ev.scores(["a", "b"], {"a": 0, "b": 0}) == {"nDCG@10": 0.0, "MAP@100": 0.0, "Recall@100": 0.0}


def test_order_given_is_the_order_used():
    # Equal scores are the run's business: embedkit orders ties by id ascending, and the metrics
    # take the ids in the order given (trec_eval would re-sort ties by id descending).
    judgments = {"b": 1}
    # b at rank 1: nDCG = 1, AP = 1/1 = 1
    assert ev.ndcg(["b", "a"], judgments) == 1.0
    assert ev.average_precision(["b", "a"], judgments) == 1.0
    # b at rank 2: nDCG = (1/log2(3)) / 1 = 0.6309298, AP = (1/2) / 1 = 0.5
    assert close(ev.ndcg(["a", "b"], judgments), 1 / math.log2(3))
    assert close(ev.ndcg(["a", "b"], judgments), 0.6309297535714575)
    assert close(ev.average_precision(["a", "b"], judgments), 0.5)


def test_repeated_ids_count_once_at_their_first_rank():
    # ["a", "a", "b"] is ranked as ["a", "b"]: b at rank 2, not 3.
    judgments = {"b": 1}
    # nDCG = 1/log2(3) = 0.6309298 (not 1/log2(4) = 0.5); AP = 1/2 (not 1/3)
    assert close(ev.ndcg(["a", "a", "b"], judgments), 1 / math.log2(3))
    assert close(ev.average_precision(["a", "a", "b"], judgments), 0.5)
    # A relevant id repeated is found once: a of {a, c}.
    # recall = 1/2 (not 2/2); AP = P@1 / 2 = 0.5 (not (1 + 1) / 2)
    # nDCG = (1/log2(2)) / (1/log2(2) + 1/log2(3)) = 1 / 1.6309298 = 0.6131472
    judgments = {"a": 1, "c": 1}
    assert close(ev.recall(["a", "a"], judgments), 0.5)
    assert close(ev.average_precision(["a", "a"], judgments), 0.5)
    assert close(ev.ndcg(["a", "a"], judgments), 1 / (1 + 1 / math.log2(3)))
    # a repeat also takes no place within the cut: 10 ranks of distinct ids after dropping it
    ranked = ["x"] * 5 + [f"y{i}" for i in range(8)] + ["a"]  # a is the 10th distinct id
    assert close(ev.ndcg(ranked, {"a": 1}), 1 / math.log2(11))


def test_mean_over_queries():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1, "c": 1}}
    runs = {"q1": ["a"], "q2": ["x", "b"]}
    # q1: nDCG 1, AP 1, recall 1.
    # q2: nDCG = (1/log2(3)) / (1 + 1/log2(3)) = 0.6309298 / 1.6309298 = 0.3868528;
    #     AP = (1/2) / 2 = 0.25; recall = 1/2
    # means: nDCG (1 + 0.3868528) / 2 = 0.6934264, MAP (1 + 0.25) / 2 = 0.625, recall 0.75
    q2_ndcg = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    means = ev.mean_scores(runs, qrels)
    assert close(means["nDCG@10"], (1 + q2_ndcg) / 2)
    assert close(means["nDCG@10"], 0.6934264036172708)
    assert close(means["MAP@100"], 0.625)
    assert close(means["Recall@100"], 0.75)
    assert list(means) == ["nDCG@10", "MAP@100", "Recall@100"]


# The files


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_reads_the_fixture_files():
    queries = ev.read_queries(DATA / "queries.jsonl")
    assert len(queries) == 6
    assert queries["q-backup"] == "how do I back up a sqlite database"
    qrels = ev.read_qrels(DATA / "qrels.tsv", queries)
    assert set(qrels) == {"q-backup", "q-bread", "q-puncture", "q-planets", "q-search"}
    assert qrels["q-backup"] == {"sqlite-backup": 2, "sqlite-litestream": 1, "sqlite-wal": 0}


def test_queries_file(tmp_path):
    path = write(
        tmp_path / "queries.jsonl",
        '{"_id": "q1", "text": "first", "title": "ignored"}\n\n{"_id": 7, "text": "an int id"}\r\n',
    )
    assert ev.read_queries(path) == {"q1": "first", "7": "an int id"}
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes('{"_id": "q1", "text": "with a byte order mark"}\n'.encode("utf-8-sig"))
    assert ev.read_queries(bom) == {"q1": "with a byte order mark"}


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"_id": "q1", "text": "ok"}\n{"_id": "q2", "text": }\n', "line 2: not JSON (Expecting value at column 23)"),
        ('["q1", "text"]\n', 'line 1: expected a JSON object with "_id" and "text"'),
        ('{"text": "no id"}\n', 'line 1: "_id" must be a non-empty string'),
        ('{"_id": true, "text": "a boolean id"}\n', 'line 1: "_id" must be a non-empty string'),
        ('{"_id": "q1"}\n', "line 1: query 'q1' has no \"text\""),
        ('{"_id": "q1", "text": "  "}\n', "line 1: query 'q1' has no \"text\""),
        ('{"_id": "q1", "text": "a"}\n\n{"_id": "q1", "text": "b"}\n', "line 3: query 'q1' is already on line 1"),
    ],
)
def test_bad_queries_file(tmp_path, text, message):
    path = write(tmp_path / "queries.jsonl", text)
    with pytest.raises(EmbedkitError) as error:
        ev.read_queries(path)
    assert str(error.value) == f"{path} {message}"


def test_qrels_file(tmp_path):
    path = write(tmp_path / "qrels.tsv", "query-id\tcorpus-id\tscore\r\nq1\td1\t2\r\n\r\nq1\td2\t0\nq2\td1\t1\n")
    assert ev.read_qrels(path) == {"q1": {"d1": 2, "d2": 0}, "q2": {"d1": 1}}
    # the header line is optional: a first line with a number in the score column is a judgment
    path = write(tmp_path / "no-header.tsv", "q1\td1\t1\n")
    assert ev.read_qrels(path) == {"q1": {"d1": 1}}


@pytest.mark.parametrize(
    "text, message",
    [
        ("query-id\tcorpus-id\tscore\nq1 d1 1\n", "line 2: expected 3 tab-separated columns (query-id, corpus-id, score), found 1"),
        ("query-id\tcorpus-id\tscore\nq1\t0\td1\t1\n", "line 2: expected 3 tab-separated columns (query-id, corpus-id, score), found 4"),
        ("query-id\tcorpus-id\tscore\nq1\td1\t-1\n", "line 2: score '-1' is not an integer >= 0"),
        ("query-id\tcorpus-id\tscore\nq1\td1\t1.5\n", "line 2: score '1.5' is not an integer >= 0"),
        ("query-id\tcorpus-id\tscore\nq1\td1\t\n", "line 2: score '' is not an integer >= 0"),
        ("query-id\tcorpus-id\tscore\n\td1\t1\n", "line 2: empty query-id or corpus-id"),
        ("q1\td1\t1\nquery-id\tcorpus-id\tscore\n", "line 2: score 'score' is not an integer >= 0"),
        ("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td1\t2\n", "line 3: 'd1' is already judged for query 'q1' on line 2"),
        ("query-id\tcorpus-id\tscore\nq1\td1\t1\nq9\td1\t1\n", "line 3: query 'q9' is not in the queries"),
    ],
)
def test_bad_qrels_file(tmp_path, text, message):
    path = write(tmp_path / "qrels.tsv", text)
    with pytest.raises(EmbedkitError) as error:
        ev.read_qrels(path, {"q1": "the only query"})
    assert str(error.value) == f"{path} {message}"


def test_unreadable_files(tmp_path):
    with pytest.raises(EmbedkitError, match=r"missing.jsonl: No such file or directory$"):
        ev.read_queries(tmp_path / "missing.jsonl")
    latin = tmp_path / "latin1.tsv"
    latin.write_bytes("q1\tcaf\xe9\t1\n".encode("latin-1"))
    with pytest.raises(EmbedkitError, match=r"latin1.tsv: not UTF-8 text"):
        ev.read_qrels(latin)


# Running the searches, with a stand-in collection


class Stub:
    """Answers similar() from fixed rankings; keyword search is not available."""

    def __init__(self, rankings):
        self.rankings = rankings
        self.calls = []

    def similar(self, text, n=10, mode="dense"):
        self.calls.append((text, n, mode))
        if mode == "keyword":
            raise EmbedkitError("collection 'stub' has no stored text to search")
        ranked = self.rankings[mode][text]
        return [Entry(id, 1.0, None, None) for id in ranked[:n]]  # equal scores: order as given

    def __contains__(self, id):
        return any(id in ranked for rankings in self.rankings.values() for ranked in rankings.values())


def test_run_scores_each_mode_and_reports_unavailable_ones():
    queries = {"q1": "one", "q2": "two", "q3": "not judged"}
    qrels = {"q1": {"a": 1}, "q2": {"b": 1, "c": 1}}
    stub = Stub({
        "dense": {"one": ["a"], "two": ["x", "b"]},
        "hybrid": {"one": ["x", "a"], "two": ["b", "c"]},
    })
    report = ev.run(stub, queries, qrels)
    # dense is test_mean_over_queries' runs
    assert close(report["dense"]["nDCG@10"], 0.6934264036172708)
    assert close(report["dense"]["MAP@100"], 0.625)
    assert close(report["dense"]["Recall@100"], 0.75)
    # hybrid: q1 a at rank 2: nDCG 1/log2(3) = 0.6309298, AP 1/2, recall 1; q2 perfect: 1, 1, 1
    # means: nDCG (0.6309298 + 1) / 2 = 0.8154649, MAP (0.5 + 1) / 2 = 0.75, recall 1
    assert close(report["hybrid"]["nDCG@10"], (1 / math.log2(3) + 1) / 2)
    assert close(report["hybrid"]["MAP@100"], 0.75)
    assert report["hybrid"]["Recall@100"] == 1.0
    assert report["keyword"] == {"unavailable": "collection 'stub' has no stored text to search"}
    assert report["queries"] == 2 and report["skipped"] == 1
    assert list(report) == ["dense", "keyword", "hybrid", "queries", "skipped"]
    # q3 has no judgments and was never searched; every search asked for the depth
    assert {text for text, _, _ in stub.calls} == {"one", "two"}
    assert {n for _, n, _ in stub.calls} == {100}
    json.dumps(report)  # what --json prints


def test_run_options():
    stub = Stub({"dense": {"one": ["x", "a"]}})
    queries, qrels = {"q1": "one"}, {"q1": {"a": 1}}
    report = ev.run(stub, queries, qrels, modes=["dense", "dense"], depth=1)
    assert report == {"dense": {"nDCG@10": 0.0, "MAP@100": 0.0, "Recall@100": 0.0}, "queries": 1, "skipped": 0}
    assert stub.calls == [("one", 1, "dense")]
    ticks = []
    ev.run(stub, queries, qrels, modes=["keyword", "dense"], progress=lambda n, total: ticks.append((n, total)))
    assert ticks == [(1, 2), (1, 2)]  # keyword failed on its first query: its one search counts as done
    for kwargs, message in [
        ({"modes": ["sparse"]}, "unknown search mode 'sparse': use dense, keyword, hybrid"),
        ({"depth": 0}, "depth must be at least 1"),
    ]:
        with pytest.raises(EmbedkitError, match=f"^{message}$"):
            ev.run(stub, queries, qrels, **kwargs)
    with pytest.raises(EmbedkitError, match="^query 'q9' has judgments but is not in the queries$"):
        ev.run(stub, queries, {**qrels, "q9": {"a": 1}})
    with pytest.raises(EmbedkitError, match="^no query has judgments"):
        ev.run(stub, {"q2": "two"}, {})


def test_missing_documents():
    stub = Stub({"dense": {"one": ["a", "b"]}})
    qrels = {"q1": {"a": 1, "zz": 2, "not-relevant": 0}, "q2": {"b": 1, "yy": 1}}
    assert ev.missing_documents(stub, qrels) == ["yy", "zz"]  # relevant ones only


# The command, with the deterministic test model


@pytest.fixture
def letters_db(invoke, letters, db_path, tmp_path):
    corpus = [json.loads(line) for line in (DATA / "corpus.jsonl").read_text(encoding="utf-8").splitlines()]
    db = embedkit.Database(db_path)
    collection = db.create_collection("eval", model="test-letters")
    collection.embed_multi([embedkit.Item(d["_id"], f"{d['title']}\n{d['text']}") for d in corpus], store=True)
    db.close()
    return db_path


def test_command_json_matches_run(invoke, letters_db):
    result = invoke("eval", "eval", "--queries", DATA / "queries.jsonl", "--qrels", DATA / "qrels.tsv",
                    "--mode", "dense", "--json")
    assert result.exit_code == 0, result.output
    assert result.stderr == f"5 queries evaluated, 1 skipped (no judgments in {DATA / 'qrels.tsv'})\n"
    report = json.loads(result.stdout)
    db = embedkit.Database(letters_db)
    queries = ev.read_queries(DATA / "queries.jsonl")
    expected = ev.run(db.collection("eval"), queries, ev.read_qrels(DATA / "qrels.tsv"), modes=["dense"])
    db.close()
    assert report == json.loads(json.dumps(expected))
    assert list(report) == ["dense", "queries", "skipped"]


def test_command_table(invoke, letters_db):
    result = invoke("eval", "eval", "--queries", DATA / "queries.jsonl", "--qrels", DATA / "qrels.tsv",
                    "--mode", "dense", "--depth", "5")
    lines = result.stdout.splitlines()
    assert lines[0] == "metric      dense"
    assert [line.split()[0] for line in lines[1:]] == ["nDCG@10", "MAP@100", "Recall@100"]
    for line in lines[1:]:
        value = line.split()[1]
        assert len(value.split(".")[1]) == 4 and 0 <= float(value) <= 1


def test_command_unavailable_mode(invoke, db_path, letters, tmp_path):
    # Stored without text: keyword (and so hybrid) search has nothing to search.
    db = embedkit.Database(db_path)
    db.create_collection("bare", model="test-letters").embed_multi(
        [embedkit.Item("a", "aaa"), embedkit.Item("b", "bbb e")]
    )
    db.close()
    queries = write(tmp_path / "q.jsonl", '{"_id": "q1", "text": "aa"}\n')
    qrels = write(tmp_path / "r.tsv", "query-id\tcorpus-id\tscore\nq1\ta\t1\nq1\tgone\t1\n")
    result = invoke("eval", "bare", "--queries", queries, "--qrels", qrels)
    assert result.exit_code == 0, result.output
    assert "Warning: 1 of the 2 relevant documents in" in result.stderr
    assert "are not in collection 'bare' (such as 'gone')" in result.stderr
    # q1: a at rank 1 of 2 relevant: nDCG = 1 / (1 + 1/log2(3)) = 0.6131, AP 1/2, recall 1/2
    header, *rows = result.stdout.splitlines()
    assert rows[0].split()[:2] == ["nDCG@10", "0.6131"]
    assert rows[1].split()[:2] == ["MAP@100", "0.5000"]
    assert rows[2].split()[:2] == ["Recall@100", "0.5000"]
    assert header.split() == ["metric", "dense", "keyword", "hybrid"]
    assert [row.split()[2:] for row in rows] == [["-", "-"]] * 3
    assert "keyword search is unavailable: collection 'bare' stores no text" in result.stderr
    assert "hybrid search is unavailable: collection 'bare' stores no text" in result.stderr
    result = invoke("eval", "bare", "--queries", queries, "--qrels", qrels, "--json")
    report = json.loads(result.stdout)
    assert set(report["keyword"]) == {"unavailable"} and set(report["hybrid"]) == {"unavailable"}


def test_command_errors(invoke, letters_db, tmp_path):
    queries = write(tmp_path / "queries.jsonl", '{"_id": "q1", "text": "ok"}\nnot json\n')
    result = invoke("eval", "eval", "--queries", queries, "--qrels", DATA / "qrels.tsv")
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {queries} line 2: not JSON (")
    assert len(result.output.splitlines()) == 1
    result = invoke("eval", "eval", "--queries", DATA / "queries.jsonl", "--qrels", tmp_path / "none.tsv")
    assert result.exit_code == 1
    assert result.output == f"Error: {tmp_path / 'none.tsv'}: No such file or directory\n"
    result = invoke("eval", "eval", "--queries", DATA / "queries.jsonl", "--qrels", DATA / "qrels.tsv", "--mode", "sparse")
    assert result.exit_code == 2 and "'sparse' is not one of 'dense', 'keyword', 'hybrid'" in result.output
    result = invoke("eval", "nope", "--queries", DATA / "queries.jsonl", "--qrels", DATA / "qrels.tsv")
    assert result.exit_code == 1 and result.output.startswith("Error: no collection named 'nope'")


def test_command_fails_when_no_mode_can_run(invoke, db_path, letters, tmp_path):
    db = embedkit.Database(db_path)
    db.create_collection("bare", model="test-letters").embed_multi([embedkit.Item("a", "aaa")])
    db.close()
    queries = write(tmp_path / "q.jsonl", '{"_id": "q1", "text": "aa"}\n')
    qrels = write(tmp_path / "r.tsv", "q1\ta\t1\n")
    result = invoke("eval", "bare", "--queries", queries, "--qrels", qrels, "--mode", "keyword")
    assert result.exit_code == 1
    assert result.output.startswith("Error: keyword search is unavailable: collection 'bare' stores no text")
    assert len(result.output.splitlines()) == 1


# End to end with the real model


def test_real_collection(invoke, minilm, db_path):
    corpus = [json.loads(line) for line in (DATA / "corpus.jsonl").read_text(encoding="utf-8").splitlines()]
    db = embedkit.Database(db_path)
    collection = db.create_collection("eval")
    collection.embed_multi([embedkit.Item(d["_id"], f"{d['title']}\n{d['text']}") for d in corpus], store=True)
    queries = ev.read_queries(DATA / "queries.jsonl")
    qrels = ev.read_qrels(DATA / "qrels.tsv", queries)
    report = ev.run(collection, queries, qrels)
    assert report["queries"] == 5 and report["skipped"] == 1
    # Each mode's numbers are the metrics of its own result lists
    for mode in ev.MODES:
        runs = {q: [e.id for e in collection.similar(queries[q], n=100, mode=mode)] for q in qrels}
        assert report[mode] == pytest.approx(ev.mean_scores(runs, qrels), abs=1e-12)
    # 20 documents on four topics: every relevant one is retrieved, and dense search ranks well.
    # (MAP and nDCG stay below 1: for the backup query, sqlite-json comes before sqlite-litestream.)
    dense = report["dense"]
    assert dense["Recall@100"] == 1.0
    assert dense["nDCG@10"] > 0.8 and dense["MAP@100"] > 0.8
    for mode in ("keyword", "hybrid"):
        assert "unavailable" not in report[mode], report[mode]
        assert 0 < report[mode]["nDCG@10"] <= 1
    assert report["hybrid"]["Recall@100"] == 1.0
    # the command prints the same numbers
    db.close()
    result = invoke("eval", "eval", "--queries", DATA / "queries.jsonl", "--qrels", DATA / "qrels.tsv", "--json")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert list(printed) == list(report)
    for mode in ev.MODES:
        assert printed[mode] == pytest.approx(report[mode], abs=1e-12)
