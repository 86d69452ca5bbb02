"""Items from files matched by a glob under a directory: the id is the relative path.

Text files are read as they are, HTML files as their readable text, and PDFs become
sources split into chunks, one set per page.
"""

import os
import pathlib
import re

from ..errors import EmbedkitError
from ..items import Item
from .html import html_text
from .pdf import PdfSource
from .tabular import decode_text


def expand_braces(pattern: str) -> list:
    """'**/*.{md,html}' as ['**/*.md', '**/*.html'], as a shell would (pathlib's glob does not)."""
    match = re.search(r"\{([^{}]*,[^{}]*)\}", pattern)
    if match is None:
        return [pattern]
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return [expanded for option in match.group(1).split(",") for expanded in expand_braces(head + option + tail)]


def file_inputs(directory, pattern, encoding="utf-8", id_prefix=""):
    """An Item for each text or HTML file, a PdfSource for each PDF, in path order."""
    root = pathlib.Path(directory)
    if not root.is_dir():
        raise EmbedkitError(f"{directory}: not a directory")
    paths = sorted({p for expanded in expand_braces(pattern) for p in root.glob(expanded) if p.is_file()})
    inputs = []
    for path in paths:
        relative = path.relative_to(root).as_posix()
        where = os.path.join(directory, relative)
        if path.suffix.lower() == ".pdf":
            inputs.append(PdfSource(where, name=relative, id_prefix=id_prefix))
            continue
        try:
            data = path.read_bytes()
        except OSError as ex:
            raise EmbedkitError(f"{where}: {ex.strerror}") from None
        text = decode_text(data, where, encoding)
        if path.suffix.lower() in (".html", ".htm"):
            text = html_text(text)
        inputs.append(Item(id=id_prefix + relative, content=text))
    return inputs

