"""A Chroma persistent directory written by the real chromadb package (a test dependency).

Run in a child process: chromadb starts threads and keeps its Rust bindings loaded, which
the test process is better without; the child also proves the directory is complete once
Chroma has closed it.

    python tests/chroma_fixture.py DIR
"""

import json
import sys

import numpy as np

# More than Chroma's sync threshold (1,000), so the vector segment's hnswlib files hold
# most of the vectors and the rest are still in the log.
COUNT = 1500
DIMENSIONS = 8


def vectors(count=COUNT, dimensions=DIMENSIONS, seed=0):
    return np.random.default_rng(seed).standard_normal((count, dimensions)).astype(np.float32)


def write(path):
    import chromadb
    from chromadb.config import Settings

    client = chromadb.PersistentClient(path=path, settings=Settings(anonymized_telemetry=False))
    papers = client.create_collection("papers", embedding_function=None)
    matrix = vectors()
    for start in range(0, COUNT, 500):
        ids = range(start, start + 500)
        papers.add(
            ids=[f"p{i}" for i in ids],
            embeddings=matrix[start : start + 500],
            documents=[f"Paper number {i} about {'sqlite' if i % 2 else 'vectors'}" for i in ids],
            metadatas=[{"year": 2000 + i % 25, "score": i / 10, "open": i % 3 == 0, "venue": f"v{i % 7}",
                        "tags": ["a", "b"] if i % 5 == 0 else ["c"]} for i in ids],
        )
    # After the index last persisted: these are only in the log.
    papers.update(ids=["p5"], metadatas=[{"year": 1999, "venue": None}])
    papers.update(ids=["p6"], embeddings=[[1.0] * DIMENSIONS], documents=["a new text"])
    papers.upsert(ids=["new"], embeddings=[[0.5] * DIMENSIONS], documents=["added last"])
    papers.delete(ids=["p7", "p1200"])
    no_text = client.create_collection("bare", embedding_function=None, metadata={"hnsw:space": "cosine"})
    no_text.add(ids=["x", "y"], embeddings=[[3.0, 4.0, 0.0], [0.0, 0.0, 2.0]])
    # What Chroma itself returns: the expectation the import is checked against.
    expected = {}
    for collection in (papers, no_text):
        got = collection.get(include=["embeddings", "documents", "metadatas"])
        expected[collection.name] = {
            id: {"embedding": [float(v) for v in embedding], "document": document, "metadata": metadata or None}
            for id, embedding, document, metadata in zip(
                got["ids"], got["embeddings"], got["documents"], got["metadatas"]
            )
        }
    expected["version"] = chromadb.__version__
    return expected


if __name__ == "__main__":
    print(json.dumps(write(sys.argv[1])))
