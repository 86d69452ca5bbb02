"""The `embedkit` command group and what its commands share: the database option, opening a
database, reading text, printing tables and progress bars."""

import importlib
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING

import click

from .. import errors, storage
from ..errors import EmbedkitError
from ..version import __version__

if TYPE_CHECKING:
    from ..database import Database

# Where open_database leaves, in the click context's meta, the file a command works on and
# the --lock-timeout given, for the one-line message of a fault that escapes the library.
DATABASE_PATH = "embedkit.database"
LOCK_TIMEOUT = "embedkit.lock_timeout"


class Group(click.Group):
    """Turns errors into one-line messages and a non-zero exit; --debug shows the traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.BadParameter as ex:
            if isinstance(ex, click.MissingParameter):
                raise  # the usage line shows what is missing
            # A bad value is named in one line, as library errors are; the exit status stays 2.
            error = click.ClickException(ex.format_message())
            error.exit_code = ex.exit_code
            raise error from None
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as ex:
            if _debug(ctx):
                raise
            raise click.ClickException(_one_line(ex, ctx)) from None

    def list_commands(self, ctx):
        return list(self.commands)  # definition order reads better than alphabetical


def _debug(ctx) -> bool:
    return bool(ctx.find_root().params.get("debug")) or os.environ.get("EMBEDKIT_DEBUG", "") not in ("", "0")


def _one_line(ex, ctx) -> str:
    """What went wrong, in one line: embedkit's own message, a SQLite fault of the database
    file, an operating system error naming its file; anything else is a bug."""
    if isinstance(ex, EmbedkitError):
        return str(ex)
    path = ctx.meta.get(DATABASE_PATH, "the database")
    fault = errors.from_sqlite(ex, path, ctx.meta.get(LOCK_TIMEOUT))
    if fault is not None:
        return str(fault)
    if isinstance(ex, OSError) and ex.strerror:
        return f"{ex.filename}: {ex.strerror}" if ex.filename else ex.strerror
    if isinstance(ex, RecursionError):
        return "the input is nested too deeply to be read"
    return (f"{type(ex).__name__}: {errors.first_line(ex)} (an unexpected error: run with --debug "
            "to see where it happened, and please report it)")


class ListGroup(Group):
    """A command group that runs its `list` command when no other is named."""

    def parse_args(self, ctx, args):
        if not args or (args[0] not in self.commands and args[0] not in ctx.help_option_names):
            args = ["list", *args]
        return super().parse_args(ctx, args)


class LazyGroup(Group):
    """The top-level group: a command's module is imported only when the command runs (or help
    lists it), so `embedkit similar` starts without loading what `embed-multi` needs."""

    # command -> the module of embedkit.cli that defines it, in the order `embedkit --help` lists
    # them; a new command is added here too.
    COMMANDS = {
        "embed": "embed",
        "embed-multi": "embed",
        "similar": "similar",
        "ask": "ask",
        "collections": "manage",
        "delete": "manage",
        "migrate": "manage",
        "models": "models",
        "aliases": "models",
        "keys": "models",
        "related": "related",
        "export-related": "related",
        "widget": "related",
        "sql": "sql",
        "eval": "evaluate",
        "index": "index",
        "check": "check",
        "cluster": "explore",
        "map": "explore",
        "heatmap": "explore",
        "classify": "explore",
        "import": "imports",
        "import-llm": "imports",
        "import-chroma": "imports",
    }

    def list_commands(self, ctx):
        return list(self.COMMANDS)

    def get_command(self, ctx, name):
        if name in self.COMMANDS and name not in self.commands:
            importlib.import_module(f"{__package__}.{self.COMMANDS[name]}")  # registers its commands
        return self.commands.get(name)


@click.group(cls=LazyGroup)
@click.version_option(__version__, package_name="embedkit-sqlite")
@click.option("--debug", is_flag=True, help="Show the traceback of an error, not only its one-line message (or set EMBEDKIT_DEBUG=1)")
def cli(debug):
    """Embeddings in plain SQLite: embed documents, then search them from the command
    line, Python, SQL and Datasette."""
    # An SQL function's failure is reported in one line (sqlfunctions.explain), never as the
    # traceback sqlite3 prints once anything in the process (Datasette) has turned them on.
    storage.sqlite3.enable_callback_tracebacks(False)
    if not any(isinstance(handler, _Stderr) for handler in storage.log.handlers):
        storage.log.addHandler(_Stderr())


class _Stderr(logging.Handler):
    """The library's warnings (waiting for a lock, vectors left out...), as lines on stderr."""

    def __init__(self):
        super().__init__(logging.WARNING)

    def emit(self, record):
        click.echo(self.format(record), err=True)


