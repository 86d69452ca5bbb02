"""Rows from CSV, TSV, JSON and newline-delimited JSON, with errors that name the line."""

import csv
import io
import itertools
import json
import os

from .. import jsondata
from ..errors import EmbedkitError

FORMATS = ("csv", "tsv", "json", "nl")
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "nl", ".ndjson": "nl", ".nl": "nl"}


def read_input(path) -> bytes:
    """The bytes of a file, or of stdin for '-'."""
    if path == "-":
        import sys

        return sys.stdin.buffer.read()
    if os.path.isdir(path):
        raise EmbedkitError(f"{path}: is a directory, not a file")
    try:
        with open(path, "rb") as fp:
            return fp.read()
    except OSError as ex:
        raise EmbedkitError(f"{path}: {ex.strerror}") from None


def decode_text(data: bytes, name: str, encoding="utf-8") -> str:
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as ex:
        raise EmbedkitError(
            f"{name}: not valid {encoding} (byte 0x{data[ex.start]:02x} at offset {ex.start})"
        ) from None
    except LookupError:
        raise EmbedkitError(f"unknown encoding {encoding!r}") from None
    return text.removeprefix("\ufeff")


def detect_format(name: str, text: str) -> str:
    ext = os.path.splitext(name)[1].lower()
    if ext in _EXTENSIONS and _EXTENSIONS[ext] != "json":
        return _EXTENSIONS[ext]
    stripped = text.lstrip()
    if stripped.startswith("["):
        return "json"
    if stripped.startswith("{"):
        # one JSON document (a single object) or one object per line
        try:
            json.loads(stripped)
            return "json"
        except ValueError:
            return "nl"
    if ext == ".json":
        return "json"  # not JSON at all: let the JSON parser say why
    first_line = stripped.split("\n", 1)[0]
    return "tsv" if "\t" in first_line else "csv"


def parse_rows(text: str, name: str, format=None):
    """A list of (row, where) pairs: where names the input and line for error messages."""
    return list(read_rows(io.StringIO(text, newline=""), name, format or detect_format(name, text)))


def read_rows(stream, name: str, format: str):
    """(row, where) pairs from a text stream opened with newline="", one at a time: a file
    larger than memory streams through (a JSON array excepted, which is parsed whole)."""
    if format == "json":
        yield from _json_rows(stream.read(), name)
    elif format == "nl":
        yield from _nl_rows(stream, name)
    else:
        yield from _delimited_rows(stream, name, "\t" if format == "tsv" else ",")


def _json_rows(text, name):
    try:
        data = jsondata.loads(text)
    except ValueError as ex:
        raise EmbedkitError(f"{name}: invalid JSON: {ex}") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise EmbedkitError(f"{name}: JSON input must be an array of objects")
    for number, row in enumerate(data, 1):
        if not isinstance(row, dict):
            raise EmbedkitError(f"{name}: item {number} is not a JSON object")
    return [(row, f"{name} item {number}") for number, row in enumerate(data, 1)]


def _nl_rows(lines, name):
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = jsondata.loads(line)
        except ValueError as ex:
            raise EmbedkitError(f"{name} line {number}: invalid JSON: {ex}") from None
        if not isinstance(row, dict):
            raise EmbedkitError(f"{name} line {number}: not a JSON object")
        yield row, f"{name} line {number}"


# Delimiters a CSV file may use instead of commas (semicolons where the comma is the decimal mark).
SNIFFED = ",;|"


def _sniff(text) -> str:
    try:
        return csv.Sniffer().sniff(text[:8192], delimiters=SNIFFED).delimiter
    except csv.Error:  # one column, or too little text to tell
        return ","


def _delimited_rows(lines, name, delimiter):
    from sqlite_utils.utils import maximize_csv_field_size_limit

    maximize_csv_field_size_limit()  # a long text in one field is no error
    head = []  # the first lines, enough to tell the delimiter by
    if delimiter == ",":
        for line in lines:
            head.append(line)
            if sum(map(len, head)) >= 8192:
                break
        delimiter = _sniff("".join(head))
    reader = csv.reader(itertools.chain(head, lines), delimiter=delimiter, strict=True)
    try:
        header = next(reader, None)
        if not header:
            return
        if len(set(header)) != len(header):
            raise EmbedkitError(f"{name}: duplicate column names in the header")
        for values in reader:
            if not values:
                continue
            if len(values) != len(header):
                raise EmbedkitError(
                    f"{name} line {reader.line_num}: {len(values)} fields, the header has {len(header)}"
                )
            yield dict(zip(header, values)), f"{name} line {reader.line_num}"
    except csv.Error as ex:
        raise EmbedkitError(f"{name} line {reader.line_num}: malformed {('CSV', 'TSV')[delimiter == chr(9)]}: {ex}") from None
