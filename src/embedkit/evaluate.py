"""Retrieval quality: nDCG@10, MAP@100 and Recall@100 of a collection's search modes.

The queries and relevance judgments (qrels) are files in the layout BEIR uses, and the
metrics are computed as trec_eval computes ``ndcg_cut_10``, ``map_cut_100`` and
``recall_100``. The metric functions are pure: a ranked list of ids and a query's
judgments ({id: grade}) in, a number out.
"""

import json
import math

from . import storage
from .errors import EmbedkitError
from .filters import json_path

MODES = ("dense", "keyword", "hybrid")
METRICS = ("nDCG@10", "MAP@100", "Recall@100")


# The metrics, one query at a time


def _distinct(ranked):
    """ranked without repeats: an id counts at its first rank only."""
    return list(dict.fromkeys(ranked))


def ndcg(ranked, judgments, k=10) -> float:
    """nDCG@k as trec_eval's ndcg_cut_k: the gain of a document is its grade (not 2**grade - 1).

    DCG = sum over ranks i = 1..k of grade(i) / log2(i + 1); the ideal DCG is the same sum
    over every judged grade, largest first. 0 when no document is relevant.
    """
    gains = [judgments.get(id, 0) for id in _distinct(ranked)[:k]]
    ideal = sorted((grade for grade in judgments.values() if grade > 0), reverse=True)[:k]
    ideal_dcg = _dcg(ideal)
    return _dcg(gains) / ideal_dcg if ideal_dcg > 0 else 0.0


def _dcg(gains) -> float:
    return sum(gain / math.log2(rank + 1) for rank, gain in enumerate(gains, start=1) if gain > 0)


def average_precision(ranked, judgments, k=100) -> float:
    """AP@k as trec_eval's map_cut_k: the sum of precision@i over the ranks i <= k that hold a
    relevant document (grade > 0), divided by how many relevant documents the query has."""
    relevant = sum(grade > 0 for grade in judgments.values())
    if not relevant:
        return 0.0
    found, total = 0, 0.0
    for rank, id in enumerate(_distinct(ranked)[:k], start=1):
        if judgments.get(id, 0) > 0:
            found += 1
            total += found / rank
    return total / relevant


def recall(ranked, judgments, k=100) -> float:
    """Recall@k as trec_eval's recall_k: relevant documents in the top k / relevant documents."""
    relevant = {id for id, grade in judgments.items() if grade > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(_distinct(ranked)[:k])) / len(relevant)


def scores(ranked, judgments) -> dict:
    """{metric: value} of one query's ranked ids."""
    return {
        "nDCG@10": ndcg(ranked, judgments, 10),
        "MAP@100": average_precision(ranked, judgments, 100),
        "Recall@100": recall(ranked, judgments, 100),
    }


def mean_scores(runs, qrels) -> dict:
    """{metric: mean over the queries of runs}, runs being {query id: ranked ids}.

    Every query of runs must have judgments; one that retrieved nothing scores 0.
    """
    if not runs:
        raise EmbedkitError("no query to evaluate")
    totals = dict.fromkeys(METRICS, 0.0)
    for query_id, ranked in runs.items():
        for metric, value in scores(ranked, qrels[query_id]).items():
            totals[metric] += value
    return {metric: total / len(runs) for metric, total in totals.items()}


# The files


def _lines(path):
    """(line number, line) of a text file, without line endings."""
    try:
        with open(path, encoding="utf-8-sig") as file:
            text = file.read()
    except OSError as ex:
        raise EmbedkitError(f"{path}: {ex.strerror or ex}") from None
    except UnicodeDecodeError as ex:
        raise EmbedkitError(f"{path}: not UTF-8 text ({ex.reason} at byte {ex.start})") from None
    return enumerate(text.splitlines(), start=1)


def read_queries(path) -> dict:
    """{query id: text} from a BEIR queries.jsonl: one JSON object per line with "_id" and
    "text" (other keys are ignored; blank lines too)."""
    queries: dict[str, str] = {}
    seen: dict[str, int] = {}
    for number, line in _lines(path):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as ex:
            raise EmbedkitError(f"{where}: not JSON ({ex.msg} at column {ex.colno})") from None
        if not isinstance(row, dict):
            raise EmbedkitError(f"{where}: expected a JSON object with \"_id\" and \"text\"")
        query_id, text = row.get("_id"), row.get("text")
        if isinstance(query_id, int) and not isinstance(query_id, bool):
            query_id = str(query_id)
        if not isinstance(query_id, str) or not query_id:
            raise EmbedkitError(f"{where}: \"_id\" must be a non-empty string")
        if not isinstance(text, str) or not text.strip():
            raise EmbedkitError(f"{where}: query {query_id!r} has no \"text\"")
        if query_id in seen:
            raise EmbedkitError(f"{where}: query {query_id!r} is already on line {seen[query_id]}")
        seen[query_id] = number
        queries[query_id] = text
    return queries


