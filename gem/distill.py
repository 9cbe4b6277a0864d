"""Distil a fitted teacher (GEM) into a fastText student that labels web-scale corpora.

The paper's route: the teacher clusters an embedded seed sample; per topic the documents
with the highest Geometric Influence Score (GIS) become training examples, the same count per topic
so the student inherits the teacher's balance, not the corpus skew; a supervised fastText model
trained on ``__label__<stable topic id>`` lines then labels everything else in linear time.

Model files are plain fastText files, so the student drops into datatrove unchanged::

    from datatrove.pipeline.filters import FastTextClassifierFilter
    FastTextClassifierFilter("student.ftz", keep_labels=[("12", 0.5), ("31", 0.5)])

(datatrove reads ``__label__T012`` as label ``"T012"``; excluded topics trained with
``excluded_mode="label"`` appear as ``__label__drop``.) Topic ids are the taxonomy's stable ids
("T012") when the run is synced into the workspace taxonomy, else the cluster index ("12"). datatrove does not lowercase or strip
control characters; apply :func:`fasttext_line` upstream for the best agreement.
A JSON sidecar (``<model>.json``) records the training parameters and topic ids, and the model
file's size and sha256: :meth:`Student.load` refuses a file that does not match them (truncated by
a full disk or an interrupted copy, or replaced), naming the file and the fix (re-run ``gem
distill``). A model whose sidecar has no sha256 (saved by an older gem, or copied without its
sidecar) loads with a warning, and only when fastText reads it and its size is the one its own
header describes.
"""
from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from gem.store import atomic_path, file_sha256, read_json, write_json_atomic

LABEL_PREFIX = "__label__"
DROP_LABEL = "drop"  # topic id given to excluded topics with excluded_mode="label"
# the stages of distill_run, in order, as its ``stage(name, done, total)`` callback names them
# (word vectors only with a teacher encoder, the k-means comparison and quantizing only when asked)
STAGE_SCORING = "scoring GIS"
STAGE_PICKING = "picking the training set"
STAGE_WORD_VECTORS = "word vectors"
STAGE_TRAINING = "training"
STAGE_EVALUATING = "evaluating"
STAGE_KMEANS = "k-means comparison"
STAGE_QUANTIZING = "quantizing"
STAGE_DONE = "done"  # the last call: done == total
NORMALIZATION_VERSION = 1

# Anything that is not a word character or whitespace is split off as its own token: fastText
# tokenises on whitespace only, so "python," and "python" would otherwise be different words.
_PUNCT = re.compile(r"([^\w\s])")
_SPACE = re.compile(r"\s+")
# C0/C1 controls (newlines, NUL...), zero-width and bidi format characters, line/paragraph
# separators, BOM, surrogates and private use become spaces.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff"
                      "\ud800-\udfff\ue000-\uf8ff]")


def fasttext_line(text: str) -> str:
    """Lowercase, control characters and newlines to spaces, punctuation split off, whitespace
    collapsed. The result is one fastText-safe line; the same function runs at train and predict
    time. ``__label__`` inside a document is defused so text can never inject a label."""
    if not isinstance(text, str):
        raise TypeError(f"fasttext_line expects str, got {type(text).__name__}")
    text = _CONTROL.sub(" ", text).lower()
    text = text.replace(LABEL_PREFIX, " label ")
    text = _PUNCT.sub(r" \1 ", text)
    return _SPACE.sub(" ", text).strip()


_LABEL_OK = re.compile(r"[A-Za-z0-9_.:\-]{1,100}")


def label_name(topic_id) -> str:
    """A topic id as a fastText label name: no whitespace, nothing fastText would split."""
    name = str(topic_id.item() if isinstance(topic_id, np.generic) else topic_id)
    if not _LABEL_OK.fullmatch(name):
        raise ValueError(f"topic id {name!r} cannot be a fastText label: use letters, digits, '_', '.', ':', '-'")
    return name


def parse_label(label: str) -> str:
    return label[len(LABEL_PREFIX):] if label.startswith(LABEL_PREFIX) else label


# ---------------------------------------------------------------------------- training set
@dataclass
class TrainingSet:
    indices: np.ndarray  # row positions into the teacher's documents
    labels: np.ndarray   # topic id (str) per selected row (DROP_LABEL for excluded in "label" mode)
    per_topic: dict[str, int] = field(default_factory=dict)  # selected count per topic id

    def __iter__(self):  # allows ``idx, y = select_training_set(...)``
        return iter((self.indices, self.labels))


