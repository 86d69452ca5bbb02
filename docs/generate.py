"""Regenerate the command reference in docs/cli.md from the commands' own --help.

    python docs/generate.py            rewrite the part of docs/cli.md between the markers
    python docs/generate.py --check    exit 1 (and say so) if docs/cli.md is out of date

The commands are discovered by walking the click group, so a new command or
subcommand appears without editing this script. Help is rendered at a fixed width,
so the output does not depend on the terminal it runs in.
"""

import difflib
import pathlib
import sys

import click

from embedkit.cli import cli

CLI_MD = pathlib.Path(__file__).resolve().parent / "cli.md"
BEGIN = "<!-- BEGIN GENERATED REFERENCE: run `python docs/generate.py`; do not edit by hand -->"
END = "<!-- END GENERATED REFERENCE -->"
WIDTH = 80  # what click prints in any terminal at least this wide


def commands(group=cli, path=("embedkit",), parent=None):
    """(path, command, context) for the group and everything under it, in --help order."""
    ctx = click.Context(
        group, info_name=path[-1], parent=parent, terminal_width=WIDTH, max_content_width=WIDTH
    )
    yield path, group, ctx
    if isinstance(group, click.Group):
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            if command is None or command.hidden:
                continue
            yield from commands(command, (*path, name), ctx)


def anchor(path) -> str:
    """The GitHub-style anchor of a command's heading."""
    return "-".join(path).lower()


def reference() -> str:
    """The generated part of cli.md: a heading and the --help text of every command."""
    parts = [BEGIN, ""]
    for path, command, ctx in commands():
        parts += [f"### {' '.join(path)}", "", "```text", command.get_help(ctx).rstrip(), "```", ""]
    parts.append(END)
    return "\n".join(parts)


def render(current: str) -> str:
    """current with the text between the markers replaced by a fresh reference."""
    start, end = current.find(BEGIN), current.find(END)
    if start == -1 or end == -1 or end < start:
        raise SystemExit(f"{CLI_MD}: the markers {BEGIN!r} and {END!r} are missing")
    return current[:start] + reference() + current[end + len(END) :]


def stale_diff(path=CLI_MD) -> str:
    """A unified diff from the file to what it should be; empty when it is current."""
    current = path.read_text(encoding="utf-8")
    wanted = render(current)
    return "".join(
        difflib.unified_diff(
            current.splitlines(keepends=True),
            wanted.splitlines(keepends=True),
            f"{path.name} (on disk)",
            f"{path.name} (generated)",
        )
    )


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv not in ([], ["--check"]):
        print(__doc__, file=sys.stderr)
        return 2
    if argv == ["--check"]:
        diff = stale_diff()
        if diff:
            sys.stdout.write(diff)
            print(f"{CLI_MD} is out of date: run python docs/generate.py", file=sys.stderr)
            return 1
        print(f"{CLI_MD} is up to date")
        return 0
    current = CLI_MD.read_text(encoding="utf-8")
    wanted = render(current)
    if wanted != current:
        CLI_MD.write_text(wanted, encoding="utf-8")
        print(f"rewrote {CLI_MD}")
    else:
        print(f"{CLI_MD} is already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
