"""Embedding models for the real `llm` package (a test dependency), registered as an llm
plugin, so that tests build llm databases the way llm users do.

- "test-letters": the vectors of embedkit's LettersModel (tests/conftest.py), so an llm
  collection made with it and embedkit's collection of the same model agree;
- "sentence-transformers/all-MiniLM-L6-v2": the id llm-sentence-transformers gives the
  model, computed with embedkit's real default model;
- "test-bytes": a model of binary content (content_blob), as CLIP is for images.
"""

import llm
import numpy as np

from embedkit import models

_registered = False


class _Letters(llm.EmbeddingModel):
    model_id = "test-letters"

    def embed_batch(self, items):
        for vector in models.get_model("test-letters").embed(list(items)):
            yield [float(v) for v in vector]


class _MiniLM(llm.EmbeddingModel):
    model_id = "sentence-transformers/all-MiniLM-L6-v2"

    def embed_batch(self, items):
        for vector in models.get_model("all-MiniLM-L6-v2").embed(list(items)):
            yield [float(v) for v in vector]


class _Bytes(llm.EmbeddingModel):
    model_id = "test-bytes"
    supports_binary = True
    supports_text = True

    def embed_batch(self, items):
        for item in items:
            data = item if isinstance(item, bytes) else item.encode()
            counts = np.bincount(np.frombuffer(data, dtype=np.uint8) % 8, minlength=8).astype(float) + 1
            yield [float(v) for v in counts]


class _Plugin:
    @llm.hookimpl
    def register_embedding_models(self, register):
        for model in (_Letters(), _MiniLM(), _Bytes()):
            register(model)


def register():
    """Make the test models known to llm (once per process)."""
    global _registered
    if not _registered:
        llm.plugins.pm.register(_Plugin(), name="embedkit-tests")
        _registered = True