def select_training_set(
    labels: Sequence,
    scores: Sequence[float],
    top_fraction: float = 1.0,
    per_topic: int | None = None,
    excluded: Iterable = (),
    excluded_mode: str = "drop",
    candidates: Sequence[int] | None = None,
) -> TrainingSet:
    """Cluster-balanced, confident training examples.

    Per topic, the candidates are its top ``ceil(top_fraction * size)`` documents by ``scores``
    (GIS). Every topic then contributes at most the same count: ``per_topic`` if given, else the
    75th percentile of the topics' candidate counts; a topic with fewer candidates contributes all
    it has.
    ``excluded`` topics are left out (``excluded_mode="drop"``) or kept under one extra label,
    ``DROP_LABEL`` (``"label"``), so the student learns to recognise junk.
    ``candidates`` restricts selection to these row positions (e.g. the non-held-out rows).
    """
    labels = np.asarray([label_name(t) for t in labels], dtype=object)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.ndim != 1 or scores.shape != labels.shape:
        raise ValueError(f"labels and scores must be 1-D of equal length, got {labels.shape} and {scores.shape}")
    if not 0.0 < top_fraction <= 1.0:
        raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
    if per_topic is not None and int(per_topic) < 1:
        raise ValueError(f"per_topic must be >= 1, got {per_topic}")
    if excluded_mode not in ("drop", "label"):
        raise ValueError(f"excluded_mode must be 'drop' or 'label', got {excluded_mode!r}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or infinity")
    pool = np.arange(len(labels)) if candidates is None else np.asarray(candidates, dtype=np.int64)
    excluded = {label_name(t) for t in excluded}

    ranked: dict[str, np.ndarray] = {}
    for topic in sorted(set(labels[pool].tolist())):
        members = pool[labels[pool] == topic]
        order = members[np.argsort(-scores[members], kind="stable")]
        ranked[topic] = order[: max(1, math.ceil(top_fraction * len(members)))]
    kept = [t for t in ranked if t not in excluded]
    if not kept:
        raise ValueError("every topic is excluded: nothing to train the student on")
    # Default cap: the 75th percentile of the candidate counts. The student is data-limited, so
    # a cap only trims the largest topics (a skewed teacher such as k-means would otherwise
    # dominate the training set). Measured on the 11.5k sample (GEM K=24, validation rows carved
    # from the training pool): the smallest topic's count starves the student; the median cap
    # dropped 12% of the pool and cost 2 points of agreement (65.4% vs 67.4% uncapped).
    count = int(per_topic) if per_topic is not None else int(np.percentile([len(ranked[t]) for t in kept], 75))

    idx_parts, lab_parts, taken = [], [], {}
    for topic, rows in ranked.items():
        if topic in excluded and excluded_mode == "drop":
            continue
        rows = rows[:count]
        target = DROP_LABEL if topic in excluded else topic
        idx_parts.append(rows)
        lab_parts.append(np.full(len(rows), target, dtype=object))
        taken[target] = taken.get(target, 0) + len(rows)
    return TrainingSet(np.concatenate(idx_parts), np.concatenate(lab_parts), taken)


# ---------------------------------------------------------------------------- the student
class Student:
    """A supervised fastText model whose labels are stable topic ids."""

    def __init__(self, model, meta: dict | None = None, path: str | os.PathLike | None = None):
        self.model = model
        self.meta = dict(meta or {})
        self.path = Path(path) if path is not None else None
        self.topic_ids = sorted(parse_label(lab) for lab in model.get_labels())

    def __repr__(self) -> str:
        return f"Student(topics={len(self.topic_ids)}, path={str(self.path) if self.path else None!r})"

    @classmethod
    def load(cls, path: str | os.PathLike, verify: bool = True) -> "Student":
        """Load a student saved by :meth:`save`. With ``verify`` (default) the file is first checked
        against the size and sha256 in its sidecar (:func:`verify_student_file`); a file without a
        recorded sha256 loads with an :class:`UnverifiedStudentWarning` when fastText reads it and
        its size matches fastText's own header, else :class:`StudentFileError`."""
        import fasttext

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such fastText model (.bin or .ftz)")
        if verify:
            meta, verified = verify_student_file(path)
        else:
            meta, verified = read_sidecar(path), True
        try:
            model = fasttext.load_model(str(path))
        except ValueError as exc:
            raise ValueError(f"{path}: not a fastText model ({exc})") from None
        except (MemoryError, RuntimeError) as exc:  # a truncated header can ask for absurd sizes
            raise StudentFileError(f"{path}: fastText cannot read this model ({type(exc).__name__}: {exc}); "
                                   f"it is damaged or incomplete: {_REBUILD}") from None
        if not verified:
            problem = _structure_problem(model, path)
            if problem:
                raise StudentFileError(f"{path}: the student model is damaged or incomplete ({problem}); {_REBUILD}")
            warnings.warn(
                f"{path}: its sidecar records no sha256 (saved by an older gem, or copied without "
                f"{sidecar_path(path).name}), so it cannot be checked for damage; fastText reads it. Re-run "
                "`gem distill` to get a verifiable model", UnverifiedStudentWarning, stacklevel=2)
        return cls(model, meta, path)

    def save(self, path: str | os.PathLike) -> dict:
        """Write the model (.bin, or .ftz if quantised) atomically plus a JSON sidecar recording its
        size (``model_bytes``) and ``model_sha256``; returns ``{"path", "bytes"}``."""
        path = Path(path)
        with atomic_path(path, suffix=path.suffix or ".bin") as tmp:
            self.model.save_model(str(tmp))
            size, digest = tmp.stat().st_size, file_sha256(tmp)
        self.path = path
        meta = dict(self.meta, model_bytes=size, model_sha256=digest, quantized=bool(self.model.is_quantized()))
        self.meta = meta
        write_json_atomic(sidecar_path(path), meta)
        return {"path": str(path), "bytes": size}

    def quantize(self, path: str | os.PathLike, cutoff: int = 20_000, dsub: int = 2) -> "Student":
        """A product-quantised copy saved at ``path`` (conventionally ``.ftz``; on the sample 0.6 MB vs the
        5 MB .bin of the teacher-vectors student, 0.9 MB vs 60 MB for the plain one).
        ``cutoff`` keeps that many word/n-gram rows of largest norm; quantisation time is
        linear in it (~0.3 ms per row on one loaded core)."""
        import fasttext

        with tempfile.TemporaryDirectory(prefix="gem-quantize-") as tmp:
            src = Path(tmp) / "model.bin"
            self.model.save_model(str(src))
            copy = fasttext.load_model(str(src))  # quantize() mutates: work on a copy
        n_rows = copy.get_input_matrix().shape[0]
        copy.quantize(cutoff=min(int(cutoff), n_rows) if cutoff else 0, retrain=False, dsub=dsub, qnorm=True)
        q = Student(copy, dict(self.meta, quantize={"cutoff": cutoff, "dsub": dsub}))
        q.save(path)
        return q

    @property
    def is_quantized(self) -> bool:
        return bool(self.model.is_quantized())

    def predict(self, texts: Sequence[str], k: int = 1, batch_size: int = 8192, normalized: bool = False):
        """Top-``k`` topic ids (str, object array) and probabilities (float32): shape (n,) for
        k=1, else (n, k).

        Texts are normalised with :func:`fasttext_line` unless ``normalized=True``."""
        n = len(texts)
        k = int(k)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        ids = np.empty((n, k), dtype=object)
        probs = np.empty((n, k), dtype=np.float32)
        lookup: dict[str, str] = {}
        for start in range(0, n, batch_size):
            chunk = list(texts[start:start + batch_size])
            if not normalized:
                chunk = [fasttext_line(t) for t in chunk]
            labs, prs = self.model.predict(chunk, k=k)
            for j, (lab, pr) in enumerate(zip(labs, prs)):
                row = start + j
                for c in range(k):
                    name = lab[c]
                    tid = lookup.get(name)
                    if tid is None:
                        tid = lookup[name] = parse_label(name)
                    ids[row, c] = tid
                    # fastText's softmax can exceed 1 by round-off (1.00001)
                    probs[row, c] = min(float(pr[c]), 1.0)
        if k == 1:
            return ids[:, 0], probs[:, 0]
        return ids, probs


