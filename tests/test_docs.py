"""The documentation is kept true by running it.

Conventions for docs/*.md (see docs/index.md's "About these docs" for the reader's view):

- A fenced block whose info string has ``title="PATH"`` (```` ```csv title="blog.csv" ````)
  is written to PATH, relative to the page's working directory, when reached.
- A ```` ```bash ```` (or console/shell/sh) block whose first line starts with ``$ `` is a
  terminal session: each ``$ `` line is a command, the lines up to the next ``$ `` are
  its expected output (stdout and stderr, as a terminal shows them). A command may go on
  over several lines inside quotes or after a trailing backslash.
  ``embedkit ...`` commands run in-process through click's CliRunner (the prefix
  stripped, the rest shlex-split; ``NAME=value`` prefixes set environment variables,
  ``< FILE`` feeds standard input and ``> FILE`` writes standard output to a file); any
  other command runs in bash, and is skipped when its program is not installed (e.g.
  ``sqlite3``).
- Expected output is compared line by line, trailing spaces and blank lines ignored.
  ``...`` inside a line matches any text; a line that is only ``...`` matches any number
  of lines; a decimal number matches a number within 0.001 (or one unit of its last
  shown digit, if coarser), so real model scores can be shown as printed. A command must
  exit 0 unless its expected output has a line starting with ``Error:`` or ``Failed:``,
  in which case it must fail.
- ```` ```python ```` blocks run in order, one namespace per page, in the same working
  directory as the page's sessions. If the next block is an ```` ```output ```` block, it
  is the expected standard output of that Python block, compared as above.
- ``<!-- no-run -->`` on the line before a block leaves it out (for examples that need
  things a test cannot have, like a home directory of notes).
- ``<!-- copy: SOURCE DEST -->`` copies SOURCE (relative to docs/) to DEST in the page's
  working directory before anything runs: binary examples such as PDFs.
- ``<!-- serve: DIR PORT -->`` serves DIR of the working directory over HTTP on
  127.0.0.1:PORT while the page runs, so examples that fetch URLs run offline.
- ``<!-- chat: PORT ANSWER -->`` runs the fake chat server of tests/chatserver.py on
  127.0.0.1:PORT while the page runs (OpenAI's /v1/chat/completions and Ollama's /api/chat),
  streaming ANSWER to every question, so `embedkit ask` examples run offline.

Every page runs in its own temporary directory, so later blocks see the databases and
files earlier ones made.

``EMBEDKIT_UPDATE_DOCS=1 pytest tests/test_docs.py`` writes the outputs commands print now
into the pages (where they differ) instead of failing: for a change that moves every score,
such as a new default model. Read the diff before committing it.
"""

import contextlib
import functools
import http.server
import importlib.util
import io
import logging
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import threading
import warnings
from dataclasses import dataclass

import click
import pytest
from click.testing import CliRunner

from chatserver import ChatServer
from embedkit import database, models, ranking, search, storage
from embedkit.cli import cli

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(path.name for path in DOCS.glob("*.md"))
SHELLS = ("bash", "console", "shell", "sh")
NO_RUN = "<!-- no-run -->"


def load_generate():
    spec = importlib.util.spec_from_file_location("docs_generate", DOCS / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Reading the Markdown


@dataclass
class Block:
    info: str
    body: str
    line: int  # of the opening fence, 1-based
    skip: bool

    @property
    def language(self) -> str:
        return (self.info.split() or [""])[0].lower()

    @property
    def title(self):
        match = re.search(r'title="([^"]+)"', self.info)
        return match and match.group(1)

    @property
    def is_session(self) -> bool:
        return self.language in SHELLS and self.body.lstrip().startswith("$ ")


FENCE = re.compile(r"^( *)(`{3,}|~{3,})(.*)$")


def read_blocks(text: str) -> list:
    lines = text.splitlines()
    found, previous, i = [], "", 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            if lines[i].strip():
                previous = lines[i].strip()
            i += 1
            continue
        indent, fence, info = match.groups()
        body, j = [], i + 1
        while j < len(lines):
            closing = lines[j].strip()
            if closing.startswith(fence) and set(closing) == {fence[0]}:
                break
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j])
            j += 1
        else:
            raise AssertionError(f"line {i + 1}: unclosed code block")
        found.append(Block(info.strip(), "\n".join(body) + "\n", i + 1, previous == NO_RUN))
        previous = ""
        i = j + 1
    return found


