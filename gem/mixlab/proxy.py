"""The built-in proxy: a Kneser-Ney-smoothed word bigram model per mixture, scored on a held-out target.

This is a *proxy*, not a transformer: it lets the swarm -> results -> regression loop run end to
end on one CPU machine in minutes, and it responds to the mixture the way a language model's
loss does (more data like the target, lower cross-entropy; repeated data helps less than new
data). Real decisions deserve real training runs; import their losses with ``gem mixlab fit
--results``.

Per mixture: documents of each domain are drawn (shuffled, without replacement until the domain
is used up, then again: repetition is epochs) until the domain's share ``w_i * tokens_per_mixture``
is reached (the last document taken with the probability of the share it completes, so small
shares are unbiased); an interpolated Kneser-Ney bigram model is trained on the sample and its
cross-entropy (bits per token) measured on the target set.

Model (interpolated Kneser-Ney, one discount per order, Ney's estimate ``D = n1 / (n1 + 2 n2)``)::

    P1(w)   = max(N1+(. w) - D1, 0) / N1+(. .)  +  D1 T1 / N1+(. .) / |V|
    P2(w|v) = max(c(v w) - D2, 0) / c(v .)     +  D2 N1+(v .) / c(v .) * P1(w)      (P1(w) if c(v .) = 0)

``V``: the training pool's word types plus ``<unk>`` and ``</s>`` (fixed for the whole swarm, so
every mixture predicts the same events and their cross-entropies compare); ``T1`` the types seen
as a continuation. Every distribution sums to 1 over ``V``. Tokens: lowercased runs of letters or
digits, and single punctuation marks; each document is wrapped in ``<s> ... </s>``.

Targets (``parse_target``): ``topic:<id>`` (a domain of the swarm), ``label:<column>=<value>`` (a
corpus column), ``file:<path>`` (JSONL with a "text" field, or plain text split on blank lines).
For a topic or label, ``holdout`` of its documents (default half) are the target and the rest stay
in the training pool; a file's texts are removed from the pool when a corpus document has the same
text. The target documents never enter a training sample.
"""
from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from gem.mixture import mixture_inputs_from_run
from gem.store import write_json_atomic, write_text_atomic

UNK, BOS, EOS = 0, 1, 2
_TOKEN = re.compile(r"[^\W_]+|[^\w\s]|_", re.UNICODE)
DEFAULT_TOKENS = 100_000
DEFAULT_EVAL_TOKENS = 50_000
RESULT_COLUMN = "xent_bits"


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(str(text).lower())


# ============================================================================ the model
def _discount(counts: np.ndarray) -> float:
    n1, n2 = int((counts == 1).sum()), int((counts == 2).sum())
    return float(np.clip(n1 / (n1 + 2 * n2), 0.05, 0.95)) if n1 + n2 else 0.75


