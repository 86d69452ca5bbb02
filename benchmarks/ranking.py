"""Ranking quality: baselines and candidate ranking aids on classic test collections.

Collections (BEIR layout is made from the original distributions, which must be put in
benchmarks/data/collections/<name>-raw/ first; nothing is downloaded):

- cacm (development: settings are chosen here): cacm.all, query.text, qrels.text from the
  SMART distribution of CACM (3,204 titles and abstracts, 52 judged queries).
- cranfield (test): cran.all.1400, cran.qry, cranqrel from the Glasgow IR group's
  distribution of Cranfield 1400 (1,400 abstracts, 225 judged queries). Cleverdon's grades
  1 (complete answer) .. 4 (minimum interest) become 4 .. 1, -1 (no interest) becomes 0.

Every run is scored with embedkit.evaluate (nDCG@10, MAP@100, Recall@100, as trec_eval),
and each candidate is compared with the best baseline by a paired bootstrap 95% confidence
interval of the per-query difference in nDCG@10 (10,000 resamples, seeded).

    nice -n 10 python benchmarks/ranking.py            # both collections
    nice -n 10 python benchmarks/ranking.py --only cacm

Embeddings are cached in benchmarks/data/ranking-<collection>.db (git-ignored).
"""

import argparse
import json
import re
import sqlite3
import sys
import time
from pathlib import Path

import numpy as np
from _common import data_dir

import embedkit
from embedkit import evaluate, feedback, fulltext, retrieval, vectors
from embedkit.filters import Filter
from embedkit.items import Item

COLLECTIONS = {"cacm": "development", "cranfield": "test"}
DEPTH = 100
WINDOW_TOKENS = 128
WINDOW_OVERLAP = 32
BOOTSTRAP = 10_000


# Reading the original distributions


def _fields(text):
    """[(id, {field letter: text})] of a SMART-format file (.I id, then .T/.W/... fields)."""
    records = []
    for block in re.split(r"^\.I\s+", text, flags=re.M)[1:]:
        head, _, rest = block.partition("\n")
        fields, current = {}, None
        for line in rest.split("\n"):
            match = re.match(r"^\.([A-Z])\s*$", line)
            if match:
                current = match.group(1)
                fields.setdefault(current, [])
            elif current:
                fields[current].append(line)
        records.append((head.strip(), {key: " ".join(" ".join(lines).split()) for key, lines in fields.items()}))
    return records


def prepare(name) -> Path:
    """benchmarks/data/collections/<name>/ in BEIR layout, made from <name>-raw/ once."""
    out = data_dir() / "collections" / name
    raw = data_dir() / "collections" / f"{name}-raw"
    if (out / "qrels.tsv").exists():
        return out
    if not raw.exists():
        raise SystemExit(f"{raw} is missing: put the original files of {name} there (see this script's docstring)")
    read = lambda file: (raw / file).read_text(encoding="latin-1").replace("\r", "")  # noqa: E731
    if name == "cranfield":
        docs = [(id, f.get("T", ""), f.get("W", "")) for id, f in _fields(read("cran.all.1400"))]
        # The queries' .I numbers skip; the judgments number the queries 1..225 in file order.
        queries = [(str(n), f["W"]) for n, (_, f) in enumerate(_fields(read("cran.qry")), 1)]
        qrels = []
        for line in read("cranqrel").split("\n"):
            parts = line.split()
            if len(parts) == 3:
                grade = int(parts[2])
                qrels.append((parts[0], parts[1], 5 - grade if grade > 0 else 0))
    elif name == "cacm":
        docs = [(id, f.get("T", ""), f.get("W", "")) for id, f in _fields(read("cacm.all"))]
        queries = [(str(int(id)), f["W"]) for id, f in _fields(read("query.text"))]
        qrels = [(str(int(p[0])), str(int(p[1])), 1) for p in (line.split() for line in read("qrels.text").split("\n")) if len(p) >= 2]
    else:
        raise SystemExit(f"unknown collection {name}")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "corpus.jsonl", "w") as file:
        for id, title, text in docs:
            file.write(json.dumps({"_id": id, "title": title, "text": text}) + "\n")
    with open(out / "queries.jsonl", "w") as file:
        for id, text in queries:
            file.write(json.dumps({"_id": id, "text": text}) + "\n")
    with open(out / "qrels.tsv", "w") as file:
        file.write("query-id\tcorpus-id\tscore\n")
        for row in sorted(set(qrels), key=lambda r: (int(r[0]), int(r[1]))):
            file.write("\t".join(map(str, row)) + "\n")
    return out


