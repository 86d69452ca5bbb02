"""A Hugging Face hub cache laid out as huggingface_hub writes one: each file's bytes once in
blobs/, named by their hash, and snapshots/REVISION/PATH a relative symlink to its blob;
refs/main names the revision. Tests (and benchmarks/cold.py) point HF_HUB_CACHE at it."""

import hashlib
import os
import shutil

REVISION = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf"


def lay_out(cache, repo_id, files, revision=REVISION, ref="main"):
    """Put files ({path in the repository: local file}) into cache as repo_id's revision;
    returns the snapshot directory."""
    repo = os.path.join(str(cache), "models--" + repo_id.replace("/", "--"))
    snapshot = os.path.join(repo, "snapshots", revision)
    os.makedirs(os.path.join(repo, "blobs"), exist_ok=True)
    for name, source in files.items():
        digest = hashlib.sha256()
        with open(source, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        blob = os.path.join(repo, "blobs", digest.hexdigest())
        if not os.path.exists(blob):
            shutil.copyfile(source, blob)
        link = os.path.join(snapshot, *name.split("/"))
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(os.path.relpath(blob, os.path.dirname(link)), link)
    if ref is not None:
        os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
        with open(os.path.join(repo, "refs", ref), "w") as f:
            f.write(revision)
    return snapshot


def model_files(directory):
    """{relative path: file} of every file in a model directory (the bundled weights, say)."""
    found = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            found[os.path.relpath(path, directory).replace(os.sep, "/")] = path
    return found


def export_hub_onnx(weights_dir, path):
    """An fp32 ONNX export of a BERT model directory as the hub's sentence-transformers
    repositories hold one in onnx/model.onnx (exported through transformers' default SDPA
    attention, opset 14; input_ids, attention_mask and token_type_ids in, last_hidden_state
    out). Needs torch; takes about 10 s."""
    import contextlib
    import io
    import warnings

    import torch
    from transformers import AutoModel
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    model = AutoModel.from_pretrained(weights_dir).eval()

    class LastHiddenState(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state

    sample = torch.ones((2, 16), dtype=torch.long)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            LastHiddenState(), (sample, sample, torch.zeros_like(sample)), path, dynamo=False, opset_version=14,
            input_names=names, output_names=["last_hidden_state"],
            dynamic_axes={name: {0: "batch_size", 1: "sequence_length"} for name in [*names, "last_hidden_state"]},
        )
    return path
