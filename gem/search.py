"""Search a workspace's corpus: full-text (case-insensitive) and semantic (the corpus's own model).

Full-text (``full_text``): the query is matched case-insensitively against the corpus text with
pyarrow compute (``match_substring(ignore_case=True)``, a literal pattern, vectorised over the whole
column; measured 4-5x faster here than matching a pre-lower-cased copy), the text column read once
per corpus file and kept. Mode "phrase": the query as one substring; "all": every whitespace token of
the query as a substring (in any order); "auto" (default): both, phrase hits first. Rank: phrase
hits before token-only hits, then by the number of occurrences of the query tokens per 1,000
bytes of text (denser first), then corpus order.

Semantic (``semantic``): the query is embedded with the model and representation that made the
workspace embeddings (``gem.stress.workspace_embedder``: the same loader, cache and lock as the
embedding step; the embeddings meta names the model), and the documents are ranked by cosine
against the workspace's unit embeddings, memory-mapped from the .npy, checked against the corpus
ids and kept per (embeddings file, its mtime, the corpus's mtime), so only the first query pays
the load and the check. Precomputed embeddings cannot be searched
semantically (no model to embed the query): ValueError says so.

Both return a ``SearchResult``: a table (id, rank, score, snippet, and with ``annotate``: topic,
gis, excluded, reason, tags), plain text only: snippets are corpus text with whitespace collapsed,
never markup.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gem import stress  # stress.workspace_embedder looked up at each call: tests replace it
from gem.flags import DocFlags
from gem.runs import check_embeddings_match, load_run
from gem.workspace_ops import document_topic_ids

MODES = ("auto", "phrase", "all")
SNIPPET_CHARS = 160
MAX_QUERY = 500
MAX_KEPT = 4  # corpora whose text column stays in memory (per process)

_LOCK = threading.Lock()
_EMBED_LOCK = threading.Lock()
_TEXT_CACHE: dict[tuple, Any] = {}  # (corpus path, mtime) -> (ids ndarray, texts pyarrow array)
_MATRIX_CACHE: dict[tuple, np.ndarray] = {}  # (embeddings path, its mtime, corpus mtime) -> checked unit rows
_EMBEDDERS: dict[tuple, Any] = {}  # (representation, precision) -> embedder (its model loads once)


@dataclass
class SearchResult:
    query: str
    kind: str  # "full-text" or "semantic"
    table: Any  # pandas DataFrame
    n_matches: int  # documents matching (full-text) or searched (semantic)
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return self.table["id"].astype(str).tolist()


def _check_query(query) -> str:
    if not isinstance(query, str) or not query.strip():
        raise ValueError("the search query is empty: type a word or a phrase")
    query = " ".join(query.split())
    try:
        query.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates (bytes of argv that were not UTF-8): no tokenizer takes them
        raise ValueError("the search query is not valid UTF-8 text: type it in UTF-8") from None
    if len(query) > MAX_QUERY:
        raise ValueError(f"the search query is {len(query)} characters; the limit is {MAX_QUERY}")
    return query


def _check_k(k) -> int:
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return k


def corpus_text(ws):
    """(ids as an object ndarray, texts as a pyarrow array) of the workspace corpus, kept per corpus file."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = ws.corpus_path
    key = (str(path.resolve()), path.stat().st_mtime_ns)
    with _LOCK:
        hit = _TEXT_CACHE.get(key)
    if hit is not None:
        return hit
    table = pq.read_table(path, columns=["id", "text"])
    texts = table.column("text").combine_chunks()
    texts = pc.fill_null(pc.cast(texts, "large_string"), "")
    ids = pc.cast(table.column("id"), "string").combine_chunks().to_numpy(zero_copy_only=False).astype(object)
    out = (ids, texts)
    with _LOCK:
        for stale in [k for k in _TEXT_CACHE if k[0] == key[0]]:
            _TEXT_CACHE.pop(stale)
        while len(_TEXT_CACHE) >= MAX_KEPT:  # the oldest corpus goes first
            _TEXT_CACHE.pop(next(iter(_TEXT_CACHE)))
        _TEXT_CACHE[key] = out
    return out


def plain_line(text) -> str:
    """Untrusted text as one line of plain text: whitespace runs collapsed to one space, other control
    and format characters (terminal escapes, bidi overrides) replaced by U+FFFD."""
    s = " ".join(str(text).split())
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() or c == " " else "\ufffd" for c in s)