def sidecar_path(model_path: str | os.PathLike) -> Path:
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + ".json")


_REBUILD = ("re-run `gem distill` to rebuild it (or copy the model again together with its .json sidecar)")


class StudentFileError(ValueError):
    """A student model file that is damaged, incomplete or replaced (it does not match its sidecar,
    or fastText's own header): the message names the file and the fix."""


class UnverifiedStudentWarning(UserWarning):
    """A student model loaded without a sha256 to check it against (older sidecar, or none)."""


def read_sidecar(model_path: str | os.PathLike) -> dict:
    """The model's JSON sidecar as a dict; ``{}`` when there is none."""
    sidecar = sidecar_path(model_path)
    if not sidecar.exists():
        return {}
    try:
        meta = read_json(sidecar)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StudentFileError(f"{sidecar}: the student's sidecar is not valid JSON ({exc}); {_REBUILD}") from None
    if not isinstance(meta, dict):
        raise StudentFileError(f"{sidecar}: the student's sidecar is not a JSON object; {_REBUILD}")
    return meta


def verify_student_file(model_path: str | os.PathLike) -> tuple[dict, bool]:
    """Check a student model file against the size and sha256 its sidecar recorded at save, without
    loading it. Returns ``(sidecar, verified)``: ``verified`` is False when the sidecar records no
    sha256 (older models; :meth:`Student.load` then checks fastText's header instead). Raises
    :class:`StudentFileError` naming the file when the size or the hash differ."""
    path = Path(model_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such fastText model (.bin or .ftz)")
    meta = read_sidecar(path)
    size = path.stat().st_size
    want = meta.get("model_bytes")
    if isinstance(want, int) and not isinstance(want, bool) and want != size:
        raise StudentFileError(
            f"{path}: the student model is damaged or incomplete: {size:,} bytes, but its sidecar "
            f"{sidecar_path(path).name} recorded {want:,} when it was saved; {_REBUILD}")
    digest = meta.get("model_sha256")
    if not isinstance(digest, str) or not digest:
        return meta, False
    if file_sha256(path) != digest:
        raise StudentFileError(
            f"{path}: the student model does not match the sha256 its sidecar {sidecar_path(path).name} recorded "
            f"when it was saved (damaged or replaced since); {_REBUILD}")
    return meta, True


def _structure_problem(model, path: Path) -> str | None:
    """For a model without a recorded hash: whether the file size differs from what fastText's own
    header and dictionary describe (a plain, non-quantised supervised .bin; None when it matches or
    cannot be told). fastText silently reads a truncated file as zeros."""
    try:
        if model.is_quantized():
            return None
        args = model.f.getArgs()
        if "supervised" not in str(args.model):
            return None
        words, labels = model.get_words(on_unicode_error="strict"), model.get_labels(on_unicode_error="strict")
        dim, bucket = int(args.dim), int(args.bucket)
    except Exception:  # noqa: BLE001 - an unusual model: nothing to compare against
        return None
    # signature (2 int32), args (12 int32 + 1 double), dictionary header (3 int32 + 2 int64),
    # entries (utf-8 + NUL, int64 count, int8 type), quant flag, input matrix (2 int64 + floats),
    # qout flag, output matrix (2 int64 + floats)
    entries = sum(len(w.encode("utf-8")) + 10 for w in list(words) + list(labels))
    expected = 8 + 56 + 28 + entries + 1 + 16 + 4 * (len(words) + bucket) * dim + 1 + 16 + 4 * len(labels) * dim
    actual = path.stat().st_size
    if actual != expected:
        return f"{actual:,} bytes, but its fastText header describes {expected:,}"
    return None


MIN_FASTTEXT_THREADS = 11  # see train_student: fewer leaves part of fastText's matrix uninitialised


def train_student(
    texts: Sequence[str],
    topic_ids: Sequence,
    dim: int = 64,
    epoch: int = 25,
    lr: float = 0.5,
    word_ngrams: int = 1,
    bucket: int = 200_000,
    min_count: int = 1,
    minn: int = 3,
    maxn: int = 6,
    loss: str = "softmax",
    pretrained_vectors: str | None = None,
    thread: int = 12,
    seed: int = 0,
    meta: dict | None = None,
) -> Student:
    """Train a supervised fastText student on (text, topic id) pairs.

    ``bucket`` bounds the hashed n-gram table (200k buckets give the accuracy of the
    2M default at an eighth of the size).

    Defaults were chosen on the 11.5k-document sample (GEM K=24 teacher, all training rows, scored
    on a validation split carved from the training pool, never on the held-out rows): character
    n-grams 3-6 are the one setting that helps on small data (70.6% vs 67.4% without; 2-5: 68.3%),
    because rare and inflected words share subword rows; word bigrams then add nothing (70.3%);
    more epochs (50: 70.2%), fewer (15: 66.8%), dim 16/100, lr 0.1/1.0 are within noise or worse.
    For scale: a linear SVM on word + character TF-IDF reaches 73.6% on the same split, 3 points
    above the student, so text alone caps agreement well below 85% at this size; agreement grows
    with training size (59.6% / 65.4% / 67.4% at 3.2k / 6.4k / 7.4k documents, word features).
    ``pretrained_vectors``: a fastText ``.vec`` file (dimension ``dim``) to start word vectors from;
    :func:`distill_labels` writes one from :func:`teacher_word_vectors` (+4 points on the sample).
    The defaults here are the plain recipe, for when no teacher encoder is available.

    ``thread`` is raised to at least 11: fastText initialises its input matrix in ten blocks, one
    per training thread, and with fewer threads this build (fasttext-numpy2 0.10.4) leaves the
    remaining rows as uninitialised memory, so training dies at random with "Encountered NaN"
    (seen here about half the time with thread=1). The price: fastText's lock-free SGD makes
    multi-threaded runs vary slightly from run to run, so tests assert agreement thresholds.
    """
    import fasttext

    topic_ids = [label_name(t) for t in topic_ids]
    if len(texts) != len(topic_ids):
        raise ValueError(f"{len(texts)} texts but {len(topic_ids)} topic ids")
    if len(texts) == 0:
        raise ValueError("no training documents")
    if len(set(topic_ids)) < 2:
        raise ValueError("the student needs at least two topics to learn from")
    # fastText's SGD sees lines in file order: shuffle so topics are interleaved.
    order = np.random.default_rng(seed).permutation(len(texts))
    params = dict(dim=dim, epoch=epoch, lr=lr, wordNgrams=word_ngrams, bucket=bucket, minCount=min_count,
                  minn=minn, maxn=maxn, thread=max(int(thread), MIN_FASTTEXT_THREADS), seed=seed, loss=loss)
    if pretrained_vectors:
        params["pretrainedVectors"] = str(pretrained_vectors)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gem-student-") as tmp:
        train_file = Path(tmp) / "train.txt"
        with open(train_file, "w", encoding="utf-8") as fh:
            for i in order:
                fh.write(f"{LABEL_PREFIX}{label_name(topic_ids[i])} {fasttext_line(texts[i])}\n")
        model = fasttext.train_supervised(input=str(train_file), verbose=0, **params)
    seconds = time.perf_counter() - start
    info = dict(meta or {})
    info.update(
        format="gem-fasttext-student",
        normalization_version=NORMALIZATION_VERSION,
        label_prefix=LABEL_PREFIX,
        train_params={k: v for k, v in params.items()},
        n_train=int(len(texts)),
        train_seconds=round(seconds, 3),
        topic_ids=sorted(set(topic_ids)),
    )
    return Student(model, info)


# ---------------------------------------------------------------------------- teacher word vectors
# fastText settings for a student started from teacher word vectors, chosen on a validation split
# carved from the training pool of the 11.5k sample (GEM K=24; never the held-out rows): 75.1-75.4%
# vs 70.2% for the plain recipe on that split. A low learning rate and few epochs keep the trained
# words next to the untrained ones (vocabulary words absent from the training text keep their
# teacher vectors); character n-grams would dilute the vectors with random rows (69.0% with them at
# this rate), word bigrams cost 1.7 points; epochs 5-20 and lr 0.05-0.2 are within noise.
TEACHER_VECTOR_PARAMS = dict(lr=0.1, epoch=10, minn=0, maxn=0, word_ngrams=1)
RIDGE_ALPHA = 0.003  # validation: 0.001-0.01 within 0.5 point; 0.1 loses 3 points


@dataclass
class TeacherGeometry:
    """What the student can learn from the teacher besides labels.

    ``X``: the teacher's unit document embeddings, rows aligned with the texts; ``directions``:
    its topic directions (K x d); ``encode``: its encoder (list of texts -> unit rows, d columns);
    ``extra_words``: vocabulary given teacher vectors even if absent from the training text (the
    encoder's own whole words), so the student knows words it was never trained on."""
    X: np.ndarray
    directions: np.ndarray
    encode: Callable[[list[str]], np.ndarray]
    extra_words: Sequence[str] = ()


def teacher_word_vectors(
    texts: Sequence[str],
    geometry: TeacherGeometry,
    rows: Sequence[int] | None = None,
    alpha: float = RIDGE_ALPHA,
    max_words: int = 200_000,
    max_docs: int = 50_000,
    random_state: int = 0,
) -> tuple[list[str], np.ndarray, dict]:
    """Word vectors that carry the teacher's geometry into fastText (its ``pretrainedVectors``).

    fastText represents a document by the mean of its word rows. Each word starts at the teacher's
    embedding of the word alone, ``V0 = encode(words)``; the rows are then corrected by ridge
    regression so that the mean over each document of ``rows`` reproduces that document's teacher
    embedding::

        D = argmin ||A (V0 + D) - X||^2 + alpha ||D||^2,   A = row-normalised bag of words

    Only the span of the topic directions matters to the teacher's decision (argmax_k of
    kappa_k mu_k . x plus a per-topic constant), so everything is expressed in an orthonormal basis
    of that span: vectors have dimension rank(directions) <= K. Measured on the sample (K=24): the
    held-out documents' mean vectors reach cosine 0.73 with their teacher embeddings (0.25 for
    ``V0`` alone), and held-out agreement goes from 72.7% to 76.6%.

    Returns (words, vectors float32, info). ``rows`` (default all) are the documents the fit may
    read: pass the training pool, never held-out rows. The vocabulary is their ``max_words`` most
    frequent words; the ridge step reads at most ``max_docs`` of them (a seeded random subset). Cost
    on 2 cores, encoder time aside: 4 s for 10k documents at K=24, 24 s for 50k, 63 s for 50k at K=64.
    """
    from collections import Counter

    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import normalize

    start = time.perf_counter()
    rows = np.arange(len(texts)) if rows is None else np.asarray(rows, dtype=np.int64)
    X = np.asarray(geometry.X)
    if X.ndim != 2 or X.shape[0] != len(texts):
        raise ValueError(f"teacher embeddings have shape {X.shape}, expected one row per text ({len(texts)})")
    normalized = [fasttext_line(texts[i]) for i in rows]
    counts = Counter(w for doc in normalized for w in doc.split())
    words = [w for w, _ in counts.most_common(int(max_words))]
    known = set(words)
    words += [w for w in dict.fromkeys(geometry.extra_words) if w not in known and not any(c.isspace() for c in w)]
    if not words:
        raise ValueError("no words in the training documents")

    # orthonormal basis of the topic directions' span (SVD: robust to near-parallel directions)
    M = np.asarray(geometry.directions, dtype=np.float64)
    if M.ndim != 2 or M.shape[1] != X.shape[1]:
        raise ValueError(f"topic directions have shape {M.shape}, expected K x {X.shape[1]}")
    U, sing, _ = np.linalg.svd(M.T, full_matrices=False)
    Q = U[:, sing > 1e-6 * sing[0]]

    V0 = np.asarray(geometry.encode(words), dtype=np.float64) @ Q
    fit = np.arange(len(rows))
    if len(fit) > max_docs:
        fit = np.sort(np.random.default_rng(random_state).choice(len(rows), int(max_docs), replace=False))
    # fastText's document vector: the mean of its word rows (l1-normalised word counts)
    counts_matrix = CountVectorizer(vocabulary={w: j for j, w in enumerate(words)}, analyzer=str.split,
                                    lowercase=False, dtype=np.float64).transform([normalized[i] for i in fit])
    A = normalize(counts_matrix, norm="l1")
    goal = X[rows[fit]].astype(np.float64) @ Q
    # lsqr: memory linear in the bag-of-words nonzeros (the dual solve needs n_docs^2)
    static = A @ V0
    W = V0 + Ridge(alpha=alpha, fit_intercept=False, solver="lsqr", tol=1e-6).fit(A, goal - static).coef_.T
    info = {
        "n_words": len(words), "n_training_words": len(known), "dim": int(Q.shape[1]), "alpha": float(alpha),
        "n_docs": int(len(fit)),
        # the fit's quality: relative residual of the document means, before and after the ridge step
        "residual_static": float(np.linalg.norm(static - goal) / np.linalg.norm(goal)),
        "residual_fitted": float(np.linalg.norm(A @ W - goal) / np.linalg.norm(goal)),
        "seconds": round(time.perf_counter() - start, 2),
    }
    return words, W.astype(np.float32), info


def write_vec(path: str | os.PathLike, words: Sequence[str], vectors: np.ndarray) -> None:
    """Word vectors in fastText's text format (``.vec``: a "n dim" header, then a word and its
    numbers per line), written atomically."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if len(words) != vectors.shape[0]:
        raise ValueError(f"{len(words)} words but {vectors.shape[0]} vectors")
    with atomic_path(Path(path), suffix=".vec") as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(f"{len(words)} {vectors.shape[1]}\n")
        for word, row in zip(words, vectors):
            fh.write(word + " " + " ".join(f"{x:.6g}" for x in row) + "\n")


def teacher_geometry(ws, representation: str, X: np.ndarray, directions: np.ndarray,
                     progress: Callable[[int, int], None] | None = None) -> tuple[TeacherGeometry | None, str]:
    """The workspace teacher's geometry with its encoder, or (None, why) when the embeddings did
    not come from the bundled encoder (precomputed vectors: no way to embed words). Word
    embeddings go through the workspace's embedding cache, so re-distilling does not re-encode;
    ``progress(done, total)`` counts the words actually encoded (``(0, 0)``: all were cached)."""
    from gem.embed import (EmbeddingCache, SentenceTransformerEmbedder, encode_cached, parse_representation,
                           vocabulary_words)

    meta_path = ws.embeddings_meta_path(representation)
    meta = read_json(meta_path) if meta_path.exists() else {}
    if meta.get("source") != "model":
        return None, f"{representation} embeddings were not made by the bundled encoder (precomputed)"
    embedder = SentenceTransformerEmbedder(layer=parse_representation(representation))
    if meta.get("fingerprint") != embedder.fingerprint:
        return None, (f"{representation} embeddings were made by encoder {meta.get('fingerprint')}, "
                      f"not the installed {embedder.fingerprint}; run `gem embed` again")
    cache = EmbeddingCache(ws.cache_dir)
    geometry = TeacherGeometry(X, directions, lambda words: encode_cached(embedder, words, cache, progress)[0],
                               vocabulary_words(embedder.model_path))
    return geometry, "teacher encoder"


# ---------------------------------------------------------------------------- evaluation
def evaluate(
    student: Student,
    texts: Sequence[str],
    teacher_ids: Sequence,
    bins: Sequence[float] = (0.0, 0.5, 0.7, 0.9, 1.0),
) -> dict[str, Any]:
    """Student vs teacher on (held-out) documents.

    Returns top-1 agreement, macro-F1 over the teacher's topics, the confusion matrix (rows:
    teacher, columns: student, over ``labels``), agreement per student-confidence bin, and
    prediction throughput (normalisation included)."""
    from sklearn.metrics import confusion_matrix, f1_score

    teacher_ids = np.asarray([label_name(t) for t in teacher_ids], dtype=object)
    if len(texts) != len(teacher_ids):
        raise ValueError(f"{len(texts)} texts but {len(teacher_ids)} teacher ids")
    if len(texts) == 0:
        raise ValueError("no documents to evaluate on")
    start = time.perf_counter()
    pred, prob = student.predict(texts)
    seconds = time.perf_counter() - start
    labels = sorted(set(teacher_ids.tolist()) | set(pred.tolist()))
    agree = pred == teacher_ids
    edges = np.asarray(bins, dtype=np.float64)
    by_conf = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        mask = (prob >= lo) & ((prob < hi) if hi < edges[-1] else (prob <= hi))
        by_conf.append({
            "low": float(lo), "high": float(hi), "n": int(mask.sum()),
            "share": float(mask.mean()),
            "agreement": float(agree[mask].mean()) if mask.any() else None,
        })
    return {
        "n": int(len(texts)),
        "agreement": float(agree.mean()),
        "macro_f1": float(f1_score(teacher_ids, pred, labels=sorted(set(teacher_ids.tolist())),
                                   average="macro", zero_division=0)),
        "labels": labels,
        "confusion": confusion_matrix(teacher_ids, pred, labels=labels).tolist(),
        "agreement_by_confidence": by_conf,
        "mean_confidence": float(prob.mean()),
        "docs_per_second": float(len(texts) / seconds) if seconds > 0 else float("inf"),
    }


# ---------------------------------------------------------------------------- from a workspace run
def holdout_split(n: int, holdout: float = 0.2, random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random (train-pool, held-out) row positions."""
    if not 0.0 < holdout < 1.0:
        raise ValueError(f"holdout must be in (0, 1), got {holdout}")
    perm = np.random.default_rng(random_state).permutation(n)
    n_out = max(1, int(round(holdout * n)))
    return np.sort(perm[n_out:]), np.sort(perm[:n_out])


