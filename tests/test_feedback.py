"""Stop words, RM3, Rocchio and convex fusion: the pure functions behind the ranking options."""

import numpy as np
import pytest

from embedkit import feedback


def test_stop_words_leave_the_content_words():
    assert feedback.content_words("What are the problems of heat conduction in slabs?") == [
        "problems", "heat", "conduction", "slabs"
    ]
    # A query of stop words only is kept whole rather than emptied.
    assert feedback.content_words("to be or not to be") == ["to", "be", "or", "not"]
    assert feedback.without_stop_words("how does sqlite-vec store vectors") == "sqlite-vec store vectors"
    assert feedback.without_stop_words("who are you") == "who are you"


def test_rm3_mixes_the_query_with_words_of_the_top_documents():
    documents = [
        ("heat conduction in composite slabs with layers", 12.0),
        ("conduction of heat through layered slabs", 11.0),
        ("bread needs heat", 1.0),
    ]
    weights = feedback.rm3_terms("heat conduction", documents, terms=4, weight=0.5)
    assert sum(weights.values()) == pytest.approx(1.0)
    assert weights["heat"] > 0.25 and weights["conduction"] > 0.25  # half the mass, plus their share
    assert "slabs" in weights  # in both top documents
    assert "bread" not in weights  # only in a document far down: its share is tiny
    assert feedback.rm3_terms("heat", [], weight=0.5) == {"heat": 0.5}


def test_rocchio_moves_the_query_toward_the_results():
    query = np.array([1.0, 0.0, 0.0])
    results = np.array([[0.0, 2.0, 0.0], [0.0, 1.0, 0.0]])
    moved = feedback.rocchio(query, results, 0.5)
    assert np.linalg.norm(moved) == pytest.approx(1.0)
    assert moved[0] == pytest.approx(moved[1])  # half way between (1,0,0) and (0,1,0)
    assert np.allclose(feedback.rocchio(query, np.zeros((0, 3)), 0.5), query)


def test_convex_fusion_normalises_each_list():
    dense = [("a", 0.9), ("b", 0.5), ("c", 0.1)]
    keyword = [("c", 30.0), ("b", 20.0)]
    fused = dict(feedback.convex([dense, keyword], [0.5, 0.5]))
    assert fused == pytest.approx({"a": 0.5, "b": 0.25, "c": 0.5})
    assert [id for id, _ in feedback.convex([dense, keyword], [0.5, 0.5])] == ["a", "c", "b"]