def snippet(text: str, query: str, width: int = SNIPPET_CHARS) -> str:
    """``width`` characters of ``text`` around the first occurrence of the query (or of its first
    token found), as ``plain_line``, "…" where cut."""
    low = text.lower()
    pos = low.find(query.lower())
    if pos < 0:
        hits = [p for p in (low.find(t) for t in query.lower().split()) if p >= 0]
        pos = min(hits) if hits else 0
    start = max(0, pos - width // 3)
    end = min(len(text), start + width)
    start = max(0, min(start, end - width))
    out = plain_line(text[start:end])
    return ("…" if start > 0 else "") + out + ("…" if end < len(text) else "")


def full_text(ws, query: str, k: int = 20, mode: str = "auto"):
    """Documents containing the query (case-insensitive); see the module docstring for modes and
    rank. Returns a SearchResult whose table has id, rank, score (occurrences per 1,000 bytes;
    phrase hits first), snippet, match ("phrase" or "all words")."""
    import pandas as pd
    import pyarrow.compute as pc

    query, k = _check_query(query), _check_k(k)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    t0 = time.perf_counter()
    ids, texts = corpus_text(ws)
    tokens = list(dict.fromkeys(query.lower().split()))

    def has(pattern: str) -> np.ndarray:
        return pc.match_substring(texts, pattern, ignore_case=True).to_numpy(zero_copy_only=False)

    phrase = has(query) if mode in ("auto", "phrase") or len(tokens) == 1 else None
    if mode == "phrase" or len(tokens) == 1:
        hit = is_phrase = phrase
    else:
        hit = has(tokens[0])
        for t in tokens[1:]:
            hit &= has(t)
        is_phrase = phrase if phrase is not None else np.zeros(len(hit), dtype=bool)
        hit = hit | is_phrase
    rows = np.flatnonzero(hit)
    n = rows.size
    if n:
        sub = texts.take(rows)
        count = np.zeros(n, dtype=np.float64)
        for t in tokens:
            count += pc.count_substring(sub, t, ignore_case=True).to_numpy(zero_copy_only=False)
        length = np.maximum(pc.binary_length(sub).to_numpy(zero_copy_only=False), 1)
        density = 1000.0 * count / length
        first = np.asarray(is_phrase, dtype=bool)[rows]
        order = np.lexsort((rows, -density, ~first))[:k]
        rows, density, first = rows[order], density[order], first[order]
        text_rows = texts.take(rows).to_pylist()
    else:
        density, first, text_rows = np.zeros(0), np.zeros(0, bool), []
    table = pd.DataFrame({"rank": np.arange(1, rows.size + 1), "id": ids[rows].astype(str),
                          "score": np.round(density, 3), "snippet": [snippet(t, query) for t in text_rows]})
    table["match"] = np.where(first, "phrase", "all words")
    return SearchResult(query, "full-text", table, int(n), time.perf_counter() - t0)


# ---------------------------------------------------------------------------- semantic
def embeddings_matrix(ws, representation: str = "final") -> np.ndarray:
    """The workspace's unit embeddings of ``representation``, memory-mapped, kept per file; refused
    (ValueError) when they were made for another corpus (``gem.runs.check_embeddings_match``: row
    count and ids digest, checked once per embeddings and corpus file)."""
    path = ws.embeddings_path(representation)
    key = (str(path.resolve()), path.stat().st_mtime_ns if path.exists() else -1, ws.corpus_path.stat().st_mtime_ns)
    with _LOCK:
        kept = _MATRIX_CACHE.get(key)
    if kept is not None:
        return kept
    X = ws.load_embeddings(representation, mmap=True)  # FileNotFoundError naming `gem embed` when missing
    ids, _ = corpus_text(ws)
    check_embeddings_match(ws, representation, ids, X.shape[0], len(ids))
    with _LOCK:
        for stale in [k for k in _MATRIX_CACHE if k[0] == key[0]]:
            _MATRIX_CACHE.pop(stale)
        _MATRIX_CACHE[key] = X
    return X


def query_embedder(ws, representation: str = "final"):
    """The embedder that made the workspace's ``representation`` embeddings
    (``gem.stress.workspace_embedder``), its model loaded once per process (ValueError when the
    embeddings were precomputed: there is no model to embed a query with)."""
    try:
        fresh = stress.workspace_embedder(ws, representation)  # cheap: the model loads on first encode
    except ValueError as exc:
        why = str(exc).split(", so ")[0]
        raise ValueError(f"{why}: semantic search needs that model to embed the query; use full-text search") from None
    key = (representation, fresh.fingerprint)
    with _LOCK:
        return _EMBEDDERS.setdefault(key, fresh)


def embed_query(ws, query: str, representation: str = "final") -> np.ndarray:
    """The query's unit vector in the workspace's embedding space. One short text runs on one torch
    thread: on the shared 2-core box, two threads took p50 800 ms per query under load (their
    barrier waits for a busy core) against 13 ms on one (measured; see benchmarks/results/search.md)."""
    import torch

    emb = query_embedder(ws, representation)
    query = _check_query(query)
    with _EMBED_LOCK:  # the thread count is process-wide: one query at a time changes it
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            unit, _ = emb.encode([query])
        finally:
            torch.set_num_threads(previous)
    return np.asarray(unit[0], dtype=np.float32)


def top_k_cosine(X: np.ndarray, q: np.ndarray, k: int, chunk: int = 262_144) -> tuple[np.ndarray, np.ndarray]:
    """(rows, scores) of the ``k`` rows of unit matrix ``X`` nearest to unit vector ``q`` by cosine,
    best first (chunked GEMV, so a memory-mapped matrix is streamed)."""
    n = X.shape[0]
    k = min(int(k), n)
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    scores = np.empty(n, dtype=np.float32)
    q = np.asarray(q, dtype=np.float32)
    for s in range(0, n, chunk):
        scores[s:s + chunk] = np.asarray(X[s:s + chunk], dtype=np.float32) @ q
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.lexsort((top, -scores[top]))]
    return top.astype(np.int64), scores[top]


