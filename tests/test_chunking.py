import random
import time

import pytest

from embedkit.chunking import METHODS, Chunker
from embedkit.errors import EmbedkitError

LATIN = "the quick brown fox jumps over a lazy dog while seven wizards box and hum quietly".split()
HEBREW = "שלום עולם ספר מים אור ארץ שמים ילד בית לחם טוב מאוד היום".split()
CJK = "这是一个测试没有空格的文本很长我们今天去公园散步天气非常好"


def words(count, seed=0):
    rng = random.Random(seed)
    return [rng.choice(LATIN) for _ in range(count)]


def prose(paragraphs=12, seed=0):
    rng = random.Random(seed)
    return "\n\n".join(
        " ".join(
            " ".join(words(rng.randint(3, 18), rng.random())).capitalize() + rng.choice(".!?")
            for _ in range(rng.randint(1, 8))
        )
        for _ in range(paragraphs)
    )


def huge_word(length=3000, seed=0):
    rng = random.Random(seed)
    return "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=length))


def cjk(length=2000, seed=0):
    rng = random.Random(seed)
    return "".join(rng.choice(CJK) + ("。" if rng.random() < 0.02 else "") for _ in range(length))


def hebrew(count=400, seed=0):
    rng = random.Random(seed)
    return " ".join(rng.choice(HEBREW) + ("." if rng.random() < 0.1 else "") for _ in range(count))


TEXTS = {
    "prose": prose(),
    "huge word": huge_word(),
    "cjk": cjk(),
    "hebrew": hebrew(),
    "newlines": "\n" * 500,
    "mixed": prose(3, 1) + "\n" + huge_word(700, 1) + "\n\n" + cjk(300, 1) + " " + hebrew(60, 1),
}


def word_count(text):
    return len(text.split())


def ab_words(text):
    """Not additive: pieces "xa" and "b y" count 2 + 2, "xab y" counts 3."""
    return len(text.split()) + text.count("ab")


def ab_chars(text):
    """More than the sum of its parts: "a" and "b" count 1 each, "ab" counts 5."""
    return len(text) + 3 * text.count("ab")


def quarters(text):
    """Less than the sum of its parts, like real subword tokens: about 4 characters each."""
    return (len(text) + 3) // 4


def chunker(method, size, overlap, length=word_count):
    return Chunker(method, size, overlap, length if method == "tokens" else None)


def measure(c):
    return c.length if c.method == "tokens" else len


def squash(text):
    return "".join(text.split())


def assert_no_text_lost(text, chunks):
    """Each chunk is a stretch of text; whitespace aside, each starts no earlier than the previous
    one and no later than where it ends (the overlap), and together they cover all of text."""
    flat = squash(text)
    # Where the previous chunk may be in flat: (start, end) pairs, more than one when text repeats.
    spans = {(0, 0)}
    for chunk in chunks:
        assert chunk in text
        part = squash(chunk)
        found = set()
        for start, end in spans:
            at = flat.find(part, start)
            while at != -1 and at <= end:
                if at + len(part) >= end:
                    found.add((at, at + len(part)))
                at = flat.find(part, at + 1)
        assert found, f"{chunk!r} does not continue the chunks before it"
        spans = found
    assert any(end == len(flat) for _, end in spans), "the end of the text is missing"


def assert_good_chunks(c, text, chunks):
    assert all(measure(c)(chunk) <= c.size for chunk in chunks)
    assert all(chunk and chunk == chunk.strip() for chunk in chunks)
    assert_no_text_lost(text, chunks)
    if c.overlap == 0:
        assert squash("".join(chunks)) == squash(text)


SIZES = [(1, 0), (2, 1), (5, 0), (7, 3), (16, 4), (50, 10), (100, 0), (200, 199), (1000, 100)]


@pytest.mark.parametrize("name", TEXTS)
@pytest.mark.parametrize("size, overlap", SIZES)
@pytest.mark.parametrize("method", METHODS)
def test_chunks_fit_and_keep_all_text(method, size, overlap, name):
    c = chunker(method, size, overlap)
    text = TEXTS[name]
    chunks = c.split(text)
    assert_good_chunks(c, text, chunks)
    assert (chunks == []) == (text.strip() == "")


@pytest.mark.parametrize("length", [word_count, ab_words, ab_chars, quarters])
@pytest.mark.parametrize("size, overlap", [(1, 0), (2, 1), (3, 0), (6, 2), (20, 5), (64, 8)])
@pytest.mark.parametrize("text", [prose(4), "ab" * 150, "cab dab " * 40 + "xa by " * 20, cjk(400), hebrew(100)])
def test_tokens_never_exceed_with_uneven_counts(length, size, overlap, text):
    c = Chunker("tokens", size, overlap, length)
    assert_good_chunks(c, text, c.split(text))


