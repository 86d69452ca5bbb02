"""check: is the database file sound, and its collections' derived parts in step?"""

import click

from .. import check as checking
from .. import jsondata
from ..errors import DatabaseCorrupt, EmbedkitError
from .base import cli, database_option, open_database


@cli.command(short_help="Check a database: the file, its vectors and metadata, its indexes.")
@click.argument("path", metavar="[DATABASE]", required=False, type=click.Path(dir_okay=False, path_type=str))
@click.option("--full", is_flag=True, help="Run SQLite's integrity_check (reads every page; slower) instead of quick_check, and compare quantised indexes id by id")
@click.option("--fix", is_flag=True, help="Rebuild the derived parts found out of step (keyword and quantised indexes, triggers, bookkeeping); never changes a collection's rows")
@click.option("--json", "as_json", is_flag=True, help="Output a JSON object")
@database_option
def check(path, full, fix, as_json, database):
    """Check DATABASE (default: -d, or embeddings.db): SQLite's quick_check of the file (or
    integrity_check with --full); every collection's vectors (NULL, not a BLOB, another
    length, NaN or infinite values, all zeros: searches leave those out) and metadata (JSON
    objects); its keyword index, quantised index and version triggers in step with its
    table; embedkit's bookkeeping. Prints what it found, one line each; if anything is left
    to do, says how much in an error, and exits 1.

    Without --fix nothing is written: a read-only file can be checked. With --fix the
    derived parts are rebuilt; a damaged file, vectors and metadata are left to you, with
    what to do.

    \b
    embedkit check
    embedkit check site.db --full
    embedkit check --fix
    """
    path = path or database
    try:
        db = open_database(path, write=True) if fix else open_database(path, read_only=True)
    except DatabaseCorrupt as ex:  # not even its list of tables can be read: that is the report
        report = checking.Report(path, full, [ex.what])
        report.problems.append(checking.Problem("file", "open", "SQLite cannot read even its list of tables",
                                                f"save what is left with `sqlite3 {path} .recover | sqlite3 "
                                                "recovered.db`, then check that copy"))
    else:
        report = checking.run(db, full=full, fix=fix)
    if as_json:
        click.echo(jsondata.dumps(report.to_dict(), "the report", indent=2))
    else:
        for line in report.lines():
            click.echo(line)
    if not report.ok:
        raise EmbedkitError(report.summary())
    if not as_json:
        click.echo(report.summary())
