"""Which items a search, a delete or a related list may touch: metadata values and SQL."""

import json
from dataclasses import dataclass, field

from .errors import EmbedkitError


def parse_filter(text: str):
    """KEY=VALUE from the command line as (key, value)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise EmbedkitError(f"filter {text!r} is not KEY=VALUE")
    return key, value


def json_path(key) -> str:
    return "$." + json.dumps(str(key))


def alternatives(value) -> list:
    """The JSON values a filter value matches: itself, and the number a text value spells
    (page=3 matches {"page": 3}), since values from the command line are always text."""
    matches = [value]
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if isinstance(parsed, (int, float)):  # bool is an int: true matches JSON true (1)
            matches.append(parsed)
    return matches


def metadata_condition(metadata: dict):
    """SQL matching rows whose metadata has every key/value pair, and its parameters."""
    if not metadata:
        raise EmbedkitError("no metadata to match")
    clauses, params = [], []
    for key, value in metadata.items():
        matches = alternatives(value)
        clauses.append(f"json_extract(metadata, ?) in ({', '.join('?' * len(matches))})")
        params += [json_path(key), *matches]
    return " and ".join(clauses), params


@dataclass(frozen=True)
class Filter:
    """Items to search among, applied before ranking so that n results come back whenever n
    items match: metadata key/values (all must match) and an SQL condition on the table."""

    metadata: dict = field(default_factory=dict)
    where: str | None = None

    def __bool__(self):
        return bool(self.metadata or self.where)

    def condition(self):
        """(SQL boolean expression over the collection table's columns, its parameters)."""
        clauses, params = [], []
        if self.metadata:
            clause, params = metadata_condition(self.metadata)
            clauses.append(clause)
        if self.where:
            clauses.append(f"({self.where})")
        return " and ".join(clauses) or "1", params
