"""Embedding on a Dask cluster: a model whose embed() hands parts of each batch to the
cluster's workers, each of which loads the model once and keeps it.

Only vectors travel back: the process that runs embed_multi stays the database's one writer,
so what is embedded, reused or skipped, and what an interrupted run keeps, are embed_multi's
own rules. Workers find the model by its id (and Matryoshka truncation), as `embedkit` does:
they need embedkit installed, with the same models.json and plugins, but no database.

Dask rather than Ray: on this project's 2-CPU machines a local 2-worker Dask cluster started
and answered in 6.9 s and Ray in 17.8 s, and Dask is a pure-Python install (Ray's wheel is
79 MB); see docs/large-collections.md.
"""

import numpy as np

from .. import extras
from ..errors import EmbedkitError
from . import EmbeddingModel, Truncated, get_model

_loaded: dict[tuple, EmbeddingModel] = {}  # in a worker: (model id, dimensions) -> the model


def _dask():
    return extras.require("dask.distributed", "cluster", "embedding on a cluster")


def connect(address=None, workers=None):
    """A dask.distributed Client: of the scheduler at address, or of a new local cluster of
    `workers` processes (one thread each) that closes with the client."""
    distributed = _dask()
    if address:
        try:
            return distributed.Client(address, timeout="10s")
        except OSError as ex:
            raise EmbedkitError(f"cannot reach the Dask scheduler at {address}: {ex}") from None
    cluster = distributed.LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = distributed.Client(cluster)
    client.close = _closing_both(client, cluster)
    return client


def _closing_both(client, cluster):
    close = client.close

    def both(*args, **kwargs):
        close(*args, **kwargs)
        cluster.close()

    return both


def _spec(model: EmbeddingModel):
    if isinstance(model, Truncated):
        return model.base.model_id, model.dimensions
    return model.model_id, None


def _embed_part(spec, texts):
    """Run on a worker: (the vectors of texts, how many of them were too long for the model),
    from the model loaded there once."""
    if spec not in _loaded:
        model_id, dimensions = spec
        model = get_model(model_id)
        _loaded[spec] = model.truncated(dimensions) if dimensions else model
    model = _loaded[spec]
    return np.asarray(model.embed(texts), dtype=np.float32), model.count_truncated(texts)


class DistributedModel(EmbeddingModel):
    """model's vectors, computed by the workers of a Dask client (see connect())."""

    def __init__(self, model: EmbeddingModel, client):
        super().__init__()
        self.base, self.client = model, client
        self.model_id, self.aliases, self.source = model.model_id, model.aliases, model.source
        self.dimensions = model.dimensions
        self.workers = max(1, len(client.scheduler_info()["workers"]))
        self.texts_per_call = model.texts_per_call * self.workers
        self._spec = _spec(model)
        self._truncated: tuple[list, int] = ([], 0)  # the texts of the last call, and how many were too long

    def _embed(self, texts):
        if not texts:
            return np.empty((0, self.dimensions or 0), np.float32)
        parts = [list(part) for part in np.array_split(np.array(texts, dtype=object), self.workers) if len(part)]
        futures = self.client.map(_embed_part, [self._spec] * len(parts), parts, pure=False)
        results = self.client.gather(futures)
        self._truncated = (texts, sum(count for _, count in results))
        return np.concatenate([part for part, _ in results])

    @property
    def max_tokens(self):
        return self.base.max_tokens

    def count_tokens(self, texts) -> list:
        return self.base.count_tokens(texts)

    def count_truncated(self, texts) -> int:
        # The workers counted while embedding: no tokenizer is loaded here for it.
        texts = list(texts)
        done, count = self._truncated
        return count if texts == done else self.base.count_truncated(texts)

    def check_available(self):
        _dask()  # the model's own packages are the workers' business
