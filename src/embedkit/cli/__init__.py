"""The embedkit command line: a thin layer over embedkit.Database and Collection."""

import os
import sys

import click

from .. import storage
from ..database import DEFAULT_PATH, Database
from ..errors import EmbedkitError


class Group(click.Group):
    """Turns library errors into one-line messages and a non-zero exit."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EmbedkitError as ex:
            raise click.ClickException(str(ex)) from None
        except click.BadParameter as ex:
            if isinstance(ex, click.MissingParameter):
                raise  # the usage line shows what is missing
            # A bad value is named in one line, as library errors are; the exit status stays 2.
            error = click.ClickException(ex.format_message())
            error.exit_code = ex.exit_code
            raise error from None

    def list_commands(self, ctx):
        return list(self.commands)  # definition order reads better than alphabetical


class ListGroup(Group):
    """A command group that runs its `list` command when no other is named."""

    def parse_args(self, ctx, args):
        if not args or (args[0] not in self.commands and args[0] not in ctx.help_option_names):
            args = ["list", *args]
        return super().parse_args(ctx, args)


@click.group(cls=Group)
@click.version_option(package_name="embedkit")
def cli():
    """Embeddings in plain SQLite: embed documents, then search them from the command
    line, Python, SQL and Datasette."""
    # An SQL function's failure is reported in one line (sqlfunctions.explain), never as the
    # traceback sqlite3 prints once anything in the process (Datasette) has turned them on.
    storage.sqlite3.enable_callback_tracebacks(False)


def database_option(fn):
    return click.option(
        "-d",
        "--database",
        type=click.Path(dir_okay=False, path_type=str),
        default=DEFAULT_PATH,
        envvar="EMBEDKIT_DATABASE",
        show_default=True,
        help="SQLite database file (or set EMBEDKIT_DATABASE)",
    )(fn)


def open_database(path, create=False) -> Database:
    """Open path; reading commands refuse to create a database that is not there."""
    if os.path.isdir(path):
        raise EmbedkitError(f"{path}: is a directory, not a database file")
    if not create and not os.path.exists(path):
        raise EmbedkitError(f"database {path} does not exist")
    return Database(path)


def print_table(rows, headers):
    """Columns left-aligned, two spaces apart."""
    widths = [max(len(str(v)) for v in column) for column in zip(headers, *rows)]
    for row in (headers, *rows):
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())


def read_text(content, input_path, what="content"):
    """Text from -c, -i FILE (or -i -) or standard input."""
    from ..sources.tabular import decode_text, read_input

    if content is not None and input_path is not None:
        raise EmbedkitError(f"give the {what} with -c TEXT or -i FILE, not both")
    if content is not None:
        return content
    if input_path is not None:
        return decode_text(read_input(input_path), "stdin" if input_path == "-" else input_path)
    if sys.stdin.isatty():
        raise EmbedkitError(f"give the {what} with -c TEXT, -i FILE or on standard input")
    return decode_text(read_input("-"), "stdin")


from . import embed, similar, manage, models, related, sql, evaluate, index  # noqa: E402,F401  (registers the commands)