class BigramKN:
    """Interpolated Kneser-Ney word bigram model over a fixed vocabulary of ``vocab_size`` ids
    (0 = ``<unk>``, 1 = ``<s>``, 2 = ``</s>``; ``<s>`` is a context only, never predicted)."""

    def __init__(self, vocab_size: int):
        self.V = int(vocab_size)

    def fit(self, seq: np.ndarray) -> "BigramKN":
        """``seq``: documents' ids concatenated, each as ``<s> w1 ... wn </s>``."""
        seq = np.asarray(seq, dtype=np.int64)
        prev, nxt = seq[:-1], seq[1:]
        keep = nxt != BOS  # no pair across documents
        keys, counts = np.unique(prev[keep] * self.V + nxt[keep], return_counts=True)
        v, w = keys // self.V, keys % self.V
        self.keys, self.counts = keys, counts.astype(np.float64)
        self.ctx_count = np.bincount(v, weights=self.counts, minlength=self.V)
        self.ctx_types = np.bincount(v, minlength=self.V).astype(np.float64)
        cont = np.bincount(w, minlength=self.V).astype(np.float64)
        self.d2 = _discount(counts)
        self.d1 = _discount(cont[cont > 0].astype(np.int64))
        total, types = cont.sum(), float((cont > 0).sum())
        outcomes = self.V - 1  # every id but <s>
        p1 = np.maximum(cont - self.d1, 0.0) / total + self.d1 * types / total / outcomes
        p1[BOS] = 0.0
        self.p1 = p1
        return self

    def prob(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """P(next | prev) for arrays of pairs."""
        prev, nxt = np.asarray(prev, np.int64), np.asarray(nxt, np.int64)
        keys = prev * self.V + nxt
        pos = np.minimum(np.searchsorted(self.keys, keys), max(len(self.keys) - 1, 0))
        c = np.where(self.keys[pos] == keys, self.counts[pos], 0.0) if len(self.keys) else np.zeros(len(keys))
        cv = self.ctx_count[prev]
        seen = cv > 0
        safe = np.where(seen, cv, 1.0)
        p2 = np.maximum(c - self.d2, 0.0) / safe + self.d2 * self.ctx_types[prev] / safe * self.p1[nxt]
        return np.where(seen, p2, self.p1[nxt])

    def distribution(self, prev: int) -> np.ndarray:
        """P(. | prev) over the whole vocabulary (sums to 1)."""
        return self.prob(np.full(self.V, prev), np.arange(self.V))

    def cross_entropy(self, seq: np.ndarray) -> float:
        """Bits per predicted token (every word and ``</s>``) of documents ``seq`` (as in ``fit``)."""
        seq = np.asarray(seq, dtype=np.int64)
        prev, nxt = seq[:-1], seq[1:]
        keep = nxt != BOS
        return float(-np.log2(self.prob(prev[keep], nxt[keep])).mean())


# ============================================================================ corpus as ids
@dataclass
class Encoded:
    """Documents as id sequences ``<s> ... </s>`` laid end to end: document j is
    ``flat[start[j]:start[j + 1]]``; ``vocab`` maps a word to its id."""

    flat: np.ndarray
    start: np.ndarray
    vocab: dict[str, int]

    def lengths(self) -> np.ndarray:
        return np.diff(self.start)

    def docs(self, rows: Iterable[int]) -> np.ndarray:
        rows = list(rows)
        if not rows:
            return np.zeros(0, dtype=np.int32)
        return np.concatenate([self.flat[self.start[j]:self.start[j + 1]] for j in rows])


def encode(texts: list[str], vocab: dict[str, int] | None = None, grow: Iterable[bool] | None = None) -> Encoded:
    """Encode ``texts``; words of documents where ``grow`` is True enter the vocabulary, the
    others' unknown words become ``<unk>``."""
    vocab = dict(vocab) if vocab is not None else {"<unk>": UNK, "<s>": BOS, "</s>": EOS}
    grow = [True] * len(texts) if grow is None else list(grow)
    pieces, lengths = [], []
    for text, g in zip(texts, grow):
        words = tokenize(text)
        if g:
            ids = [vocab.setdefault(t, len(vocab)) for t in words]
        else:
            ids = [vocab.get(t, UNK) for t in words]
        pieces.append([BOS, *ids, EOS])
        lengths.append(len(ids) + 2)
    flat = np.fromiter((i for p in pieces for i in p), dtype=np.int32, count=int(sum(lengths)))
    start = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return Encoded(flat, start, vocab)


# ============================================================================ targets
@dataclass(frozen=True)
class Target:
    kind: str   # topic | label | file
    value: str  # topic id, "column=value", or a path
    holdout: float = 0.5

    def describe(self) -> str:
        return f"{self.kind}:{self.value}"


def parse_target(spec: str, holdout: float = 0.5) -> Target:
    kind, sep, value = str(spec).partition(":")
    if not sep or kind not in ("topic", "label", "file") or not value:
        raise ValueError(f"target {spec!r}: write topic:<id>, label:<column>=<value> or file:<path>")
    if kind == "label" and "=" not in value:
        raise ValueError(f"target {spec!r}: write label:<column>=<value>, e.g. label:category=python")
    if not 0 < float(holdout) < 1:
        raise ValueError(f"holdout must be a fraction between 0 and 1, got {holdout}")
    return Target(kind, value, float(holdout))


def read_target_file(path: str | os.PathLike) -> list[str]:
    """Texts of a target file: JSONL (one object per line with a "text" field) or plain text
    (documents separated by blank lines). Bad JSONL lines are skipped (they are counted in the
    error when nothing is left)."""
    p = Path(path)
    raw = p.read_text(encoding="utf-8-sig", errors="replace")  # a byte order mark dropped
    if p.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        texts, bad = [], 0
        for line in raw.splitlines():
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if isinstance(obj, dict) and isinstance(obj.get("text"), str) and obj["text"].strip():
                texts.append(obj["text"])
            else:
                bad += 1
        if not texts:
            raise ValueError(f"{p}: no JSON line with a non-empty \"text\" field ({bad} bad lines)")
        return texts
    texts = [t.strip() for t in re.split(r"\n\s*\n", raw) if t.strip()]
    if not texts:
        raise ValueError(f"{p}: empty target file")
    return texts


def split_target(target: Target, corpus: pd.DataFrame, topic_of: pd.Series, seed: int = 0,
                 file_texts: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """(mask of corpus rows barred from training, target texts). ``topic_of``: each corpus row's
    domain id (NaN when the run does not cover it)."""
    rng = np.random.default_rng(seed)
    if target.kind == "file":
        texts = file_texts if file_texts is not None else read_target_file(target.value)
        barred = corpus["text"].astype(str).isin(set(texts)).to_numpy()
        return barred, texts
    if target.kind == "topic":
        members = np.flatnonzero((topic_of.astype(str) == target.value).to_numpy())
        what = f"topic {target.value!r}"
    else:
        column, _, value = target.value.partition("=")
        if column not in corpus.columns or column in ("text", "id"):
            cols = [c for c in corpus.columns if c not in ("id", "text", "n_tokens")]
            raise ValueError(f"target label column {column!r} is not in the corpus (columns: {', '.join(cols) or 'none'})")
        members = np.flatnonzero((corpus[column].astype(str) == value).to_numpy())
        what = f"label {column}={value!r}"
    if members.size < 2:
        raise ValueError(f"target {what} has {members.size} document(s): it needs at least 2 "
                         "(half held out, half left to train on)")
    chosen = rng.permutation(members)[: max(1, int(round(members.size * target.holdout)))]
    barred = np.zeros(len(corpus), bool)
    barred[chosen] = True
    return barred, corpus["text"].astype(str).to_numpy()[np.sort(chosen)].tolist()


# ============================================================================ sampling and the swarm
def sample_rows(pools: list[np.ndarray], lengths: np.ndarray, weights: np.ndarray, tokens: int,
                rng: np.random.Generator) -> np.ndarray:
    """Corpus rows of one mixture's sample: domain i contributes about ``weights[i] * tokens``
    tokens, its documents in a fresh shuffled order per pass (passes = epochs)."""
    out = []
    for pool, w in zip(pools, weights):
        want = float(w) * tokens
        if want <= 0 or pool.size == 0:
            continue
        pool_tokens = float(lengths[pool].sum())
        passes = int(math.ceil(want / pool_tokens)) + 1
        order = np.concatenate([rng.permutation(pool) for _ in range(passes)])
        cum = np.cumsum(lengths[order])
        k = int(np.searchsorted(cum, want, side="right"))  # documents fully inside the share
        take = order[:k]
        if k < order.size:
            before = cum[k - 1] if k else 0.0
            if rng.random() < (want - before) / lengths[order[k]]:
                take = order[: k + 1]
        out.append(take)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


@dataclass
class ProxyResult:
    results: pd.DataFrame   # mixture_id, xent_bits
    info: dict


@dataclass
class ProxySetup:
    """What every mixture of one proxy run shares: the corpus encoded over the fixed vocabulary,
    the target's id sequence, each domain's training pool (corpus rows, target rows never among
    them) and the rows barred from training."""

    enc: Encoded
    eval_seq: np.ndarray
    eval_docs: int
    pools: list[np.ndarray]
    barred: np.ndarray

    def score(self, weights: np.ndarray, tokens_per_mixture: int, rng: np.random.Generator) -> float:
        """Cross-entropy (bits per token) on the target of a bigram model trained on a sample of
        ``weights`` (over the swarm's domains)."""
        take = sample_rows(self.pools, self.enc.lengths().astype(np.float64), weights, int(tokens_per_mixture), rng)
        return BigramKN(len(self.enc.vocab)).fit(self.enc.docs(take)).cross_entropy(self.eval_seq)


def prepare_proxy(ws, swarm, target: Target, *, eval_tokens: int = DEFAULT_EVAL_TOKENS, seed: int = 0,
                  file_texts: list[str] | None = None, documents: pd.DataFrame | None = None) -> ProxySetup:
    """Encode the corpus and split off the target (see the module docstring). ``documents``: the
    swarm run's documents (``id``, ``topic_id``) when the caller already loaded the run's mixture
    inputs; read from the run otherwise."""
    docs = _run_documents(ws, swarm.run) if documents is None else documents[["id", "topic_id"]]
    corpus = ws.load_corpus()
    pos = pd.Index(corpus["id"].astype(str)).get_indexer(docs["id"])
    topic_of = pd.Series(np.full(len(corpus), None, dtype=object))
    topic_of.iloc[pos[pos >= 0]] = docs["topic_id"].to_numpy()[pos >= 0]
    if target.kind == "topic" and target.value not in set(swarm.ids):
        raise ValueError(f"target topic {target.value!r} is not a domain of this swarm (domains: "
                         f"{', '.join(swarm.ids[:8])}{' ...' if len(swarm.ids) > 8 else ''})")
    barred, target_texts = split_target(target, corpus, topic_of, seed=seed, file_texts=file_texts)
    trainable = ~barred & topic_of.isin(set(swarm.ids)).to_numpy()
    enc = encode(corpus["text"].astype(str).tolist(), grow=trainable)
    order = np.random.default_rng(seed + 1).permutation(len(target_texts))
    ev = encode([target_texts[i] for i in order], vocab=enc.vocab, grow=[False] * len(order))
    cut = min(int(np.searchsorted(ev.start[1:], int(eval_tokens), side="left")) + 1, len(ev.start) - 1)
    pools = [np.flatnonzero(trainable & (topic_of == d).to_numpy()) for d in swarm.ids]
    return ProxySetup(enc, ev.flat[: ev.start[cut]], cut, pools, barred)


def run_proxy(ws, swarm, target: Target, *, tokens_per_mixture: int = DEFAULT_TOKENS,
              eval_tokens: int = DEFAULT_EVAL_TOKENS, seed: int = 0, file_texts: list[str] | None = None,
              progress: Callable[[int, int], None] | None = None, write: bool = True,
              documents: pd.DataFrame | None = None) -> ProxyResult:
    """Train and score the proxy for every mixture of ``swarm`` (a ``gem.mixlab.design.Swarm``
    over a run of ``ws``); with ``write``, save ``results.csv`` and ``proxy.json`` in the swarm
    folder (atomically). ``progress(done, total)`` after each mixture. ``documents``: as in
    ``prepare_proxy``."""
    t0 = time.perf_counter()
    setup = prepare_proxy(ws, swarm, target, eval_tokens=eval_tokens, seed=seed, file_texts=file_texts,
                          documents=documents)
    W = swarm.matrix()
    rows = []
    for k, mid in enumerate(swarm.weights.index):
        xent = setup.score(W[k], tokens_per_mixture, np.random.default_rng([int(seed), k]))
        rows.append({"mixture_id": mid, RESULT_COLUMN: xent})
        if progress:
            progress(k + 1, len(W))
    results = pd.DataFrame(rows)
    info = {"kind": "gem.mixlab-proxy", "model": "interpolated Kneser-Ney word bigram",
            "target": target.describe(), "holdout": target.holdout if target.kind != "file" else None,
            "tokens_per_mixture": int(tokens_per_mixture), "eval_docs": int(setup.eval_docs),
            "eval_tokens": int(len(setup.eval_seq) - setup.eval_docs), "vocab_size": len(setup.enc.vocab),
            "seed": int(seed), "barred_docs": int(setup.barred.sum()), "metric": RESULT_COLUMN,
            "lower_is_better": True, "seconds": round(time.perf_counter() - t0, 3)}
    if write and swarm.path is not None:
        write_text_atomic(Path(swarm.path) / "results.csv", results.to_csv(index=False, float_format="%.10g"))
        write_json_atomic(Path(swarm.path) / "proxy.json", info)
    return ProxyResult(results, info)


def _run_documents(ws, run: str) -> pd.DataFrame:
    """The run's documents with their domain (taxonomy id) as the swarm names them."""
    return mixture_inputs_from_run(ws, run, with_gis=False).documents[["id", "topic_id"]]
