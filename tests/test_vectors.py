"""Vectors as little-endian float32 BLOBs: the byte format `llm` and sqlite-vec use."""

import json
import math
import struct

import numpy as np
import pytest

from embedkit import EmbedkitError, vectors


def llm_encode(values):
    """How the `llm` tool writes an embedding."""
    return struct.pack("<" + "f" * len(values), *values)


@pytest.mark.parametrize(
    "values",
    [
        [1.0],
        [0.1, -0.2, 0.3],
        [1e-38, -3.4e38, 123456.789, 0.0, -0.0],
        list(np.random.default_rng(7).standard_normal(384)),
    ],
)
def test_encode_is_byte_identical_to_llm(values):
    blob = vectors.encode(values)
    assert isinstance(blob, bytes)
    assert blob == llm_encode(values)
    assert len(blob) == 4 * len(values)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, ">f4", np.int64])
def test_encode_accepts_any_numeric_array_and_writes_little_endian(dtype):
    array = np.array([1, -2, 3, 40000], dtype=dtype)
    assert vectors.encode(array) == llm_encode([1, -2, 3, 40000])


def test_decode_round_trip_and_llm_blobs():
    values = [0.5, -1.25, 3.0e-5, 7.0]
    decoded = vectors.decode(llm_encode(values))
    assert decoded.dtype == np.dtype("<f4")
    assert decoded.tolist() == pytest.approx(values, rel=1e-7)
    assert vectors.encode(decoded) == llm_encode(values)
    # llm reads what embedkit writes
    assert list(struct.unpack("<4f", vectors.encode(values))) == decoded.tolist()


def test_decode_accepts_bytearray_and_memoryview():
    blob = llm_encode([1.0, 2.0])
    for value in (bytearray(blob), memoryview(blob)):
        assert vectors.decode(value).tolist() == [1.0, 2.0]


def test_decode_does_not_copy_and_is_read_only():
    decoded = vectors.decode(llm_encode([1.0, 2.0]))
    with pytest.raises(ValueError):
        decoded[0] = 5


def test_encode_rejects_matrices():
    with pytest.raises(EmbedkitError, match="one-dimensional"):
        vectors.encode([[1.0, 2.0], [3.0, 4.0]])


@pytest.mark.parametrize(
    "blob, message",
    [
        (None, "NULL"),
        (b"", "multiple of 4 bytes, got 0"),
        (b"\x00\x00\x80", "multiple of 4 bytes, got 3"),
        (b"\x00" * 9, "multiple of 4 bytes, got 9"),
        ("[1, 2]", "must be a BLOB, got str"),
        (12, "must be a BLOB, got int"),
        (1.5, "must be a BLOB, got float"),
    ],
)
def test_decode_rejects_bad_input(blob, message):
    with pytest.raises(EmbedkitError, match=message):
        vectors.decode(blob)


def test_from_json_and_to_json_round_trip_exactly():
    blob = vectors.from_json("[0.1, -2, 3.5e-3, 1e10]")
    assert blob == llm_encode([0.1, -2, 3.5e-3, 1e10])
    text = vectors.to_json(blob)
    assert isinstance(json.loads(text), list)
    assert vectors.from_json(text) == blob  # JSON keeps every bit of the float32 values
    assert json.loads(vectors.to_json(llm_encode([1.0, -0.5]))) == [1.0, -0.5]


def test_to_json_round_trips_random_vectors_exactly():
    values = np.random.default_rng(3).standard_normal(384).astype("<f4")
    blob = values.tobytes()
    assert vectors.from_json(vectors.to_json(blob)) == blob


@pytest.mark.parametrize(
    "text",
    ["", "not json", "[]", "{}", '{"a": 1}', "1.5", '"[1, 2]"', '[1, "2"]', "[1, null]", "[true, false]", "[[1, 2]]", None],
)
def test_from_json_rejects_anything_but_an_array_of_numbers(text):
    with pytest.raises(EmbedkitError, match="not a JSON array of numbers"):
        vectors.from_json(text)


def test_check_accepts_a_good_vector_and_returns_it():
    vector = np.array([0.0, 1.0, -2.0], dtype=np.float32)
    assert vectors.check(vector, 3) is vector
    assert vectors.check(vector) is vector


@pytest.mark.parametrize(
    "values, dimensions, message",
    [
        ([0.0, 0.0, 0.0], 3, "all zeros"),
        ([0.0, -0.0], None, "all zeros"),
        ([1.0, math.nan, 2.0], 3, "NaN or infinite"),
        ([1.0, math.inf], None, "NaN or infinite"),
        ([1.0, 2.0], 3, "has 2 dimensions, expected 3"),
        ([1.0, 2.0, 3.0, 4.0], 3, "has 4 dimensions, expected 3"),
    ],
)
def test_check_rejects_vectors_that_cannot_be_compared(values, dimensions, message):
    with pytest.raises(EmbedkitError, match=message):
        vectors.check(np.array(values, dtype=np.float32), dimensions, "the query vector")


def test_check_names_what_it_checked():
    with pytest.raises(EmbedkitError, match="^the vector for 'x' is all zeros"):
        vectors.check(np.zeros(2, dtype=np.float32), 2, "the vector for 'x'")


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ([1, 0], [1, 0], 1.0),
        ([1, 0], [0, 1], 0.0),
        ([1, 0], [-1, 0], -1.0),
        ([1, 2, 3], [2, 4, 6], 1.0),
        ([1, 2, 3], [4, 5, 6], 32 / math.sqrt(14 * 77)),
        ([3, 4], [4, 3], 24 / 25),
    ],
)
def test_cosine(a, b, expected):
    result = vectors.cosine(np.array(a, dtype=np.float32), np.array(b, dtype=np.float32))
    assert isinstance(result, float)
    assert result == pytest.approx(expected, abs=1e-7)


def test_cosine_is_scale_invariant_and_matches_numpy():
    rng = np.random.default_rng(11)
    a, b = rng.standard_normal((2, 384)).astype(np.float32)
    expected = float(np.dot(a.astype(np.float64), b) / (np.linalg.norm(a.astype(np.float64)) * np.linalg.norm(b.astype(np.float64))))
    assert vectors.cosine(a, b) == pytest.approx(expected, abs=1e-6)
    assert vectors.cosine(a * 1000, b / 1000) == pytest.approx(expected, abs=1e-6)


def test_cosine_errors():
    with pytest.raises(EmbedkitError, match="dimension mismatch: 2 vs 3"):
        vectors.cosine(np.ones(2, dtype=np.float32), np.ones(3, dtype=np.float32))
    with pytest.raises(EmbedkitError, match="zero vector"):
        vectors.cosine(np.zeros(2, dtype=np.float32), np.ones(2, dtype=np.float32))
    with pytest.raises(EmbedkitError, match="zero vector"):
        vectors.cosine(np.ones(2, dtype=np.float32), np.zeros(2, dtype=np.float32))


def test_normalize_rows():
    matrix = np.array([[3, 4], [0, 0], [0, 2]], dtype=np.float32)
    result = vectors.normalize_rows(matrix)
    assert result is matrix  # in place
    assert np.allclose(result, [[0.6, 0.8], [0.0, 0.0], [0.0, 1.0]], atol=1e-7)
    assert np.allclose(np.linalg.norm(result[[0, 2]], axis=1), 1.0)
