"""Bag-of-words vectors by feature hashing: every word (and pair of words) adds one to a
bucket chosen by its CRC-32. No weights and no downloads; good for exact-term matching and
for tests, not for meaning.

embedkit calls register_models(register) through the "embedkit.models" entry point.
"""

import re
import zlib

import numpy as np

from embedkit.models import EmbeddingModel

WORD = re.compile(r"\w+")


class HashedWords(EmbeddingModel):
    def __init__(self, dimensions):
        super().__init__()
        self.model_id = f"hashed-words-{dimensions}"
        self.dimensions = dimensions

    def _embed(self, texts):
        vectors = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        for row, text in enumerate(texts):
            words = WORD.findall(text.lower())
            for feature in words + [f"{a} {b}" for a, b in zip(words, words[1:])]:
                vectors[row, zlib.crc32(feature.encode()) % self.dimensions] += 1
            # A text without words still gets a vector embedkit accepts (not all zeros).
            vectors[row, -1] += 0 if words else 1
        return vectors


def register_models(register):
    register(HashedWords(256), aliases=("hashed-words",))
    register(HashedWords(1024))
