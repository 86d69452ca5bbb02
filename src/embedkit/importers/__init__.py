"""Vectors made elsewhere, into collections: files of vectors (files.py), llm databases
(llm.py) and Chroma directories (chroma.py). Each reads its source as Batches that
upsert.upsert writes, one transaction per collection."""

from ..errors import EmbedkitError


def target(db, name, model=None):
    """The collection vectors are imported into: the one named, or a new one with model (an
    id or alias of the model that made them) or, without, no model."""
    if db.has_collection(name):
        collection = db.collection(name)
        if not collection.managed:
            raise EmbedkitError(f"collection {name!r} is another program's, read in place: import into another name")
        collection.check_model(model)
        return collection
    if model is None:
        return db.create_collection(name, model=False)
    return db.create_collection(name, model=model)


def chosen(found, names, into, source) -> dict:
    """{name in the source: name to import it into} for the collections named (all those
    found, by default); into renames the single one imported."""
    names = list(names or found)
    for name in names:
        if name not in found:
            raise EmbedkitError(f"no collection named {name!r} in {source} (collections: {', '.join(found) or 'none'})")
    if into is None:
        return {name: name for name in names}
    if len(names) != 1:
        raise EmbedkitError(f"--into names one collection; {len(names)} are being imported")
    return {names[0]: into}