def read_command(lines, i):
    """The command starting at lines[i] (without its '$ '), and the index after it."""
    command = lines[i][2:] if lines[i].startswith("$ ") else lines[i]
    i += 1
    while True:
        if command.endswith("\\") and i < len(lines):
            command = command[:-1] + " " + lines[i].strip()
        else:
            try:
                shlex.split(command, comments=True)
                return command, i
            except ValueError:  # an open quote: the command goes on
                if i >= len(lines):
                    raise
                command += "\n" + lines[i]
        i += 1


@dataclass
class Step:
    command: str
    expected: list
    line: int
    output_line: int = 0  # the first line of its expected output in the page, 1-based


def session_steps(block: Block) -> list:
    lines = block.body.splitlines()
    steps, i = [], 0
    while i < len(lines):
        if lines[i].startswith("$ "):
            line = block.line + 1 + i
            command, i = read_command(lines, i)
            steps.append(Step(command, [], line, block.line + 1 + i))
        else:
            steps[-1].expected.append(lines[i])
            i += 1
    return steps


# Comparing output

NUMBER = r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
PIECES = re.compile(r"(\.\.\.|-?\d+\.\d+(?:[eE][-+]?\d+)?)")


def line_matches(expected: str, actual: str) -> bool:
    pattern, wanted = [], []
    for piece in PIECES.split(expected):
        if piece == "...":
            pattern.append(".*?")
        elif piece and PIECES.fullmatch(piece):
            pattern.append(f"({NUMBER})")
            decimals = len(re.match(r"-?\d+\.(\d+)", piece).group(1))
            exponent = re.search(r"[eE]([-+]?\d+)", piece)
            scale = 10 ** int(exponent.group(1)) if exponent else 1
            wanted.append((float(piece), max(1e-3, 10**-decimals * scale)))
        else:
            pattern.append(re.escape(piece))
    match = re.fullmatch("".join(pattern), actual)
    return bool(match) and all(
        abs(float(got) - value) <= tolerance for got, (value, tolerance) in zip(match.groups(), wanted)
    )


def lines_match(expected: list, actual: list) -> bool:
    if not expected:
        return not actual
    if expected[0].strip() == "...":
        return any(lines_match(expected[1:], actual[k:]) for k in range(len(actual) + 1))
    return bool(actual) and line_matches(expected[0], actual[0]) and lines_match(expected[1:], actual[1:])


def clean(lines) -> list:
    lines = [line.rstrip() for line in lines]
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    return lines


def check_output(where, command, expected, output, exit_code):
    expected, actual = clean(expected), clean(output.splitlines())
    should_fail = any(line.startswith(("Error:", "Failed:")) for line in expected)
    shown = "\n".join(actual)
    if should_fail and exit_code == 0:
        pytest.fail(f"{where}: `{command}` was expected to fail but exited 0:\n{shown}")
    if not should_fail and exit_code != 0:
        pytest.fail(f"{where}: `{command}` exited {exit_code}:\n{shown}")
    if not lines_match(expected, actual):
        pytest.fail(
            f"{where}: output of `{command}` differs from the docs.\n"
            f"--- expected\n" + "\n".join(expected) + "\n--- actual\n" + shown
        )


# Running a page


OPENED = []  # every embedkit.Database opened while a page runs


def close_databases(databases):
    for db in databases:
        with contextlib.suppress(Exception):
            db.close()