# The collection in embedkit, and the parts the candidates need


class Bench:
    def __init__(self, name, late=False, windows=False):
        folder = prepare(name)
        self.name = name
        self.queries = evaluate.read_queries(folder / "queries.jsonl")
        self.qrels = evaluate.read_qrels(folder / "qrels.tsv", self.queries)
        self.ids = [qid for qid in self.queries if qid in self.qrels]
        self.docs = {}
        with open(folder / "corpus.jsonl") as file:
            for line in file:
                row = json.loads(line)
                self.docs[row["_id"]] = (row["title"] + "\n" + row["text"]).strip()
        self.db = embedkit.Database(data_dir() / f"ranking-{name}.db")
        items = [Item(id, text) for id, text in self.docs.items() if text]
        self.collection = self._collection("docs", items)
        # The same documents with `embed-multi --windows`: long ones scored by their best window too.
        self.windowed = self._collection("windowed", items, windows=True) if windows else None
        model = self.collection.model
        chunker = self.collection.chunker("tokens", WINDOW_TOKENS, WINDOW_OVERLAP)
        windows, self.spans = [], {}
        for id, text in self.docs.items():
            spans = chunker.spans(text)
            if len(spans) > 1:
                windows += [Item(f"{id}#w{k}", text[a:b], {"doc": id}) for k, (a, b) in enumerate(spans)]
                self.spans[id] = spans
        self.windows = self._collection("windows", windows)
        self.long = sum(1 for count in model.count_tokens(list(self.docs.values())) if count > model.max_tokens)
        self.matrix, self.matrix_ids = self._matrix(self.collection)
        self.window_matrix, window_ids = self._matrix(self.windows)
        self.window_doc = [id.split("#")[0] for id in window_ids]
        if late:
            # The same windows as `embed-multi --chunk-size 128 --chunk-overlap 32 --late` makes them.
            late_items = [Item(id, self.docs[id]) for id in self.spans]
            late_chunker = self.collection.chunker("tokens", WINDOW_TOKENS, WINDOW_OVERLAP, late=True)
            self.late = self._collection("late", late_items, late_chunker, len(windows))
            self.late_matrix, late_ids = self._matrix(self.late)
            self.late_doc = [id.split("#")[0] for id in late_ids]
        started = time.perf_counter()
        self.query_vectors = dict(zip(self.ids, model.embed([self.queries[q] for q in self.ids])))
        self.query_seconds = time.perf_counter() - started
        self.conn = sqlite3.connect(str(self.db.path))
        self._plain_index()
        fulltext.rebuild(self.collection, "porter")

    def _collection(self, name, items, chunker=None, rows=None, windows=None):
        """A collection of items (split by chunker into `rows` rows), embedded once and cached."""
        if self.db.has_collection(name):
            collection = self.db.collection(name)
            if len(collection) == (rows or len(items)):
                return collection
            self.db.delete_collection(name)
        collection = self.db.create_collection(name)
        started = time.perf_counter()
        collection.embed_multi(items, store=True, chunker=chunker, windows=windows)
        print(f"  {self.name}: embedded {len(items)} {name} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        return collection

    def _matrix(self, collection):
        rows = collection.db.conn.execute(f'select id, embedding from "{collection.table}" order by id').fetchall()
        if not rows:
            return np.zeros((0, 384), dtype=np.float32), []
        matrix = vectors.normalize_rows(np.stack([vectors.decode(blob) for _, blob in rows]).astype(np.float32))
        return matrix, [id for id, _ in rows]

    def _plain_index(self):
        """An FTS5 index of the same rows as embedkit made them before stemming: the BM25 baseline."""
        table = self.collection.table
        if not self.conn.execute("select 1 from sqlite_master where name = 'bench_plain'").fetchone():
            self.conn.execute(
                f"create virtual table bench_plain using fts5(content, content='{table}', content_rowid='rowid', "
                f"tokenize='{fulltext.TOKENIZE}')"
            )
            self.conn.execute("insert into bench_plain (bench_plain) values ('rebuild')")
            self.conn.commit()

    # Rankings: [(id, score)] best first

    def dense(self, vector, n=DEPTH):
        scores = self.matrix @ (vector / np.linalg.norm(vector))
        order = np.lexsort((np.array(self.matrix_ids), -scores))[:n]
        return [(self.matrix_ids[i], float(scores[i])) for i in order]

    def maxp(self, vector, n=DEPTH, with_document=True, late=False):
        """Each document scored by its best window, and by its whole-text vector with_document
        (else only documents too short to have windows are); late: the windows' late-chunked
        vectors. Without the document, this is a collection chunked into 128-token chunks
        searched with `--unique source`."""
        query = vector / np.linalg.norm(vector)
        best = dict(self.dense(query, len(self.matrix_ids)))
        if not with_document:
            best = {doc: score for doc, score in best.items() if doc not in self.spans}
        matrix, owners = (self.late_matrix, self.late_doc) if late else (self.window_matrix, self.window_doc)
        for doc, score in zip(owners, matrix @ query):
            if score > best.get(doc, -2):
                best[doc] = float(score)
        return sorted(best.items(), key=lambda item: (-item[1], item[0]))[:n]

    def keyword(self, text, n=DEPTH):
        """Plain BM25 (no stemming, every word of the query) over the stored text."""
        fts = "bench_plain"
        return [
            (id, -score)
            for id, score in self.conn.execute(
                f'select item.id, bm25({fts}) from {fts} join "{self.collection.table}" as item '
                f"on item.rowid = {fts}.rowid where {fts} match ? order by bm25({fts}), item.id limit ?",
                [fulltext.match_query(text), n],
            )
        ]

    def vectors_of(self, ids):
        position = {id: i for i, id in enumerate(self.matrix_ids)}
        return self.matrix[[position[id] for id in ids]]


def rrf(*rankings):
    return fulltext.fuse([[id for id, _ in ranking] for ranking in rankings])[:DEPTH]


def candidates(bench, qid, settings):
    """{run name: [(id, score)]} for one query. Rows named "embedkit ..." are
    Collection.similar itself (its keyword index stems, as new collections do); the others
    are the baselines and ablations, built from the same pieces."""
    text, vector = bench.queries[qid], bench.query_vectors[qid]
    def similar(mode="dense", **options):
        # Collection.similar's own ranking pipeline, given the query vector computed once.
        return retrieval.rank(bench.collection, vector, text, DEPTH, None, Filter(), mode, False,
                              retrieval.Options(**options).check())
    runs = {}
    dense = bench.dense(vector)
    plain = bench.keyword(text)
    runs["dense (MiniLM)"] = dense
    runs["keyword: FTS5 BM25"] = plain
    runs["hybrid: RRF k=60"] = rrf(dense, plain)
    runs["keyword + porter"] = similar(mode="keyword", stop_words=False)
    runs["keyword + stop words dropped"] = bench.keyword(feedback.without_stop_words(text))
    stem_stop = similar(mode="keyword")
    runs["embedkit --keyword (porter + stop words)"] = stem_stop
    runs["embedkit --keyword --expand (RM3)"] = similar(mode="keyword", expand=True)
    runs["embedkit --hybrid --feedback 0 (porter + stop words, RRF)"] = similar(mode="hybrid", feedback=0)
    runs["embedkit --hybrid (default: porter + stop words, RRF, feedback 3)"] = similar(mode="hybrid")
    runs["embedkit --hybrid --expand"] = similar(mode="hybrid", expand=True)
    runs["embedkit --hybrid --expand --feedback 0"] = similar(mode="hybrid", expand=True, feedback=0)
    runs["embedkit --feedback 3 (dense)"] = similar(feedback=3)
    for alpha in settings["convex"]:
        runs[f"embedkit --hybrid --fusion convex --alpha {alpha}"] = similar(mode="hybrid", fusion="convex", alpha=alpha)
    maxp = bench.maxp(vector)
    runs["dense MaxP (document + 128-token windows)"] = maxp
    runs["hybrid RRF (MaxP, porter+stop)"] = rrf(maxp, stem_stop)
    if bench.windowed is not None:
        def windowed(mode="dense", **options):
            return retrieval.rank(bench.windowed, vector, text, DEPTH, None, Filter(), mode, False,
                                  retrieval.Options(**options).check())
        runs["embedkit --windows (dense, best of document and its 256-token windows)"] = windowed()
        runs["embedkit --windows --hybrid (default)"] = windowed("hybrid")
    if settings["late"]:
        late = bench.maxp(vector, late=True)
        runs["dense MaxP (document + late-chunked windows)"] = late
        runs["hybrid RRF (MaxP late, porter+stop)"] = rrf(late, stem_stop)
        chunks = bench.maxp(vector, with_document=False)
        runs["dense, 128-token chunks, best chunk per document"] = chunks
        runs["hybrid RRF (chunks, porter+stop)"] = rrf(chunks, stem_stop)
        late_chunks = bench.maxp(vector, with_document=False, late=True)
        runs["dense, 128-token chunks late-chunked (--late), best chunk per document"] = late_chunks
        runs["hybrid RRF (late chunks, porter+stop)"] = rrf(late_chunks, stem_stop)
    for docs in settings["rocchio_docs"]:
        for weight in settings["rocchio_weight"]:
            for seed_name, seed in (("dense", dense), ("hybrid", similar(mode="hybrid", feedback=0))):
                moved = feedback.rocchio(vector, bench.vectors_of([id for id, _ in seed[:docs]]), weight)
                runs[f"Rocchio k={docs} w={weight} from {seed_name}: hybrid RRF"] = rrf(bench.dense(moved), stem_stop)
    return runs


def paired_ci(differences, seed=0):
    rng = np.random.default_rng(seed)
    differences = np.asarray(differences)
    samples = rng.integers(0, len(differences), size=(BOOTSTRAP, len(differences)))
    means = differences[samples].mean(axis=1)
    return float(differences.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def measure(bench, settings):
    per_query = {}
    started = time.perf_counter()
    for qid in bench.ids:
        for name, ranking in candidates(bench, qid, settings).items():
            per_query.setdefault(name, {})[qid] = evaluate.scores([id for id, _ in ranking], bench.qrels[qid])
    seconds = time.perf_counter() - started
    table = {}
    for name, by_query in per_query.items():
        table[name] = {metric: float(np.mean([s[metric] for s in by_query.values()])) for metric in evaluate.METRICS}
    baselines = ["dense (MiniLM)", "keyword: FTS5 BM25", "hybrid: RRF k=60"]
    best = max(baselines, key=lambda name: table[name]["nDCG@10"])
    for name in table:
        differences = [per_query[name][q]["nDCG@10"] - per_query[best][q]["nDCG@10"] for q in bench.ids]
        table[name]["diff"], table[name]["low"], table[name]["high"] = paired_ci(differences)
    return table, best, seconds


def check_against_embedkit(bench):
    """The benchmark's dense ranking is embedkit's own (first 5 queries)."""
    for qid in bench.ids[:5]:
        mine = [id for id, _ in bench.dense(bench.query_vectors[qid], 10)]
        theirs = [e.id for e in bench.collection.similar(bench.queries[qid], 10)]
        assert mine == theirs, (qid, mine, theirs)
    # and the pipeline rows are what similar() returns (query embedded there, once here).
    qid = bench.ids[0]
    mine = retrieval.rank(bench.collection, bench.query_vectors[qid], bench.queries[qid], 10, None, Filter(), "hybrid",
                          False, retrieval.Options(expand=True, feedback=3))
    theirs = bench.collection.similar(bench.queries[qid], 10, mode="hybrid", expand=True, feedback=3)
    assert [id for id, _ in mine] == [e.id for e in theirs], (qid, mine, theirs)


def print_table(bench, table, best, role):
    print(f"\n## {bench.name} ({role}): {len(bench.docs)} documents, {len(bench.ids)} judged queries, "
          f"{bench.long} documents longer than the model's {bench.collection.model.max_tokens} tokens\n")
    print(f"Paired 95% CI of nDCG@10 against the best baseline, {best!r} (bootstrap, {BOOTSTRAP} resamples).\n")
    print("| run | nDCG@10 | MAP@100 | Recall@100 | Δ nDCG@10 | 95% CI |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, row in table.items():
        print(f"| {name} | {row['nDCG@10']:.4f} | {row['MAP@100']:.4f} | {row['Recall@100']:.4f} | "
              f"{row['diff']:+.4f} | [{row['low']:+.4f}, {row['high']:+.4f}] |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=list(COLLECTIONS))
    parser.add_argument("--json", type=Path, help="also write the tables here")
    parser.add_argument("--late", action="store_true", help="also late-chunk every long document as embed-multi --late does, and compare chunked collections")
    parser.add_argument("--windows", action="store_true", help="also search the documents with embed-multi --windows")
    args = parser.parse_args()
    settings = {"convex": [0.3, 0.5, 0.7], "rocchio_docs": [3, 10], "rocchio_weight": [0.3, 0.5], "late": args.late}
    output = {}
    for name, role in COLLECTIONS.items():
        if args.only and name != args.only:
            continue
        bench = Bench(name, args.late, args.windows)
        check_against_embedkit(bench)
        table, best, seconds = measure(bench, settings)
        print_table(bench, table, best, role)
        print(f"\n({len(bench.ids)} queries x {len(table)} runs in {seconds:.0f} s; queries embedded in {bench.query_seconds:.1f} s)")
        output[name] = table
    if args.json:
        args.json.write_text(json.dumps(output, indent=2))


if __name__ == "__main__":
    main()