def _remember_lock_timeout(ctx, param, value):
    if value is not None:
        if not value >= 0:
            raise click.BadParameter(f"{value} is not a number of seconds from 0 up", ctx, param)
        ctx.meta[LOCK_TIMEOUT] = value
    return value


def database_option(fn):
    fn = click.option(
        "--lock-timeout",
        type=float,
        metavar="SECONDS",
        expose_value=False,
        callback=_remember_lock_timeout,
        help=f"How long to wait for another program's write to finish  [default: {storage.LOCK_TIMEOUT:g}, "
        "or EMBEDKIT_LOCK_TIMEOUT]",
    )(fn)
    return click.option(
        "-d",
        "--database",
        type=click.Path(dir_okay=False, path_type=str),
        default=storage.DEFAULT_PATH,
        envvar="EMBEDKIT_DATABASE",
        show_default=True,
        help="SQLite database file (or set EMBEDKIT_DATABASE)",
    )(fn)


def open_database(path, create=False, write=False, read_only=False) -> "Database":
    """Open path for the running command, closed (and checkpointed) when it ends.

    Reading commands refuse to create a database that is not there, and read a file they may
    not write without writing to it (read_only: never write, even where they may); writing
    commands (create or write) refuse a read-only file in one line before they start.
    """
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.meta[DATABASE_PATH] = path
    if os.path.isdir(path):
        raise EmbedkitError(f"{path}: is a directory, not a database file")
    if not create and not os.path.exists(path):
        raise EmbedkitError(f"database {path} does not exist")
    if create or write:
        check_writable(path)
    from ..database import Database  # here, not at the top: `embedkit --version` needs none of it

    db = Database(path, read_only=False if create or write else True if read_only else None,
                  lock_timeout=ctx.meta.get(LOCK_TIMEOUT) if ctx is not None else None)
    if ctx is not None:
        ctx.call_on_close(db.close)
    return db


def check_writable(path):
    """Refuse in one line, before any work, to write to path where that cannot be done."""
    if os.path.isdir(path):
        raise EmbedkitError(f"{path}: is a directory, not a database file")
    if os.path.exists(path) and not storage.writable(path):
        raise errors.cannot_write(path)


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


class Progress:
    """Bars on stderr when it is a terminal: reading sources, embedding or importing their items
    (with the documents done), relating them."""

    def __init__(self):
        self.bar = None
        self.label = None
        self.show = sys.stderr.isatty()
        self.documents_done = self.documents_total = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.bar is not None:
            self.bar.render_finish()
            self.bar = None

    def _update(self, label, n, total):
        if not self.show:
            return
        if self.label != label:
            self.close()
            self.label = label
            self.bar = click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True,
                                         item_show_func=self._documents)
            self.bar.render_progress()  # at once: the first step may take a while (loading a model)
        self.bar.length = total
        self.bar.update(n)

    def _documents(self, _item):
        if not self.documents_total or self.label != "Embedding":
            return None
        return f"{self.documents_done}/{self.documents_total} documents"

    def reading(self, n, total):
        self._update("Reading", n, total)

    def embedding(self, n, total):
        self._update("Embedding", n, total)

    def documents(self, n, total):
        self.documents_done += n
        self.documents_total = total
        if self.bar is not None and self.label == "Embedding":
            self.bar.render_progress()

    def windowing(self, n, total):
        self._update("Windows", n, total)

    def relating(self, n, total):
        self._update("Relating", n, total)

    def searching(self, n, total):
        self._update("Searching", n, total)

    def clustering(self, n, total):
        self._update("Clustering", n, total)

    def importing(self, n, total):
        self._update("Importing", n, total)

class interruptible:
    """Ctrl-C and SIGTERM both raise KeyboardInterrupt while in this block, so a long command
    can keep what it finished and say so; received is the signal's number (for the exit
    status, 128 + it), 0 until one comes."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self):
        self.received = 0
        self.previous = {sig: signal.signal(sig, self._raise) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _raise(self, number, frame):
        self.received = number
        raise KeyboardInterrupt