def distill_labels(
    texts: Sequence[str],
    labels: Sequence,
    scores: Sequence[float],
    holdout: float = 0.2,
    top_fraction: float = 1.0,
    per_topic: int | None = None,
    excluded: Iterable = (),
    excluded_mode: str = "drop",
    random_state: int = 0,
    geometry: TeacherGeometry | None = None,
    on_stage: Callable[[str], None] | None = None,
    **train_kw,
) -> tuple[Student, dict]:
    """Hold out documents, pick the training set among the rest, train, evaluate on the held-out
    rows (all of them, not only confident ones: the honest number). Returns (student, report).
    ``on_stage(name)`` is called as each step starts (``STAGE_PICKING``, ``STAGE_WORD_VECTORS``
    with ``geometry``, ``STAGE_TRAINING``, ``STAGE_EVALUATING``).

    With ``geometry`` the student starts from :func:`teacher_word_vectors` fitted on the
    non-held-out rows and trains with ``TEACHER_VECTOR_PARAMS`` (``train_kw`` may override all but
    ``dim``, which the vectors fix)."""
    labels = np.asarray([label_name(t) for t in labels], dtype=object)
    train_kw = {k: v for k, v in train_kw.items() if v is not None}  # None: the recipe's default
    on_stage = on_stage or (lambda name: None)
    on_stage(STAGE_PICKING)
    pool, held = holdout_split(len(labels), holdout, random_state)
    chosen = select_training_set(labels, scores, top_fraction, per_topic, excluded, excluded_mode, candidates=pool)
    train_texts = [texts[i] for i in chosen.indices]
    vectors_info = None
    if geometry is None:
        on_stage(STAGE_TRAINING)
        student = train_student(train_texts, chosen.labels, seed=random_state, **train_kw)
    else:
        on_stage(STAGE_WORD_VECTORS)
        words, vectors, vectors_info = teacher_word_vectors(texts, geometry, rows=pool)
        dim = int(vectors.shape[1])
        if train_kw.get("dim") not in (None, dim):
            raise ValueError(f"dim={train_kw['dim']}: the teacher word vectors fix the student's dimension to {dim} "
                             "(the rank of the topic directions); train without them to choose it")
        params = {**TEACHER_VECTOR_PARAMS, **train_kw, "dim": dim}
        on_stage(STAGE_TRAINING)
        with tempfile.TemporaryDirectory(prefix="gem-vectors-") as tmp:
            vec = Path(tmp) / "teacher.vec"
            write_vec(vec, words, vectors)
            student = train_student(train_texts, chosen.labels, seed=random_state, pretrained_vectors=str(vec),
                                    **params)
        student.meta["train_params"].pop("pretrainedVectors", None)  # a deleted temp file
        student.meta["word_vectors"] = vectors_info
    on_stage(STAGE_EVALUATING)
    report = distill_eval_holdout(student, texts, labels, holdout, excluded, excluded_mode, random_state)
    report["training"] = {"n": int(len(chosen.indices)), "per_topic": {str(k): v for k, v in chosen.per_topic.items()},
                          "top_fraction": top_fraction, "holdout": holdout}
    if vectors_info is not None:
        report["word_vectors"] = vectors_info
    return student, report