def semantic(ws, query: str, k: int = 20, representation: str = "final"):
    """The ``k`` documents nearest to the query by cosine (score = cosine), with snippets."""
    import pandas as pd

    query, k = _check_query(query), _check_k(k)
    t0 = time.perf_counter()
    X = embeddings_matrix(ws, representation)
    ids, texts = corpus_text(ws)
    q = embed_query(ws, query, representation)
    rows, scores = top_k_cosine(X, q, k)
    text_rows = texts.take(rows).to_pylist()
    table = pd.DataFrame({"rank": np.arange(1, rows.size + 1), "id": ids[rows].astype(str),
                          "score": np.round(scores.astype(np.float64), 4),
                          "snippet": [plain_line(t[:SNIPPET_CHARS]) + ("…" if len(t) > SNIPPET_CHARS else "")
                                      for t in text_rows]})
    return SearchResult(query, "semantic", table, int(X.shape[0]), time.perf_counter() - t0)


def search(ws, query: str, k: int = 20, semantic_search: bool = False, mode: str = "auto",
           representation: str = "final", run: str | None = None, analysis=None):
    """``full_text`` or ``semantic``, then ``annotate`` (topic of ``run``, GIS from ``analysis``, flags)."""
    result = (semantic(ws, query, k, representation) if semantic_search else full_text(ws, query, k, mode))
    return annotate(ws, result, run=run, analysis=analysis)


# ---------------------------------------------------------------------------- annotation
def annotate(ws, result: SearchResult, run: str | None = None, analysis=None) -> SearchResult:
    """Add topic (the stable taxonomy id of the document's cluster in ``run``; the cluster "c<k>"
    when the run is not synced; empty when the document is not in the run), gis (from a
    gem.gis.RunAnalysis of that run, when given) and the flags (excluded, reason, tags) by id."""
    import pandas as pd

    t = result.table.copy()
    ids = t["id"].astype(str)
    if run is not None:
        topic = _topics_by_id(ws, run, ids.tolist())
        t["topic"] = topic
    if analysis is not None:
        gis = pd.Series(np.asarray(analysis.gis, dtype=np.float64), index=pd.Index(analysis.ids.astype(str)))
        gis = gis[~gis.index.duplicated()]
        t["gis"] = np.round(gis.reindex(ids).to_numpy(), 3)
    flags = DocFlags(ws).flags_of(ids.tolist())
    if len(flags):
        f = flags.set_index("id")
        hit = ids.isin(f.index)
        t["excluded"] = ids.map(f["excluded"]).fillna(False).astype(bool).to_numpy()
        t["reason"] = ids.map(f["reason"]).astype(object).fillna("").to_numpy()  # all-None reasons map to float NaN
        t["tags"] = [", ".join(f.at[i, "tags"]) if h else "" for i, h in zip(ids, hit)]
    else:
        t["excluded"], t["reason"], t["tags"] = False, "", ""
    result.table = t
    return result


def _topics_by_id(ws, run: str, ids: list[str]) -> list[str]:
    """Each document's stable topic id in ``run`` (``gem.workspace_ops.document_topic_ids``: merges and
    splits followed), "c<k>" for a run the taxonomy has not matched, "" for one it did not fit."""
    import pandas as pd

    r = load_run(ws, run)
    cluster = r.assignments["cluster"].to_numpy(np.int64)
    try:
        stable = document_topic_ids(ws, run, run=r)
    except ValueError:  # a mapping that misses clusters of this run: show the clusters
        stable = None
    labels = stable if stable is not None else np.asarray([f"c{c}" for c in cluster], dtype=object)
    return pd.Series(labels, index=pd.Index(r.assignments["id"].astype(str))).reindex(ids).fillna("").tolist()
