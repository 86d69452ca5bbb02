"""Vectors made elsewhere, into collections: files of vectors (files.py), llm databases
(llm.py) and Chroma directories (chroma.py). Each reads its source as Batches that
upsert.upsert writes, one transaction per collection."""

from ..errors import EmbedkitError


def target(db, name, model=None):
    """The collection vectors are imported into: the one named, or a new one with model (an
    id or alias of the model that made them) or, without, no model."""
    if db.has_collection(name):
        return db.collection(name)
    if model is None:
        return db.create_collection(name, model=False)
    return db.create_collection(name, model=model)


def renamed(names, into):
    """The collection names to import into: names, or into for the single one given."""
    if into is None:
        return {name: name for name in names}
    if len(names) != 1:
        raise EmbedkitError(f"--into names one collection; {len(names)} are being imported")
    return {names[0]: into}