def run_embedkit(tokens, cwd):
    env, stdin = {}, None
    while tokens and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", tokens[0]):
        name, value = tokens.pop(0).split("=", 1)
        env[name] = value
    if "<" in tokens:
        at = tokens.index("<")
        stdin = (cwd / tokens[at + 1]).read_bytes()
        del tokens[at : at + 2]
    stdout_file = None
    if ">" in tokens:
        at = tokens.index(">")
        stdout_file = cwd / tokens[at + 1]
        del tokens[at : at + 2]
    assert tokens[0] == "embedkit" and not {"|", ">>", "&&", ";", "<", ">"} & set(tokens), (
        f"unsupported shell syntax in {tokens}"
    )
    # Each command of a session is a new process: no matrix cached by an earlier one, and
    # its databases are closed when it ends (as its process would close them).
    search._cache.clear()
    search._searched.clear()
    ranking._warned.clear()
    opened = len(OPENED)
    try:
        result = CliRunner().invoke(cli, tokens[1:], input=stdin, env=env, catch_exceptions=False)
    finally:
        close_databases(OPENED[opened:])
        del OPENED[opened:]
    if stdout_file is None:
        return result.output, result.exit_code
    stdout_file.write_bytes(result.stdout_bytes)
    try:
        return result.stderr, result.exit_code
    except ValueError:  # click < 8.2 mixes stderr into stdout
        return "", result.exit_code


SHELL_PATH = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")


def run_shell(command, cwd):
    env = dict(os.environ, PATH=SHELL_PATH)  # `python` is the Python running the tests
    result = subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, timeout=120,
    )
    return result.stdout, result.returncode


COPY = re.compile(r"^<!-- copy: (\S+) (\S+) -->$", re.M)
SERVE = re.compile(r"^<!-- serve: (\S+) (\d+) -->$", re.M)
CHAT = re.compile(r"^<!-- chat: (\d+) (.+) -->$", re.M)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def page_fixtures(text, cwd):
    """The files a page copies in and the HTTP servers it asks for, while it runs."""
    for source, dest in COPY.findall(text):
        (cwd / dest).parent.mkdir(parents=True, exist_ok=True)
        if (DOCS / source).is_dir():
            shutil.copytree(DOCS / source, cwd / dest)
        else:
            shutil.copy(DOCS / source, cwd / dest)
    servers = []
    with contextlib.ExitStack() as chats:
        for port, answer in CHAT.findall(text):
            chat = ChatServer(answer=answer)
            chat.port = int(port)
            chats.enter_context(chat)
        try:
            for directory, port in SERVE.findall(text):
                handler = functools.partial(QuietHandler, directory=str(cwd / directory))
                server = http.server.ThreadingHTTPServer(("127.0.0.1", int(port)), handler)
                threading.Thread(target=server.serve_forever, daemon=True).start()
                servers.append(server)
            yield
        finally:
            for server in servers:
                server.shutdown()
                server.server_close()


UPDATE = os.environ.get("EMBEDKIT_UPDATE_DOCS", "") not in ("", "0")
FIXES: list = []  # (first line, how many lines, new lines) of outputs to rewrite, with UPDATE


