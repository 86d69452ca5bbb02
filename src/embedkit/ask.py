"""Answers with citations (retrieval-augmented generation): find the passages of a
collection that best match a question, number them, and ask a chat model to answer from
them alone, citing them as [1], [2], ...

    passages = ask.retrieve(collection, "which tokens can skip a layer?")
    for piece in ask.answer(chat.get_chat_model("ollama/llama3.2"), question, passages):
        print(piece, end="")
    print(ask.sources(passages))
"""

import os
from collections.abc import Iterator
from dataclasses import dataclass

from .errors import EmbedkitError
from .items import Entry

# Passages given to the model by default: enough to cover a question that spans documents,
# few enough for small local models' context windows.
PASSAGES = 5

INSTRUCTIONS = (
    "Answer the question using only the numbered passages below. Cite the passages you use "
    "by their numbers in square brackets, like [1] or [2][3]. If the passages do not contain "
    "the answer, say that they do not."
)


@dataclass
class Passage:
    """A search result numbered for citing."""

    number: int
    entry: Entry

    @property
    def title(self) -> str:
        """The document's title, else its file or URL (the last part of a path), else the id."""
        metadata = self.entry.metadata or {}
        if metadata.get("title"):
            return str(metadata["title"])
        source = metadata.get("source")
        if source:
            source = str(source).rstrip("/")
            return source if "://" in source else os.path.basename(source) or source
        return str(self.entry.id)

    @property
    def page(self):
        return (self.entry.metadata or {}).get("page")

    def citation(self) -> str:
        """[n] title, page p (score s)"""
        page = f", page {self.page}" if self.page is not None else ""
        return f"[{self.number}] {self.title}{page} (score {self.entry.score:.4f})"

    def to_dict(self) -> dict:
        return {"number": self.number, "title": self.title, "page": self.page, **self.entry.to_dict()}


def retrieve(collection, question: str, n: int = PASSAGES, mode: str = "hybrid", min_score=None,
             **search) -> list:
    """The n passages of collection that best match question, numbered from 1.

    search takes Collection.similar's options (unique, metadata, where, mmr, exact, ...).
    Raises EmbedkitError when the collection stores no text (there would be nothing to
    quote) or, with min_score, when no passage scores that much: there is then nothing to
    answer from, and no model is asked.
    """
    if not question or not question.strip():
        raise EmbedkitError("the question is empty")
    entries = collection.similar(question, n, mode=mode, **search)
    if entries and all(entry.content is None for entry in entries):
        raise EmbedkitError(
            f"collection {collection.name!r} stores no text to quote: embed it with embed-multi --store"
        )
    passages = [Passage(number, entry) for number, entry in enumerate((e for e in entries if e.content), 1)]
    if min_score is not None:
        best = max((p.entry.score or 0.0 for p in passages), default=None)
        passages = [p for p in passages if p.entry.score >= min_score]
        if not passages:
            found = f"the best one scores {best:.4f}" if best is not None else "nothing matches"
            raise NoPassage(f"no passage of collection {collection.name!r} scores {min_score:g} or more ({found})")
        passages = [Passage(number, p.entry) for number, p in enumerate(passages, 1)]
    if not passages:
        raise NoPassage(f"no passage of collection {collection.name!r} matches the question")
    return passages


class NoPassage(EmbedkitError):
    """Nothing good enough to answer from."""


def context(passages) -> str:
    """The passages as numbered, prompt-ready text."""
    blocks = []
    for passage in passages:
        page = f", page {passage.page}" if passage.page is not None else ""
        blocks.append(f"[{passage.number}] {passage.title}{page}\n{passage.entry.content.strip()}")
    return "\n\n".join(blocks)


def context_json(question: str, passages) -> dict:
    return {"question": question, "passages": [passage.to_dict() for passage in passages]}


def messages(question: str, passages) -> list:
    """The chat messages that ask model to answer question from passages."""
    return [
        {"role": "system", "content": INSTRUCTIONS},
        {"role": "user", "content": f"{context(passages)}\n\nQuestion: {question.strip()}"},
    ]


def answer(model, question: str, passages) -> Iterator[str]:
    """The model's answer, streamed in pieces."""
    return model.stream(messages(question, passages))


def sources(passages) -> str:
    """One line per passage: [n] title, page p (score s)."""
    return "\n".join(passage.citation() for passage in passages)
