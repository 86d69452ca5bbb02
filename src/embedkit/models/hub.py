"""Models by Hugging Face hub name (`BAAI/bge-small-en-v1.5`), read from the local Hugging Face
cache only: embedkit never downloads, so a name works once the model is in the cache, from
`hf download NAME` here or on another machine.

The cache is laid out as huggingface_hub writes it, found where it looks: HF_HUB_CACHE (or
its old name HUGGINGFACE_HUB_CACHE), else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub,
else ~/.cache/huggingface/hub. A model NAME lives in models--ORG--NAME/, its files in
snapshots/REVISION/, and refs/main names the revision a plain download fetched. huggingface_hub
itself is not imported: reading a few paths is all this needs.
"""

import os
import re

from ..errors import EmbedkitError

# What the hub accepts as a repository id: ORG/NAME, letters, digits, '-', '_' and '.'.
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]*[A-Za-z0-9_]")
# sentence-transformers takes its own organisation's models by bare name (all-mpnet-base-v2).
SENTENCE_TRANSFORMERS_ORG = "sentence-transformers"


def cache_dir() -> str:
    """The Hugging Face hub cache directory, as huggingface_hub chooses it."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return os.path.expanduser(os.environ[variable])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface"
    )
    return os.path.join(os.path.expanduser(home), "hub")


def is_hub_name(name: str) -> bool:
    return _HUB_NAME.fullmatch(name) is not None and ".." not in name


def snapshot(repo_id: str):
    """The cached snapshot directory of repo_id's main revision, or None when it is not cached."""
    repo = os.path.join(cache_dir(), "models--" + repo_id.replace("/", "--"))
    try:
        with open(os.path.join(repo, "refs", "main"), encoding="utf-8") as f:
            revision = f.read().strip()
    except OSError:
        # A snapshot copied in without its refs: usable when it is the only one.
        try:
            revisions = os.listdir(os.path.join(repo, "snapshots"))
        except OSError:
            return None
        if len(revisions) != 1:
            return None
        revision = revisions[0]
    path = os.path.join(repo, "snapshots", revision)
    return path if revision and os.path.isdir(path) else None


def model_snapshot(repo_id: str):
    """The snapshot of a cached sentence-transformers or transformers model, or None: a snapshot
    holding only some files (an ONNX file, say) is not a model to load."""
    path = snapshot(repo_id)
    if path is None or not any(os.path.exists(os.path.join(path, name)) for name in ("modules.json", "config.json")):
        return None
    return path


def find(name: str):
    """(hub id, snapshot) for a cached model name, None when name is not a hub name; raises the
    one-line "not cached" error when it is one but is not in the cache."""
    if "/" not in name:
        # A bare name counts only when sentence-transformers' copy is cached: otherwise it is
        # more likely a mistyped embedkit model than a hub model.
        repo_id = f"{SENTENCE_TRANSFORMERS_ORG}/{name}"
        path = model_snapshot(repo_id) if is_hub_name(repo_id) else None
        return None if path is None else (repo_id, path)
    if not is_hub_name(name):
        return None
    path = model_snapshot(name)
    if path is None:
        raise EmbedkitError(not_cached(name))
    return name, path


def not_cached(repo_id: str) -> str:
    return (
        f"model {repo_id!r} is not in the Hugging Face cache ({cache_dir()}) and embedkit never downloads: "
        f"run 'hf download {repo_id}' (or 'huggingface-cli download {repo_id}') on a machine with network "
        "and copy the cache here (or point HF_HUB_CACHE at it), or pass a local model directory"
    )