def distill_eval_holdout(student, texts, labels, holdout=0.2, excluded=(), excluded_mode="drop", random_state=0):
    """Evaluate on the held-out rows of :func:`holdout_split`: excluded topics are skipped
    (mode "drop") or expected as ``DROP_LABEL`` (mode "label")."""
    labels = np.asarray([label_name(t) for t in labels], dtype=object)
    _, held = holdout_split(len(labels), holdout, random_state)
    excluded = [label_name(t) for t in excluded]
    rows = held if excluded_mode == "label" else held[~np.isin(labels[held], excluded)]
    truth = labels[rows].copy()
    if excluded_mode == "label" and excluded:
        truth[np.isin(truth, excluded)] = DROP_LABEL
    return evaluate(student, [texts[i] for i in rows], truth)


def run_topic_ids(ws, run_name: str, n_clusters: int) -> tuple[list[str], list[str], str]:
    """(topic id per cluster index, excluded topic ids, source) of a run: the taxonomy's stable
    ids and exclusions when the run is synced into the workspace taxonomy, else the cluster index."""
    plain = [str(k) for k in range(n_clusters)]
    if not ws.taxonomy_db.exists():
        return plain, [], "cluster index"
    from gem.taxonomy import Taxonomy

    tax = Taxonomy(ws.taxonomy_db)
    mapping = tax.run_mapping(run_name)
    if not mapping:
        return plain, [], "cluster index"
    if sorted(mapping) != list(range(n_clusters)):
        raise ValueError(f"taxonomy maps {len(mapping)} clusters of run {run_name!r}, which has {n_clusters}; re-sync the run")
    topics = tax.topics()  # every topic: split children are in no run's mapping
    excluded = sorted(topics.loc[topics["excluded"], "id"].astype(str))
    return [mapping[k] for k in range(n_clusters)], excluded, "taxonomy"


