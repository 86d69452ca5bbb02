"""eval: retrieval quality of a collection's search modes against relevance judgments."""

import click

from .. import evaluate as evaluation
from .. import jsondata
from ..errors import EmbedkitError
from .base import Progress, cli, database_option, open_database, print_table
from .search_options import ranking_options, search_kwargs


@cli.command(name="eval", short_help="Measure search quality: nDCG@10, MAP@100, Recall@100 per search mode.")
@click.argument("collection")
@click.option("--queries", "queries_path", required=True, type=click.Path(dir_okay=False), help="BEIR queries.jsonl: {\"_id\", \"text\"} per line")
@click.option("--qrels", "qrels_path", required=True, type=click.Path(dir_okay=False), help="BEIR qrels TSV: query-id, corpus-id, score (a grade, 0 = not relevant)")
@click.option("--mode", "modes", multiple=True, type=click.Choice(evaluation.MODES), help="Search mode to evaluate; repeatable  [default: all three]")
@click.option("--depth", type=click.IntRange(min=1), default=100, show_default=True, help="Results retrieved per query")
@click.option("--unique", metavar="KEY", help="Score each result as its metadata KEY (e.g. source: chunks as their document, by the best chunk)")
@click.option("--json", "as_json", is_flag=True, help="Output a JSON object")
@ranking_options
@database_option
def evaluate(collection, queries_path, qrels_path, modes, depth, unique, as_json, database, **ranking):
    """Search COLLECTION for each query of --queries and score the results against the
    relevance judgments of --qrels, as trec_eval computes nDCG@10 (ndcg_cut_10), MAP@100
    (map_cut_100) and Recall@100 (recall_100), for dense, keyword and hybrid search.

    The corpus ids of the qrels are the collection's item ids. Queries without judgments
    are skipped; the counts go to stderr.

    \b
    embedkit eval docs --queries queries.jsonl --qrels qrels.tsv
    embedkit eval docs --queries queries.jsonl --qrels qrels.tsv --mode dense --json
    embedkit eval docs --queries queries.jsonl --qrels qrels.tsv --mode hybrid --expand --feedback 3
    """
    queries = evaluation.read_queries(queries_path)
    qrels = evaluation.read_qrels(qrels_path, queries)
    target = open_database(database).collection(collection)
    missing = evaluation.missing_documents(target, qrels, unique)
    if missing:
        relevant = len({id for judgments in qrels.values() for id, grade in judgments.items() if grade > 0})
        click.echo(
            f"Warning: {len(missing)} of the {relevant} relevant documents in {qrels_path} are not in "
            f"collection {collection!r} (such as {missing[0]!r})",
            err=True,
        )
    with Progress() as progress:
        report = evaluation.run(
            target, queries, qrels, modes or evaluation.MODES, depth,
            progress=progress.searching, unique=unique, **search_kwargs(ranking),
        )
    ran = [mode for mode in report if mode not in ("queries", "skipped")]
    unavailable = {mode: report[mode]["unavailable"] for mode in ran if "unavailable" in report[mode]}
    if len(unavailable) == len(ran):
        raise EmbedkitError("; ".join(f"{mode} search is unavailable: {reason}" for mode, reason in unavailable.items()))
    if as_json:
        click.echo(jsondata.dumps(report, "the report", indent=2))
    else:
        rows = [
            [metric, *("-" if mode in unavailable else f"{report[mode][metric]:.4f}" for mode in ran)]
            for metric in evaluation.METRICS
        ]
        print_table(rows, ["metric", *ran])
    for mode, reason in unavailable.items():
        click.echo(f"{mode} search is unavailable: {reason}", err=True)
    skipped = report["skipped"]
    click.echo(
        f"{report['queries']} quer{'ies' if report['queries'] != 1 else 'y'} evaluated, "
        f"{skipped} skipped (no judgments in {qrels_path})",
        err=True,
    )

