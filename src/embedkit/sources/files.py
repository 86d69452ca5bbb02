"""Items from files matched by a glob under a directory: the id is the relative path."""

import os
import pathlib

from ..errors import EmbedkitError
from ..items import Item
from .tabular import decode_text


def file_items(directory, pattern, encoding="utf-8", id_prefix=""):
    root = pathlib.Path(directory)
    if not root.is_dir():
        raise EmbedkitError(f"{directory}: not a directory")
    items = []
    for path in sorted(p for p in root.glob(pattern) if p.is_file()):
        relative = path.relative_to(root).as_posix()
        try:
            data = path.read_bytes()
        except OSError as ex:
            raise EmbedkitError(f"{os.path.join(directory, relative)}: {ex.strerror}") from None
        text = decode_text(data, os.path.join(directory, relative), encoding)
        items.append(Item(id=id_prefix + relative, content=text))
    return items