def random_text(rng):
    parts = []
    for _ in range(rng.randint(0, 120)):
        kind = rng.random()
        if kind < 0.5:
            parts.append(rng.choice(LATIN))
        elif kind < 0.6:
            parts.append(rng.choice(HEBREW))
        elif kind < 0.7:
            parts.append("".join(rng.choice(CJK) for _ in range(rng.randint(1, 30))))
        elif kind < 0.75:
            parts.append(huge_word(rng.randint(20, 400), rng.random()))
        elif kind < 0.85:
            parts.append(rng.choice([".", "!", "?", ";", ",", "。", "！", "？", "，", "…", ".)", "🙂"]))
        parts.append(rng.choice([" "] * 10 + ["\n", "\n\n", "\t", "  ", "\u3000", "\xa0", " \n \n ", ""]))
    return "".join(parts)


@pytest.mark.parametrize("seed", range(200))
def test_random_texts(seed):
    rng = random.Random(seed)
    text = random_text(rng)
    size = rng.choice([1, 2, 3, 5, 8, 13, 30, 80, 200, 500])
    c = chunker(rng.choice(METHODS), size, rng.randrange(size), rng.choice([word_count, ab_words, ab_chars, quarters]))
    chunks = c.split(text)
    assert_good_chunks(c, text, chunks)
    assert chunks == c.split(text) == Chunker(c.method, c.size, c.overlap, c.length).split(text)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("text", ["", "   ", "\n" * 1000, " \t\n\u3000\xa0 "])
def test_blank_text_has_no_chunks(method, text):
    assert chunker(method, 10, 2).split(text) == []


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("text", ["one", "  a short text.\n\nTwo paragraphs.  \n", "\n\nשלום עולם\n", "今天天气很好。"])
def test_text_that_fits_is_one_stripped_chunk(method, text):
    assert chunker(method, 40, 10).split(text) == [text.strip()]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("size, overlap", [(30, 10), (60, 15), (100, 50), (250, 30)])
def test_consecutive_chunks_overlap(method, size, overlap):
    # Unique words, so each chunk's place in the text is known.
    text = " ".join(f"w{i}" for i in range(600))
    c = chunker(method, size, overlap)
    chunks = c.split(text)
    assert len(chunks) >= 3
    for before, after in zip(chunks, chunks[1:]):
        start = text.index(before)
        end = text.index(after, start + 1)
        shared = text[end : start + len(before)]
        assert shared.strip(), f"{before!r} and {after!r} share nothing"
        assert measure(c)(shared.strip()) <= overlap


@pytest.mark.parametrize(
    "method, text, one_more",
    [("chars", "abc defg", "h"), ("recursive", "abc defg", "h"), ("tokens", "a b c d e f g h", " i")],
)
def test_size_is_a_limit(method, text, one_more):
    c = chunker(method, 8, 0)
    assert c.split(text) == [text]
    assert len(c.split(text + one_more)) == 2


@pytest.mark.parametrize(
    "size, overlap, text, expected",
    [
        (4, 1, "abcdefghij", ["abcd", "defg", "ghij"]),
        (4, 1, "abcdefghijk", ["abcd", "defg", "ghij", "jk"]),
        (6, 2, "abcdefghij", ["abcdef", "efghij"]),
        (3, 0, "abcdefgh", ["abc", "def", "gh"]),
        (5, 4, "abcdefg", ["abcde", "bcdef", "cdefg"]),
        (4, 0, "ab  cd  ef", ["ab", "cd", "ef"]),
        (10, 3, "  abcdefghijklmno  ", ["abcdefghij", "hijklmno"]),
    ],
)
def test_chars_windows(size, overlap, text, expected):
    assert Chunker("chars", size, overlap).split(text) == expected


@pytest.mark.parametrize("size, overlap", [(10, 0), (10, 3), (64, 63), (100, 20)])
def test_recursive_without_separators_cuts_like_chars(size, overlap):
    text = huge_word(1000)
    assert Chunker("recursive", size, overlap).split(text) == Chunker("chars", size, overlap).split(text)


def test_recursive_ends_chunks_at_paragraph_breaks():
    first = "The first paragraph. It has two sentences."
    second = "The second one is here. Also two."
    third = "A third paragraph follows the second one."
    text = f"{first}\n\n{second}\n\n{third}"
    exact = len(first) + 2 + len(second)
    for size in (exact, exact + 5):
        assert Chunker("recursive", size, 0).split(text) == [f"{first}\n\n{second}", third]
    # One character less and the second paragraph no longer fits beside the first.
    assert Chunker("recursive", exact - 1, 0).split(text) == [first, f"{second}\n\n{third}"]