def teacher_scores(estimator, X: np.ndarray, labels: np.ndarray, confidence: str = "gis") -> np.ndarray:
    """Per-document score that ranks training candidates: GIS (the real path) or the teacher's
    assignment probability (``confidence="probability"``, the paper's "confidence-only" ablation)."""
    labels = np.asarray(labels, dtype=np.int64)
    if confidence == "probability":
        proba = estimator.predict_proba(X)
        return np.asarray(proba[np.arange(len(labels)), labels], dtype=np.float64)
    if confidence != "gis":
        raise ValueError(f"confidence must be 'gis' or 'probability', got {confidence!r}")
    from gem.gis import gis_for_model

    return np.asarray(gis_for_model(X, estimator, labels=labels), dtype=np.float64)


def distill_run(
    ws,
    run_name: str,
    out_path: str | os.PathLike,
    top_fraction: float = 1.0,
    per_topic: int | None = None,
    holdout: float = 0.2,
    excluded: Iterable | None = None,
    excluded_mode: str = "drop",
    compare_kmeans: bool = True,
    quantize: bool = False,
    confidence: str = "gis",
    random_state: int = 0,
    quantize_cutoff: int = 20_000,
    word_vectors: bool = True,
    progress: Callable[[int, int], None] | None = None,
    stage: Callable[[str, int, int], None] | None = None,
    **train_kw,
) -> dict:
    """Train the student from a workspace run, save it at ``out_path`` (.bin; with ``quantize``
    also the ``.ftz`` beside it) and return the report (also kept in the model's JSON sidecar).

    ``word_vectors``: start the student from :func:`teacher_word_vectors` when the run's
    embeddings came from the bundled encoder (+4 points of agreement on the sample; the encoder
    embeds the training vocabulary once, ~20 s for 44k words on 2 cores, cached in the
    workspace; ``progress(done, total)`` follows that encoding); else, or with ``False``, the plain
    recipe (character n-grams, dim 64).

    ``stage(name, done, total)``: called as each stage starts, ``done`` of ``total`` stages
    finished: ``STAGE_SCORING``, ``STAGE_PICKING``, ``STAGE_WORD_VECTORS`` (when the teacher's
    encoder is there), ``STAGE_TRAINING``, ``STAGE_EVALUATING``, ``STAGE_KMEANS`` (with
    ``compare_kmeans``), ``STAGE_QUANTIZING`` (with ``quantize``); then once ``STAGE_DONE`` with
    ``done == total`` (:func:`distill_stages` lists them). ``progress`` still follows the words
    encoded within the word-vector stage.

    Quantisation is opt-in: it costs ~0.3 ms per kept row on one core (``quantize_cutoff`` rows)
    and the .bin is what labelling needs; ask for the small ``.ftz`` when shipping the model
    (``gem distill --quantize``).

    ``excluded``: stable topic ids; ``None`` takes the taxonomy's exclusions. With
    ``compare_kmeans`` the same recipe (same split, GIS ranking with Banerjee kappa, same counts,
    word vectors fitted to the k-means centroid directions) is trained on Euclidean k-means labels
    (scikit-learn, raw vectors, same K) and scored against k-means on the same held-out rows.
    """
    from gem.runs import load_run_documents

    # documents excluded by curators never train or score the student (also when the run was fitted with them)
    run, docs, rows, X = load_run_documents(ws, run_name, columns=["id", "text"], exclude_flagged=True)
    cluster = run.assignments["cluster"].to_numpy().astype(np.int64)
    texts, rep = docs["text"].tolist(), run.representation
    directions = np.asarray(run.model.mean_directions_)
    n_clusters = int(directions.shape[0])
    tid, tax_excluded, id_source = run_topic_ids(ws, run_name, n_clusters)
    excluded = tax_excluded if excluded is None else [label_name(t) for t in excluded]
    # before the first stage: whether there is a word-vector stage (the encoder embeds words later)
    geometry, vectors_note = teacher_geometry(ws, rep, X, directions, progress) if word_vectors else (None, "off")
    stages = distill_stages(geometry is not None, compare_kmeans, quantize)

    def on_stage(name: str) -> None:
        if stage is not None:
            stage(name, stages.index(name), len(stages))

    on_stage(STAGE_SCORING)
    scores = teacher_scores(run.model, X, cluster, confidence)
    teacher_ids = np.asarray(tid, dtype=object)[cluster]
    if id_source == "taxonomy":  # one label per stable id: merged clusters share it, split topics go to children
        from gem.taxonomy import Taxonomy

        teacher_ids = Taxonomy(ws.taxonomy_db).route_documents(teacher_ids, X)

    t0 = time.perf_counter()
    student, report = distill_labels(texts, teacher_ids, scores, holdout, top_fraction, per_topic, excluded,
                                     excluded_mode, random_state, geometry=geometry, on_stage=on_stage, **train_kw)
    report["train_seconds"] = round(time.perf_counter() - t0, 2)
    report["teacher"] = {"run": run_name, "method": getattr(run, "method", "gem"), "n_clusters": n_clusters,
                         "representation": rep, "confidence": confidence, "topic_ids": id_source,
                         "excluded": list(excluded), "excluded_mode": excluded_mode, "word_vectors": vectors_note,
                         "excluded_documents": run.n_excluded}
    if compare_kmeans:
        on_stage(STAGE_KMEANS)
        report["kmeans"] = _kmeans_comparison(ws, rep, rows, texts, X, n_clusters, holdout, top_fraction, per_topic,
                                              random_state, geometry, **train_kw)
    out_path = Path(out_path)
    student.meta["teacher"] = report["teacher"]
    student.meta["report"] = {k: v for k, v in report.items() if k != "confusion"}
    report["model"] = student.save(out_path)
    if quantize:
        on_stage(STAGE_QUANTIZING)
        q = student.quantize(out_path.with_suffix(".ftz"), cutoff=quantize_cutoff)
        # the same held-out rows as the report (same split seed and exclusions)
        q_report = distill_eval_holdout(q, texts, teacher_ids, holdout, excluded, excluded_mode, random_state)
        report["quantized"] = {"path": str(q.path), "bytes": q.path.stat().st_size, "agreement": q_report["agreement"]}
    if stage is not None:
        stage(STAGE_DONE, len(stages), len(stages))
    return report