def run_page(name, cwd):
    """Run every block of docs/NAME in cwd; returns how many commands and snippets ran."""
    text = (DOCS / name).read_text(encoding="utf-8")
    FIXES.clear()
    with page_fixtures(text, cwd):
        ran = run_blocks(name, read_blocks(text), cwd)
    if FIXES:
        lines = text.splitlines()
        for first, count, new in sorted(FIXES, reverse=True):  # from the bottom: line numbers stay true
            indent = lines[first - 2][: len(lines[first - 2]) - len(lines[first - 2].lstrip())]
            lines[first - 1 : first - 1 + count] = [indent + line if line else line for line in new]
        (DOCS / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
        warnings.warn(f"docs/{name}: {len(FIXES)} outputs rewritten", stacklevel=2)
    return ran


def run_blocks(name, blocks, cwd):
    ran = 0
    namespace = {"__name__": "__docs__"}
    for index, block in enumerate(blocks):
        where = f"docs/{name}:{block.line}"
        if block.skip:
            continue
        if block.title:
            path = cwd / block.title
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(block.body, encoding="utf-8")
        elif block.is_session:
            for step in session_steps(block):
                tokens = shlex.split(step.command, comments=True)
                program = next(t for t in tokens if "=" not in t)
                if program == "embedkit":
                    output, code = run_embedkit(tokens, cwd)
                elif shutil.which(program, path=SHELL_PATH):
                    output, code = run_shell(step.command, cwd)
                else:  # not installed here, e.g. the sqlite3 shell
                    warnings.warn(f"docs/{name}:{step.line}: {program} is not installed; not run", stacklevel=2)
                    continue
                if UPDATE and not lines_match(clean(step.expected), clean(output.splitlines())):
                    shown = len("\n".join(step.expected).rstrip().splitlines())
                    FIXES.append((step.output_line, shown, clean(output.splitlines())))
                else:
                    check_output(f"docs/{name}:{step.line}", step.command, step.expected, output, code)
                ran += 1
        elif block.language == "python":
            stdout = io.StringIO()
            with contextlib.redirect_stdout(stdout):
                exec(compile(block.body, where, "exec"), namespace)
            following = blocks[index + 1] if index + 1 < len(blocks) else None
            if following is not None and following.language == "output" and not following.skip:
                expected, printed = following.body.splitlines(), clean(stdout.getvalue().splitlines())
                if UPDATE and not lines_match(clean(expected), printed):
                    FIXES.append((following.line + 1, len("\n".join(expected).rstrip().splitlines()), printed))
                else:
                    check_output(where, "python block", expected, stdout.getvalue(), 0)
            ran += 1
    return ran


@pytest.fixture
def page_env(tmp_path, monkeypatch, minilm):  # minilm: the default model is prepared before any page runs
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EMBEDKIT_DATABASE", raising=False)
    # The models a user has (not the test suite's), and the ones a page registers stay on that page.
    registry = {name: model for name, model in models._registry.items() if model.source != "tests"}
    monkeypatch.setattr(models, "_registry", registry)
    original_init = database.Database.__init__

    def recording_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        OPENED.append(self)

    monkeypatch.setattr(database.Database, "__init__", recording_init)
    yield tmp_path
    close_databases(OPENED)
    OPENED.clear()
    for key in list(search._cache):
        if str(tmp_path) in key[0]:
            del search._cache[key]


@pytest.mark.parametrize("name", PAGES)
def test_page_examples_run(name, page_env):
    assert run_page(name, page_env), f"docs/{name} has no runnable examples"


# The CLI reference


def walk(command=cli, path=("embedkit",)):
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from walk(sub, (*path, name))


def test_cli_reference_is_current():
    diff = load_generate().stale_diff()
    assert not diff, "docs/cli.md is out of date: run python docs/generate.py\n" + diff


def test_every_command_is_in_the_cli_reference():
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    paths = [" ".join(path) for path, _ in walk()]
    assert {"embedkit collections list", "embedkit models list", "embedkit sql"} <= set(paths)
    for path in paths:
        assert f"\n### {path}\n" in text, f"no heading for `{path}` in docs/cli.md"
        assert f"Usage: {path} " in text, f"no --help text for `{path}` in docs/cli.md"


# Commands shown without being run (README, install notes, --help examples) must parse


def parse_command(args):
    """Parse args as click would for `embedkit ARGS`, down to the leaf command."""
    ctx = cli.make_context("embedkit", list(args))
    command = cli
    while isinstance(command, click.Group):
        protected = ctx._protected_args if hasattr(ctx, "_protected_args") else ctx.protected_args  # click < 8.2
        rest = [*protected, *ctx.args]
        name, command, rest = command.resolve_command(ctx, rest)
        ctx = command.make_context(name, rest, parent=ctx)
    return ctx


def shown_commands():
    """(where, command) for embedkit commands in README.md, docs and --help examples."""
    sources = [("README.md", (ROOT / "README.md").read_text(encoding="utf-8"))]
    sources += [(f"docs/{name}", (DOCS / name).read_text(encoding="utf-8")) for name in PAGES]
    found = []
    for where, text in sources:
        for block in read_blocks(text):
            if block.language in SHELLS and not block.is_session:
                found += [(f"{where}:{block.line}", c) for c in commands_in(block.body)]
    generate = load_generate()
    for path, command, ctx in generate.commands():
        help_text = command.get_help(ctx)
        found += [(f"`{' '.join(path)} --help`", c) for c in commands_in(help_text)]
    return found


def commands_in(text):
    lines = text.splitlines()
    commands, i = [], 0
    while i < len(lines):
        stripped = lines[i].strip()
        indent = len(lines[i]) - len(lines[i].lstrip())
        if stripped.startswith("embedkit ") and indent <= 2:
            rest = [stripped, *(line.strip() for line in lines[i + 1 :])]
            command, used = read_command(rest, 0)
            commands.append(command)
            i += used
        else:
            i += 1
    return commands


def test_readme_and_shown_commands_parse():
    found = shown_commands()
    assert any(where.startswith("README.md") for where, _ in found), "no embedkit commands found in README.md"
    for where, command in found:
        tokens = shlex.split(command, comments=True)
        if "|" in tokens:  # piped into another program: the embedkit command ends there
            tokens = tokens[: tokens.index("|")]
        assert tokens[0] == "embedkit", (where, command)
        try:
            parse_command(tokens[1:])
        except click.UsageError as ex:
            pytest.fail(f"{where}: `{command}` does not parse: {ex.format_message()}")


# Statements in the prose that no example can show


def test_sqlite_vec_notice_is_quoted_exactly(monkeypatch, caplog):
    monkeypatch.setattr(storage, "_vec_notice_given", False)
    monkeypatch.setattr(storage, "_vec_unavailable_reason", "this Python's sqlite3 cannot load extensions; install pysqlite3")
    with caplog.at_level(logging.WARNING, logger="embedkit"):
        storage.notice_vec_unavailable()
        storage.notice_vec_unavailable()
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1, "the notice is given once per process"
    assert messages[0] in (DOCS / "search.md").read_text(encoding="utf-8")


def test_the_int8_speed_up_the_docs_quote_is_the_benchmarks():
    """The int8 backend's speed-up wherever the docs quote it is what benchmarks/embed.py printed,
    as recorded in benchmarks/README.md, to at least one decimal."""
    record = (ROOT / "benchmarks" / "README.md").read_text()
    measured = float(re.search(r"^\| ONNX Runtime int8.*?\*\*([\d.]+)×\*\*", record, re.M).group(1))
    quoted = [
        (path.name, figure)
        for path in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
        for figure in re.findall(r"([\d.]+)× (?:as fast|in the\s+\[?benchmark)", path.read_text())
    ]
    assert {name for name, _ in quoted} >= {"index.md", "models.md"}
    for name, figure in quoted:
        digits = len(figure.partition(".")[2])
        assert digits >= 1 and float(figure) == round(measured, digits), (name, figure, measured)


def test_index_links_every_page():
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    for name in PAGES:
        if name != "index.md":
            assert f"]({name})" in index, f"docs/index.md does not link {name}"


def anchors(path) -> set:
    """The GitHub anchors of a Markdown file's headings (outside code blocks)."""
    text = re.sub(r"(?ms)^```.*?^```", "", path.read_text(encoding="utf-8"))
    found = set()
    for heading in re.findall(r"(?m)^#{1,6} +(.+?) *$", text):
        found.add(re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-"))
    return found


def test_relative_links_resolve():
    for path in [ROOT / "README.md"] + [DOCS / name for name in PAGES]:
        text = re.sub(r"(?ms)^```.*?^```", "", path.read_text(encoding="utf-8"))
        for target, anchor in re.findall(r"\]\(([^)#:]*\.md|)(?:#([^)]*))?\)", text):
            linked = (path.parent / target) if target else path
            assert linked.exists(), f"{path.name}: broken link to {target}"
            if anchor:
                assert anchor in anchors(linked), f"{path.name}: no heading for #{anchor} in {linked.name}"


def test_matching_rules():
    assert line_matches('{"id": "1", "score": 0.5593}', '{"id": "1", "score": 0.559333086013794}')
    assert not line_matches('{"id": "1", "score": 0.6}', '{"id": "1", "score": 0.4}')
    assert not line_matches('{"id": "2", "score": 0.5593}', '{"id": "1", "score": 0.5593}')
    assert line_matches("Error: no collection named 'x' in .../embeddings.db", "Error: no collection named 'x' in /tmp/a/embeddings.db")
    assert line_matches("[0.1, ...]", "[0.10004, 0.2, 0.3]")
    assert lines_match(["a", "...", "z"], ["a", "b", "c", "z"])
    assert lines_match(["a", "...", "z"], ["a", "z"])
    assert not lines_match(["a"], ["a", "b"])