def test_recursive_keeps_a_paragraph_whole_rather_than_filling_up_with_its_first_line():
    text = "Short intro.\n\nfirst line of two\nsecond line of two\n\nEnd."
    assert Chunker("recursive", 36, 0).split(text) == [
        "Short intro.",
        "first line of two\nsecond line of two",
        "End.",
    ]


@pytest.mark.parametrize("size", [50, 75, 100, 150])
def test_recursive_ends_chunks_at_sentences_before_words(size):
    text = " ".join(
        f"Sentence number {i} has {'a few' if i % 2 else 'several more'} words in it{'!' if i % 3 else '.'}"
        for i in range(30)
    )
    for chunk in Chunker("recursive", size, 0).split(text):
        assert chunk[0].isupper() and chunk[-1] in ".!"


def test_recursive_keeps_punctuation_with_its_sentence():
    assert Chunker("recursive", 14, 0).split("Hello world. How are you? Fine!") == [
        "Hello world.",
        "How are you?",
        "Fine!",
    ]
    assert Chunker("recursive", 8, 0).split("今天天气很好。我们去公园吧！你觉得呢？") == [
        "今天天气很好。",
        "我们去公园吧！",
        "你觉得呢？",
    ]
    assert Chunker("recursive", 15, 0).split('He said "stop." Then he left.') == ['He said "stop."', "Then he left."]


def test_recursive_cuts_lines_before_sentences_and_clauses_before_words():
    assert Chunker("recursive", 19, 0).split("line one. still one\nline two") == ["line one. still one", "line two"]
    assert Chunker("recursive", 19, 0).split("first clause, second clause; third") == [
        "first clause,",
        "second clause;",
        "third",
    ]


def test_tokens_counts_tokens_not_characters():
    text = " ".join(words(300))
    chunks = Chunker("tokens", 20, 0, word_count).split(text)
    assert [len(chunk.split()) for chunk in chunks] == [20] * 15


def test_tokens_calls_length_a_number_of_times_linear_in_the_text():
    calls = []

    def counting(text):
        calls.append(len(text))
        return len(text.split())

    text = prose(200, 3)
    chunks = Chunker("tokens", 64, 8, counting).split(text)
    assert len(chunks) > 50
    assert len(calls) < len(text.split()) / 2
    # Nothing much longer than a chunk is measured, apart from the text and its paragraphs.
    assert sum(calls) < 40 * len(text)


def test_tokens_stops_on_pieces_that_cannot_be_merged():
    assert Chunker("tokens", 2, 1, ab_chars).split("ab" * 3) == ["a", "ba", "ba", "b"]


def test_tokens_too_small_for_one_character():
    with pytest.raises(EmbedkitError, match=r"--chunk-size \(1\) is too small: 'a' alone is 2 tokens"):
        Chunker("tokens", 1, 0, lambda text: 2 * len(text)).split("abc")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": "words"}, "--chunker must be one of chars, recursive, tokens, not 'words'"),
        ({"size": 0, "overlap": 0}, r"--chunk-size \(0\) must be a whole number of at least 1"),
        ({"size": -5, "overlap": 0}, r"--chunk-size \(-5\)"),
        ({"size": 2.5, "overlap": 0}, r"--chunk-size \(2.5\)"),
        ({"overlap": -1}, r"--chunk-overlap \(-1\) must be a whole number of at least 0"),
        ({"size": 800, "overlap": 1000}, r"--chunk-overlap \(1000\) must be smaller than --chunk-size \(800\)"),
        ({"size": 100, "overlap": 100}, r"--chunk-overlap \(100\) must be smaller than --chunk-size \(100\)"),
        ({"method": "tokens"}, "--chunker tokens needs a model with a tokenizer"),
    ],
)
def test_invalid_options(kwargs, message):
    with pytest.raises(EmbedkitError, match=message) as raised:
        Chunker(**kwargs)
    assert "\n" not in str(raised.value)


def test_defaults():
    c = Chunker()
    assert (c.method, c.size, c.overlap, c.length) == ("recursive", 1000, 100, None)


@pytest.mark.parametrize("method", ["chars", "recursive"])
@pytest.mark.parametrize("text", [(prose() + "\n\n") * 380, huge_word(1_000_000)], ids=["prose", "one word"])
def test_a_megabyte_splits_fast(method, text):
    started = time.perf_counter()
    chunks = Chunker(method).split(text)
    assert time.perf_counter() - started < 1
    assert len(chunks) > 1000