def distill_stages(word_vectors: bool = True, compare_kmeans: bool = True, quantize: bool = False) -> list[str]:
    """The stages ``distill_run`` reports, in order (``STAGE_DONE`` not included)."""
    return ([STAGE_SCORING, STAGE_PICKING] + ([STAGE_WORD_VECTORS] if word_vectors else [])
            + [STAGE_TRAINING, STAGE_EVALUATING] + ([STAGE_KMEANS] if compare_kmeans else [])
            + ([STAGE_QUANTIZING] if quantize else []))


def _kmeans_comparison(ws, rep, rows, texts, X, n_clusters, holdout, top_fraction, per_topic, random_state,
                       geometry=None, **train_kw):
    from dataclasses import replace

    from sklearn.cluster import KMeans

    from gem.gis import gis_for_model

    try:  # raw (pre-normalisation) vectors: what practitioners feed k-means
        raw = X * ws.load_norms(rep)[rows, None].astype(np.float32)
    except FileNotFoundError:
        raw = X
    km = KMeans(n_clusters, n_init=1, random_state=random_state).fit(raw)
    km_labels = np.asarray(km.labels_, dtype=np.int64)
    km_scores = gis_for_model(X, km, labels=km_labels)
    if geometry is not None:
        centroids = np.asarray(km.cluster_centers_, dtype=np.float64)
        geometry = replace(geometry, directions=centroids / np.linalg.norm(centroids, axis=1, keepdims=True))
    _, km_report = distill_labels(texts, [str(k) for k in km_labels], km_scores, holdout, top_fraction, per_topic,
                                  random_state=random_state, geometry=geometry, **train_kw)
    sizes = np.bincount(km_labels, minlength=n_clusters)
    return {"n": km_report["n"], "agreement": km_report["agreement"], "macro_f1": km_report["macro_f1"],
            "mean_confidence": km_report["mean_confidence"], "largest_cluster_share": float(sizes.max() / sizes.sum())}


