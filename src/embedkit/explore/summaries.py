"""Names and one-sentence summaries of clusters by a chat model: the prompt (a cluster's
distinctive terms and its most central items' text, bounded) and the strict reading of the
answer, a JSON object {"name": ..., "summary": ...}."""

import json
import re

ITEMS = 5  # most central items shown to the model
SNIPPET = 300  # characters of each item's text
NAME_CHARS = 60
SUMMARY_CHARS = 300

INSTRUCTIONS = (
    "You name clusters of documents. You are given a cluster's most distinctive terms and the "
    "text of its most typical items. Answer with one JSON object and nothing else: "
    '{"name": "<a short name, at most five words>", '
    '"summary": "<one sentence saying what the items have in common>"}'
)

FENCE = re.compile(r"```(?:json)?\s*(.*?)\s*```", re.S)
# Reasoning models (on Ollama, say) may think aloud before answering.
THINKING = re.compile(r"^<think>.*?</think>", re.S)


def snippet(text: str) -> str:
    """text on one line, cut at a word to at most SNIPPET characters."""
    text = " ".join(text.split())
    if len(text) <= SNIPPET:
        return text
    cut = text[: SNIPPET - 1]
    return (cut.rsplit(" ", 1)[0] if " " in cut else cut) + "…"


def messages(size: int, terms: list, texts: list) -> list:
    """The chat messages that ask for the name and summary of a cluster of size items."""
    lines = [f"A cluster of {size} item{'s' * (size != 1)}.",
             f"Distinctive terms: {', '.join(terms) if terms else '(none)'}",
             "Most typical items:"]
    lines += [f"{number}. {snippet(text)}" for number, text in enumerate(texts, 1)]
    return [{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": "\n".join(lines)}]


def parse(answer: str) -> tuple[str, str] | None:
    """(name, summary) from an answer that is one JSON object (alone or in one code fence)
    whose "name" and "summary" are one-line strings, not empty and not too long; else None."""
    text = THINKING.sub("", answer.strip()).strip()
    fenced = FENCE.fullmatch(text)
    try:
        value = json.loads(fenced.group(1) if fenced else text)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    name, summary = value.get("name"), value.get("summary")
    if not isinstance(name, str) or not isinstance(summary, str):
        return None
    name, summary = name.strip(), summary.strip()
    if not (0 < len(name) <= NAME_CHARS and 0 < len(summary) <= SUMMARY_CHARS) or "\n" in name + summary:
        return None
    return name, summary