def read_qrels(path, queries=None) -> dict:
    """{query id: {corpus id: grade}} from a BEIR qrels TSV: query-id, corpus-id and score
    (an integer >= 0; 0 is judged not relevant) separated by tabs, after a header line.

    With queries (from read_queries), a query id that is not among them is an error.
    """
    qrels: dict[str, dict[str, int]] = {}
    seen: dict[tuple, int] = {}
    first = True
    for number, line in _lines(path):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        header, first = first, False
        fields = line.split("\t")
        if len(fields) != 3:
            raise EmbedkitError(
                f"{where}: expected 3 tab-separated columns (query-id, corpus-id, score), found {len(fields)}"
            )
        query_id, corpus_id, score = (field.strip() for field in fields)
        if header and not _is_integer(score):
            continue  # the header line (BEIR's is query-id, corpus-id, score)
        if not query_id or not corpus_id:
            raise EmbedkitError(f"{where}: empty query-id or corpus-id")
        if not _is_integer(score) or int(score) < 0:
            raise EmbedkitError(f"{where}: score {score!r} is not an integer >= 0")
        if queries is not None and query_id not in queries:
            raise EmbedkitError(f"{where}: query {query_id!r} is not in the queries")
        if (query_id, corpus_id) in seen:
            raise EmbedkitError(
                f"{where}: {corpus_id!r} is already judged for query {query_id!r} on line {seen[query_id, corpus_id]}"
            )
        seen[query_id, corpus_id] = number
        qrels.setdefault(query_id, {})[corpus_id] = int(score)
    return qrels


def _is_integer(text) -> bool:
    return text.isascii() and text.lstrip("+-").isdigit()


# Running the searches


def run(collection, queries, qrels, modes=MODES, depth=100, progress=None, unique=None, **options) -> dict:
    """Search collection for every query that has judgments, in each mode, and score the results.

    queries is {query id: text}, qrels {query id: {corpus id: grade}} (see read_queries and
    read_qrels); the corpus ids are the collection's item ids. Each query takes the
    collection's top `depth` results as they come (ties in score are in id order; an id
    repeated in a list counts at its first rank only).

    Returns {mode: {metric: value}, "queries": evaluated, "skipped": queries without
    judgments}, the values means over the evaluated queries. A mode that cannot run on this
    collection (an EmbedkitError, such as keyword search without stored text) is
    {"unavailable": reason} instead. progress(n, total) is called as n more of the total
    searches are done. options go to Collection.similar for every search (such as
    rerank, expand, feedback, fusion), so their effect can be measured.

    With unique (a metadata key such as "source"), each result counts as its value of that
    key (its id when it has none), best result per value: a collection of chunks is scored
    against judgments of whole documents, each document by its best chunk.
    """
    missing = [query_id for query_id in qrels if query_id not in queries]
    if missing:
        raise EmbedkitError(f"query {missing[0]!r} has judgments but is not in the queries")
    if depth < 1:
        raise EmbedkitError("depth must be at least 1")
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown:
        raise EmbedkitError(f"unknown search mode {unknown[0]!r}: use {', '.join(MODES)}")
    modes = list(dict.fromkeys(modes))
    evaluated = [query_id for query_id in queries if query_id in qrels]
    if not evaluated:
        raise EmbedkitError("no query has judgments: the query ids of the qrels and the queries differ")
    progress = progress or (lambda n, total: None)
    if unique is not None:
        options["unique"] = unique
    total = len(evaluated) * len(modes)
    report: dict = {}
    for mode in modes:
        runs, done = {}, 0
        try:
            for query_id in evaluated:
                results = collection.similar(queries[query_id], n=depth, mode=mode, **options)
                runs[query_id] = [str((entry.metadata or {}).get(unique, entry.id)) if unique else entry.id
                                  for entry in results]
                done += 1
                progress(1, total)
        except EmbedkitError as ex:
            report[mode] = {"unavailable": str(ex)}
            progress(len(evaluated) - done, total)
            continue
        report[mode] = mean_scores(runs, qrels)
    report["queries"] = len(evaluated)
    report["skipped"] = len(queries) - len(evaluated)
    return report


def missing_documents(collection, qrels, unique=None) -> list:
    """The judged relevant corpus ids (grade > 0) that are not items of collection (nor, with
    unique, values of that metadata key), sorted."""
    relevant = {id for judgments in qrels.values() for id, grade in judgments.items() if grade > 0}
    known = set()
    if unique is not None:
        rows = collection.db.conn.execute(
            f"select distinct json_extract(metadata, ?) from {storage.quote(collection.table)}", [json_path(unique)]
        )
        known = {str(value) for value, in rows if value is not None}
    return sorted(id for id in relevant if id not in known and id not in collection)
