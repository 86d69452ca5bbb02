"""Splitting text into chunks small enough to embed."""

import re
from collections.abc import Callable
from dataclasses import dataclass

from .errors import EmbedkitError

METHODS = ("chars", "recursive", "tokens")
# The size of chunks counted in characters, when none is given or recorded.
DEFAULT_CHARS = 1000

# Where "recursive" and "tokens" cut, coarsest first, before cutting between characters.
# Each pattern takes the whitespace after its separator too, and the cut goes after the
# match: punctuation stays with its sentence, no piece starts with whitespace, and the
# pieces join back into the exact text.
SEPARATORS = (
    re.compile(r"\n\s*\n\s*"),  # paragraphs
    re.compile(r"\n\s*"),  # lines
    re.compile(r"[.!?]+[\"')\]’”]*\s+|[。！？]+[」』”’）]*\s*"),  # sentences
    re.compile(r";\s+|；\s*"),
    re.compile(r",\s+|[，、]\s*"),
    re.compile(r"\s+"),  # words
)


@dataclass(frozen=True)
class Chunker:
    """How to split texts: size and overlap count characters, or for "tokens" what length
    returns (the model tokenizer's token count)."""

    method: str = "recursive"
    size: int = 1000
    overlap: int = 100
    length: Callable[[str], int] | None = None
    # Late chunking: each chunk's vector pooled from the model's pass over the whole text
    # (EmbeddingModel.embed_late) rather than embedded from the chunk alone.
    late: bool = False

    def __post_init__(self):
        if self.method not in METHODS:
            raise EmbedkitError(f"--chunker must be one of {', '.join(METHODS)}, not {self.method!r}")
        if not isinstance(self.size, int) or self.size < 1:
            raise EmbedkitError(f"--chunk-size ({self.size}) must be a whole number of at least 1")
        if not isinstance(self.overlap, int) or self.overlap < 0:
            raise EmbedkitError(f"--chunk-overlap ({self.overlap}) must be a whole number of at least 0")
        if self.overlap >= self.size:
            raise EmbedkitError(f"--chunk-overlap ({self.overlap}) must be smaller than --chunk-size ({self.size})")
        if self.method == "tokens" and self.length is None:
            raise EmbedkitError("--chunker tokens needs a model with a tokenizer to count tokens")

    @property
    def signature(self) -> str:
        """What decides the chunks (not the length function: a collection has one model)."""
        return f"{self.method}:{self.size}:{self.overlap}" + (":late" if self.late else "")

    @property
    def settings(self) -> dict:
        # "late" only when on: settings recorded before late chunking existed stay equal.
        return {"method": self.method, "size": self.size, "overlap": self.overlap, **({"late": True} if self.late else {})}

    def split(self, text: str) -> list[str]:
        """The chunks of text, whitespace-stripped, none longer than size."""
        return [text[start:end] for start, end in self.spans(text)]

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Where the chunks of split(text) are in text: (start, end) character offsets."""
        body = text.strip()
        if not body:
            return []
        lead = len(text) - len(text.lstrip())
        if self.method == "chars":
            spans = self._windows(body)
        else:
            measure = self.length if self.method == "tokens" and self.length is not None else len
            if measure(body) <= self.size:
                spans = [(0, len(body))]
            else:
                # Pieces are spans of text: piece i runs from bounds[i] to bounds[i + 1].
                bounds = [0]
                self._cut_to_fit(body, 0, len(body), 0, measure, bounds)
                spans = self._merge(body, bounds, measure)
        return [(lead + start, lead + end) for start, end in spans]

    def _windows(self, text):
        step = self.size - self.overlap
        # A window starts only while the previous one stopped short of the end.
        starts = range(0, max(len(text) - self.overlap, 1), step)
        spans = (_strip(text, start, min(start + self.size, len(text))) for start in starts)
        return [(start, end) for start, end in spans if end > start]

    def _cut_to_fit(self, text, start, end, level, measure, bounds):
        """Append to bounds the ends of the pieces of text[start:end], which is too long: cut at
        the coarsest separator (from level on) that occurs in it, and again in parts still too long."""
        for depth in range(level, len(SEPARATORS)):
            cuts = [match.end() for match in SEPARATORS[depth].finditer(text, start, end) if match.end() < end]
            if cuts:
                for a, b in zip([start, *cuts], [*cuts, end]):
                    if measure(text[a:b].strip()) <= self.size:
                        bounds.append(b)
                    else:
                        self._cut_to_fit(text, a, b, depth + 1, measure, bounds)
                return
        # The last resort: single characters, each distinct one measured once (a whole book
        # without spaces is a million pieces). Only a token count can make one too long, and
        # dropping it would lose text silently.
        body_end = start + len(text[start:end].rstrip())
        for char in dict.fromkeys(text[start:body_end]):
            if measure(char) > self.size:
                raise EmbedkitError(
                    f"--chunk-size ({self.size}) is too small: {char!r} alone is {measure(char)} tokens"
                )
        bounds.extend(range(start + 1, body_end))
        bounds.append(end)

    def _merge(self, text, bounds, measure):
        """The spans of adjacent pieces joined greedily into chunks of at most size, each
        starting with as many of the previous chunk's last pieces as fit in overlap.

        Every chunk is measured as it will be returned, since token counts do not add up.
        """

        def fits(first, stop, limit):
            return measure(text[bounds[first] : bounds[stop]].strip()) <= limit

        chunks = []
        start = end = 0
        while end < len(bounds) - 1:
            if chunks:
                # At least one piece is let go so that the next chunk differs from this one.
                keep = _furthest(
                    0,
                    end - start - 1,
                    lambda n: fits(end - n, end, self.overlap) and fits(end - n, end + 1, self.size),  # noqa: B023 (called here)
                )
                start = end - keep
            end = _furthest(end + 1, len(bounds) - 1, lambda stop: fits(start, stop, self.size))  # noqa: B023
            chunks.append(_strip(text, bounds[start], bounds[end]))
        return chunks


def for_model(model, prefix: str = "", recorded: dict | None = None, method: str | None = None,
              size: int | None = None, overlap: int | None = None, late: bool | None = None) -> Chunker:
    """The Chunker for a collection of model (whose texts start with prefix) that recorded
    the settings `recorded`, with method, size, overlap or late given instead of them (another
    method starts from its own defaults; late stays as recorded unless given).

    With nothing recorded, the default fits what the model reads: "tokens" as many as it
    reads when it has a tokenizer, else "recursive" chunks of 1000 characters. The overlap
    defaults to a tenth of the size. "tokens" counts the model's tokens, prefix included.
    """
    base = recorded if recorded and method in (None, recorded["method"]) else {}
    if size is None or size == base.get("size"):
        size = base.get("size")
        overlap = base.get("overlap") if overlap is None else overlap
    method = method or base.get("method") or ("tokens" if model.max_tokens is not None else "recursive")
    length = None
    if method == "tokens":
        # A recorded size was checked when recorded: asking the model (loading it, for some)
        # would make a re-run over unchanged documents slow.
        if size is None or size != base.get("size"):
            limit = model.max_tokens
            if limit is None:
                model.count_tokens([""])  # says why this model cannot count tokens
            if size is not None and size > limit:
                raise EmbedkitError(
                    f"--chunk-size ({size}) is more tokens than the {limit} {model.model_id} reads: "
                    f"use at most {limit}, or --chunker recursive to count characters"
                )
            size = size or limit
        length = lambda text: model.count_tokens([prefix + text])[0]  # noqa: E731
    size = size or DEFAULT_CHARS
    late = bool((recorded or {}).get("late")) if late is None else late
    if late and not (recorded or {}).get("late"):
        model.check_late_chunking()  # a recorded setting was checked when recorded, as above
    return Chunker(method, size, size // 10 if overlap is None else overlap, length, late)


def describe(settings: dict) -> str:
    """Recorded chunking settings in words."""
    kind = {"tokens": "chunks of at most {} tokens", "recursive": "recursive chunks of at most {} characters",
            "chars": "fixed windows of {} characters"}[settings["method"]]
    late = ", late-chunked" if settings.get("late") else ""
    return f"{kind.format(settings['size'])} (overlap {settings['overlap']}{late})"


def _strip(text, start, end) -> tuple[int, int]:
    """The span of text[start:end].strip()."""
    piece = text[start:end]
    return start + len(piece) - len(piece.lstrip()), start + len(piece.rstrip())


def _furthest(lo, hi, ok):
    """The largest x in lo..hi with ok(x), given ok(lo) and that ok stays false once false.

    Probes go out from lo by 1, 2, 4, ... then bisect, so that when ok costs more the further
    x is from lo (measuring a longer chunk), the probes cost about as much as the answer.
    If ok is not monotonic (token counts), the answer still satisfies ok.
    """
    step = 1
    while lo + step <= hi and ok(lo + step):
        lo += step
        step *= 2
    bad = min(lo + step, hi + 1)
    while bad - lo > 1:
        middle = (lo + bad) // 2
        if ok(middle):
            lo = middle
        else:
            bad = middle
    return lo