def report_text(report: dict) -> str:
    """A short human-readable summary of a distillation report."""
    lines = [
        f"student agreement with teacher (held-out, n={report['n']}): {report['agreement']:.1%}  "
        f"macro-F1 {report['macro_f1']:.3f}",
    ]
    if "kmeans" in report:
        lines.append(f"same student on k-means labels:             {report['kmeans']['agreement']:.1%}  "
                     f"macro-F1 {report['kmeans']['macro_f1']:.3f}")
    if "word_vectors" in report:
        wv = report["word_vectors"]
        lines.append(f"teacher word vectors: {wv['n_words']:,} words, dim {wv['dim']}, document-mean residual "
                     f"{wv['residual_static']:.2f} -> {wv['residual_fitted']:.2f} ({wv['seconds']:.0f} s)")
    elif report.get("teacher", {}).get("word_vectors") not in (None, "off"):
        lines.append(f"teacher word vectors not used: {report['teacher']['word_vectors']}")
    for b in report["agreement_by_confidence"]:
        ag = "-" if b["agreement"] is None else f"{b['agreement']:.1%}"
        lines.append(f"  confidence [{b['low']:.2f}, {b['high']:.2f}]: {b['n']:6d} docs, agreement {ag}")
    lines.append(f"student throughput: {report['docs_per_second']:,.0f} docs/s")
    if "model" in report:
        lines.append(f"model: {report['model']['path']} ({report['model']['bytes'] / 1e6:.1f} MB)")
    if "quantized" in report:
        q = report["quantized"]
        lines.append(f"quantized: {q['path']} ({q['bytes'] / 1e6:.1f} MB, agreement {q['agreement']:.1%})")
    return "\n".join(lines)
