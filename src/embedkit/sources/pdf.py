"""PDFs by path or URL: the text of each page (pypdf), cut into chunks that carry their source and page."""

import contextlib
import io
import logging
import os

from .. import extras
from ..errors import EmbedkitError
from . import Document, Source, digest, split_text
from .url import fetch, is_url


class PdfSource(Source):
    """A PDF file or URL. Its items are `{name}#page={page}&chunk={chunk}`, with metadata
    source (name: the location as given, unless named otherwise), page and chunk (both
    from 1) and title (the PDF's own, else the first page's largest type or first line)."""

    def __init__(self, location, name=None, id_prefix="", max_bytes=None):
        self.location = str(location)
        self.name = self.location if name is None else name
        self.id_prefix = id_prefix
        self.max_bytes = max_bytes

    def read(self, known, chunker):
        etag = last_modified = content_type = None
        if is_url(self.location):
            fetched = fetch(self.location, known and known.etag, known and known.last_modified, self.max_bytes)
            if fetched is None:  # 304 Not Modified
                return None
            data, content_type = fetched.data, fetched.content_type
            etag, last_modified = fetched.etag, fetched.last_modified
        else:
            data = read_file(self.location)
        version = digest(data)
        if known is not None and known.digest == version:
            if (etag, last_modified) == (known.etag, known.last_modified) or not is_url(self.location):
                return None
            # Same bytes, new validators: recording them saves a full download next time.
            return Document(self.name, None, version, etag, last_modified)
        title, pages = extract(data, content_type)
        items = []
        for number, text in enumerate(pages, 1):
            for item in split_text(self.name, self.id_prefix + self.name, text, chunker, page=number):
                if title:
                    item.metadata["title"] = title
                items.append(item)
        return Document(self.name, items, version, etag, last_modified)


def read_file(path) -> bytes:
    if os.path.isdir(path):
        raise EmbedkitError("is a directory, not a PDF")
    try:
        with open(path, "rb") as fp:
            return fp.read()
    except OSError as ex:
        raise EmbedkitError(ex.strerror) from None


def looks_like_pdf(head: bytes) -> bool:
    # The header may follow some junk, but must come within the first kilobyte.
    return b"%PDF-" in head[:1024]


def extract(data: bytes, content_type=None):
    """(title or None, [text of each page]) of a PDF; EmbedkitError saying why when there is none."""
    if not data:
        raise EmbedkitError("empty file (0 bytes)")
    if not looks_like_pdf(data):
        sent = f"; the server sent {content_type.split(';')[0]}" if content_type else ""
        raise EmbedkitError(f"not a PDF (it does not start with %PDF-{sent})")
    pypdf = extras.require("pypdf", "pdf", "reading PDFs")
    from pypdf.errors import DependencyError

    try:
        with _quiet("pypdf"):
            reader = pypdf.PdfReader(io.BytesIO(data), strict=False)
            if reader.is_encrypted:
                # Many PDFs are encrypted with an empty password only to set permissions.
                try:
                    opened = reader.decrypt("")
                except DependencyError:
                    raise EmbedkitError("encrypted with AES; install the cryptography package to read it") from None
                if not opened:
                    raise EmbedkitError("encrypted: it needs a password to open")
            title = _title(reader)
            if not title and len(reader.pages):
                first: list = []  # (font size, text) of the first page's upright text, in order
                pages = [_clean(reader.pages[0].extract_text(visitor_text=_collect(first)))]
                pages += [_clean(page.extract_text()) for page in reader.pages[1:]]
                title = _title_from(first) or _first_line(pages[0])
            else:
                pages = [_clean(page.extract_text()) for page in reader.pages]
    except EmbedkitError:
        raise
    except Exception as ex:  # pypdf raises many kinds of errors for broken files
        raise EmbedkitError(f"damaged PDF: {_reason(ex)}") from None
    if not pages:
        raise EmbedkitError("the PDF has no pages")
    if not any(text.strip() for text in pages):
        raise EmbedkitError(
            f"no text in its {len(pages)} page{'s' * (len(pages) != 1)}: scanned images without a "
            "text layer? Run OCR on it (e.g. ocrmypdf) first"
        )
    return title, pages


def _title(reader):
    try:
        title = reader.metadata and reader.metadata.title
    except Exception:  # a broken info dictionary is no reason to lose the text
        return None
    return title.strip() or None if isinstance(title, str) else None


# A title is at most this long; a longer "title" is the page's text, not its title.
TITLE_CHARS = 200


def _collect(fragments):
    """A pypdf text visitor adding (size on the page, text) for each run of upright text."""

    def visit(text, cm, tm, font, font_size):
        # Rotated text (such as arXiv's stamp in the margin) is never the title.
        if text.strip() and cm and tm and abs(tm[1]) + abs(tm[2]) < 1e-6 and abs(cm[1]) + abs(cm[2]) < 1e-6:
            fragments.append((round(font_size * abs(tm[3] * cm[3]), 1), text))

    return visit


def _title_from(fragments):
    """The text set in the page's largest type, when it is a heading and not most of the page."""
    sized = [(size, text) for size, text in fragments if any(c.isalpha() for c in text)]
    if not sized:
        return None
    largest = max(size for size, _ in sized)
    first = next(i for i, (size, _) in enumerate(sized) if size == largest)
    run = []
    for size, text in sized[first:]:
        if size != largest:
            break
        run.append(text)
    title = " ".join(" ".join(run).split())
    letters = sum(len(text) for _, text in sized)
    if len(title) > TITLE_CHARS or len(title) * 2 > letters:
        return None
    return title


def _first_line(text):
    line = next((line.strip() for line in text.splitlines() if any(c.isalpha() for c in line)), "")
    if len(line) <= TITLE_CHARS:
        return line or None
    return line[:TITLE_CHARS].rsplit(" ", 1)[0] + "…"


def _clean(text) -> str:
    return (text or "").replace("\x00", "").strip()


def _reason(ex) -> str:
    return " ".join(str(ex).split()) or type(ex).__name__


@contextlib.contextmanager
def _quiet(name):
    """pypdf logs a warning for every oddity it repairs; the user gets one line per failed file."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR + 10)
    try:
        yield
    finally:
        logger.setLevel(level)
