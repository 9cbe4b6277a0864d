"""Mixture inputs from a fitted clustering: ``run_domains`` turns a run's assignments and the
corpus into the domain table and the per-document table; ``run_metadata`` gathers the provenance
``mixture.json`` records (corpus fingerprint, embedding model, clustering); ``RunMixtureInputs``
holds all of it (and builds the mixture plus the assignments ``write_bundle`` takes), and
``mixture_inputs_from_run`` reads a saved run into one.

Documents excluded by curators (``gem.flags``) never reach an export, whether or not the run was
fitted with them: they are dropped from the documents (so from the token counts, assignments.parquet
and the Dolma attributes), listed in ``RunMixtureInputs.excluded`` (the bundle's blocklist
``excluded_documents.jsonl``: id, reason, note, author, at) and summed per topic in
``RunMixtureInputs.removed`` (``exclusion_summary``). Document tags travel in a ``tags`` column.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from gem.flags import DocFlags, keep_mask
from gem.gis import gis_for_model
from gem.mixture.errors import MixtureError
from gem.mixture.weights import Mixture, build_mixture, make_domains, topic_domain_id
from gem.runs import check_embeddings_match, load_run
from gem.store import file_sha256, read_json
from gem.taxonomy import Taxonomy
from gem.workspace_ops import run_document_topics


def run_domains(
    assignments: pd.DataFrame,
    corpus: pd.DataFrame,
    n_clusters: int,
    mass: Iterable | None = None,
    topics: pd.DataFrame | None = None,
    document_topics: Iterable | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str]]:
    """Topic-level domain table of one run, and its per-document table.

    ``assignments``: id, cluster (and probability: without it the documents table has no
    probability column, which ``RunMixtureInputs.with_scores`` fills). ``corpus``: id, n_tokens (text
    gives n_chars for Dolma). ``mass``: the fitted GEM mass per cluster (``model.weights_``).
    ``topics``: the taxonomy's topics of this run (``Taxonomy.topics(run=...)``: cluster, id,
    name, parent, parent_name, excluded) — the stable ids; without it a cluster's id is "t<k>".
    ``document_topics``: each document's stable id, a Series indexed by document id
    (``gem.workspace_ops.run_document_topics``, which also adds the rows of split children to ``topics``)
    or a sequence in ``assignments`` order; without it a document takes its cluster's.
    One domain per stable id: clusters merged into one topic sum their documents, tokens and mass; a
    split topic gives way to its children (the cluster's mass shared by their document counts).
    Returns (domains, documents[id, cluster, topic_id, probability, n_tokens, n_chars],
    parent_labels)."""
    need = [c for c in ("id", "cluster") if c not in assignments.columns]
    if need:
        raise MixtureError(f"run assignments lack columns {need}")
    if "n_tokens" not in corpus.columns:
        raise MixtureError("corpus has no n_tokens column: re-ingest it (gem ingest counts tokens)")
    K = int(n_clusters)
    cl = assignments["cluster"].to_numpy().astype(np.int64)
    if cl.size and (cl.min() < 0 or cl.max() >= K):
        raise MixtureError(f"run assignments name cluster {int(cl.max())} but the model has {K} clusters")
    docs = pd.DataFrame({"id": assignments["id"].astype(str).to_numpy(), "cluster": cl})
    if "probability" in assignments.columns:
        docs["probability"] = assignments["probability"].to_numpy(np.float64)
    cidx = pd.Index(corpus["id"].astype(str))
    pos = cidx.get_indexer(docs["id"])
    if (pos < 0).any():
        raise MixtureError(f"run document {docs['id'][pos < 0].iloc[0]!r} is not in the workspace corpus "
                           "(the corpus changed after the fit: re-run `gem fit`)")
    docs["n_tokens"] = corpus["n_tokens"].to_numpy()[pos].astype(np.int64)
    if "text" in corpus.columns:
        docs["n_chars"] = corpus["text"].astype(str).str.len().to_numpy()[pos].astype(np.int64)
    width = max(2, len(str(K - 1)))
    ids = [f"t{k:0{width}d}" for k in range(K)]
    labels = [f"topic {k}" for k in range(K)]
    parents: list[str | None] = [None] * K
    excluded = [False] * K
    parent_labels: dict[str, str] = {}
    info: dict[str, tuple[str, str | None, bool]] = {}  # stable id -> (label, parent, excluded)
    if topics is not None and len(topics):
        t = topics.dropna(subset=["cluster"])
        by_cluster = {int(r.cluster): r for r in t.itertuples(index=False)}
        missing = [k for k in range(K) if k not in by_cluster]
        if missing:
            raise MixtureError(f"the taxonomy maps no topic to cluster(s) {missing[:5]} of this run: re-sync it")
        for k in range(K):
            ids[k] = str(by_cluster[k].id)
        for r in topics.itertuples(index=False):
            parent = getattr(r, "parent", None)
            parent = parent if isinstance(parent, str) and parent else None
            info[str(r.id)] = (str(r.name) if isinstance(r.name, str) and r.name else str(r.id), parent, bool(r.excluded))
            pname = getattr(r, "parent_name", None)
            if parent and isinstance(pname, str) and pname:
                parent_labels[parent] = pname
    for k in range(K):
        info.setdefault(ids[k], (labels[k], parents[k], excluded[k]))
    by_cluster_id = np.asarray(ids, dtype=object)[cl] if K else np.asarray([], dtype=object)
    if document_topics is None:
        doc_tid = by_cluster_id
    else:
        if isinstance(document_topics, pd.Series):
            document_topics = document_topics.reindex(docs["id"].to_numpy())
            if document_topics.isna().any():
                raise MixtureError(f"no stable id for document {docs['id'][document_topics.isna().to_numpy()].iloc[0]!r}")
        doc_tid = np.asarray([str(x) for x in document_topics], dtype=object)
        if doc_tid.size != cl.size:
            raise MixtureError(f"document_topics has {doc_tid.size} entries for {cl.size} documents")
        unknown = sorted(set(doc_tid.tolist()) - set(info))
        if unknown:
            raise MixtureError(f"documents are routed to topic {unknown[0]!r}, which the topics table lacks")
    docs["topic_id"] = doc_tid
    # one domain per stable id, in cluster order, then ids only documents reach (split children); an id
    # whose documents all went elsewhere (a split topic) has no domain
    routed_away = set(by_cluster_id[doc_tid != by_cluster_id].tolist())
    order = list(dict.fromkeys(ids + sorted(set(doc_tid.tolist()) - set(ids))))
    pos = {t: i for i, t in enumerate(order)}
    dpos = np.asarray([pos[t] for t in doc_tid], dtype=np.int64)
    n_docs = np.bincount(dpos, minlength=len(order))
    n_tok = np.bincount(dpos, weights=docs["n_tokens"].to_numpy(np.float64), minlength=len(order))
    dmass = None
    if mass is not None:
        m = np.asarray(mass, dtype=np.float64)
        per_cluster = np.bincount(cl, minlength=K)
        dmass = np.bincount(dpos, weights=m[cl] / np.maximum(per_cluster[cl], 1), minlength=len(order))
        for k in np.flatnonzero(per_cluster == 0):  # a cluster without documents keeps its mass on its topic
            dmass[pos[ids[k]]] += m[k]
    keep = [i for i, t in enumerate(order) if n_docs[i] > 0 or t not in routed_away]
    order = [order[i] for i in keep]
    domains = make_domains(order, n_tok[keep].round().astype(np.int64), n_docs=n_docs[keep],
                           labels=[info[t][0] for t in order], parents=[info[t][1] for t in order],
                           mass=None if dmass is None else dmass[keep], excluded=[info[t][2] for t in order])
    return domains, docs, parent_labels


def corpus_fingerprint(path: str | os.PathLike) -> str:
    """The corpus fingerprint written into mixture.json: ``sha256:<hex>`` of the file's bytes."""
    return "sha256:" + file_sha256(path)


def embedding_model_from_meta(meta: dict) -> dict[str, Any] | None:
    """``mixture.json``'s embedding model from a representation's embeddings metadata (written by
    ``embed_workspace`` / ``gem embed``): ``{"name": meta["model"], "fingerprint": meta["fingerprint"]}``;
    imported vectors are named "precomputed (<file>)" and have no fingerprint. None when the
    metadata names neither."""
    name = meta.get("model") or None
    if name is None and meta.get("source") == "precomputed":
        name = f"precomputed ({Path(meta['path']).name})" if meta.get("path") else "precomputed"
    fingerprint = meta.get("fingerprint") or None
    if name is None and fingerprint is None:
        return None
    return {"name": name, "fingerprint": fingerprint}


def run_metadata(ws, representation: str, clustering: dict, fingerprint: str | None = None) -> dict[str, Any]:
    """Provenance for mixture.json: the corpus fingerprint (``fingerprint`` when the caller already
    has it, else hashed now), the embedding model of ``representation`` (``embedding_model_from_meta``)
    and the ``clustering``."""
    meta_path = ws.embeddings_meta_path(representation)
    emb_meta = read_json(meta_path) if meta_path.exists() else {}
    return {
        "corpus_fingerprint": fingerprint or corpus_fingerprint(ws.corpus_path),
        "embedding_model": embedding_model_from_meta(emb_meta),
        "clustering": clustering,
    }


def topic_list_taxonomy(domains: pd.DataFrame, run_name: str | None = None) -> dict:
    """A minimal ``taxonomy.json`` for a run with no workspace taxonomy: its topics in cluster
    order (id, cluster, label, parent, excluded, n_docs, n_tokens), so the domain ids of the
    per-document files always come with their meaning."""
    return {"format": "gem-topics", "run": run_name,
            "topics": [{"id": r.id, "cluster": k, "label": r.label, "parent": r.parent, "excluded": bool(r.excluded),
                        "n_docs": int(r.n_docs), "n_tokens": int(r.n_tokens)}
                       for k, r in enumerate(domains.itertuples(index=False))]}


@dataclass
class RunMixtureInputs:
    """Everything ``mixture_inputs_from_run`` gathers for one run (used by the CLI and the app).

    ``taxonomy``: the workspace taxonomy's export; None becomes the run's topic list
    (``topic_list_taxonomy``), since per-document files need the meaning of their domain ids."""

    domains: pd.DataFrame
    documents: pd.DataFrame
    parent_labels: dict[str, str]
    metadata: dict[str, Any]
    taxonomy: dict | None
    notes: list[str]
    excluded: pd.DataFrame | None = None  # the blocklist: id, reason, note, author, at
    removed: pd.DataFrame | None = None  # per topic: what the exclusions removed (exclusion_summary)

    def __post_init__(self) -> None:
        if self.taxonomy is None:
            self.taxonomy = topic_list_taxonomy(self.domains, (self.metadata.get("clustering") or {}).get("run"))

    def build(self, strategy: str, level: str = "topic", **kw) -> tuple[Mixture, pd.DataFrame]:
        """The mixture and the assignments table for ``write_bundle`` (domain ids at ``level``)."""
        mix = build_mixture(self.domains, strategy, level=level, parent_labels=self.parent_labels,
                            metadata=self.metadata, **kw)
        mix.warnings = list(self.notes) + mix.warnings
        return mix, self.assignments(level)

    def assignments(self, level: str = "topic") -> pd.DataFrame:
        """Per-document rows for ``write_bundle``, with domain ids at ``level``."""
        t = self.domains
        domain_of = {i: topic_domain_id(i, p, bool(x), level) for i, p, x in zip(t["id"], t["parent"], t["excluded"])}
        a = self.documents.copy()
        a["domain_id"] = a["topic_id"].map(domain_of)
        return a

    def with_scores(self, X: np.ndarray, model, gis: bool = True) -> "RunMixtureInputs":
        """A copy whose documents carry what assignments.parquet and the Dolma attributes record:
        each document's probability of its cluster (kept when already there; else the model's
        ``predict_proba``, or 1.0 for a model without one) and, with ``gis``, its GIS
        (``gem.gis.gis_for_model``). ``X``: the documents' embeddings, in ``documents`` order."""
        docs = self.documents.copy()
        labels = docs["cluster"].to_numpy()
        if "probability" not in docs.columns or not np.isfinite(docs["probability"].to_numpy(np.float64)).all():
            if hasattr(model, "predict_proba"):
                proba = np.asarray(model.predict_proba(X), dtype=np.float64)
                docs["probability"] = proba[np.arange(len(labels)), labels]
            else:
                docs["probability"] = 1.0
        if gis:
            docs["gis"] = gis_for_model(X, model, labels=labels)
        return dataclasses.replace(self, documents=docs)


def mixture_inputs_from_run(ws, run_name: str, with_gis: bool = True) -> RunMixtureInputs:
    """Gather a saved run's domains (stable taxonomy ids when the run is synced into the
    workspace taxonomy, else "t<k>"), documents, GIS, and provenance for mixture.json."""
    run = load_run(ws, run_name)
    model = run.model
    corpus = ws.load_corpus()
    notes: list[str] = []
    mass = getattr(model, "weights_", None)
    K = int(len(mass) if mass is not None else np.asarray(model.mean_directions_).shape[0])
    topics, taxonomy, doc_topics = None, None, None
    if Path(ws.taxonomy_db).exists():
        tax = Taxonomy(ws.taxonomy_db)
        try:
            topics, doc_topics = run_document_topics(ws, tax, run_name, run=run)
        except KeyError:
            notes.append(f"run {run_name!r} is not synced into the taxonomy: domains use cluster ids t<k>")
        taxonomy = tax.export_json()
    flags = DocFlags(ws)
    blocklist = flags.blocklist()
    assignments = run.assignments
    keep = keep_mask(assignments["id"].astype(str).to_numpy(), blocklist["id"])
    domains, docs, parent_labels = run_domains(assignments[keep].reset_index(drop=True), corpus, K, mass=mass,
                                               topics=topics, document_topics=doc_topics)
    tags = flags.tags_of()
    if tags:
        docs["tags"] = [tags.get(i, []) for i in docs["id"]]
    removed = None
    if len(blocklist):
        synced = doc_topics is not None  # then `tax` is the workspace taxonomy
        removed = exclusion_summary(ws, run, corpus, domains, assignments, blocklist["id"], doc_topics,
                                    tax.run_mapping(run_name) if synced else None, tax.router() if synced else None)
        notes.append(f"{int(removed['removed_docs'].sum()):,} excluded document(s) left out "
                     f"({int(removed['removed_tokens'].sum()):,} tokens); listed in excluded_documents.jsonl")
        emptied = (domains["n_docs"].to_numpy() == 0) & (removed["removed_docs"].to_numpy()[:len(domains)] > 0) \
            & ~domains["excluded"].to_numpy(bool)
        if emptied.any():  # no document left: a weight (say, its fitted mass) would point at nothing
            domains = domains.copy()
            domains.loc[emptied, "excluded"] = True
            notes.append(f"every document of topic(s) {', '.join(domains.loc[emptied, 'id'].astype(str))} is excluded: "
                         "the topic is left out of the mixture")
    params = dict(getattr(run, "params", {}) or {})
    rep = run.representation
    metadata = run_metadata(ws, rep, {"run": run_name, "method": getattr(run, "method", None),
                                      "representation": rep, "n_clusters": K, "params": params})
    inputs = RunMixtureInputs(domains, docs, parent_labels, metadata, taxonomy, notes,
                              excluded=blocklist if len(blocklist) else None, removed=removed)
    if with_gis:
        try:
            X_all = ws.load_embeddings(rep, mmap=True)
        except FileNotFoundError as exc:
            notes.append(f"no GIS in assignments ({exc})")
        else:
            check_embeddings_match(ws, rep, corpus["id"].astype(str), X_all.shape[0], len(corpus))
            pos = pd.Index(corpus["id"].astype(str)).get_indexer(docs["id"])
            inputs = inputs.with_scores(np.asarray(X_all[pos], dtype=np.float32), model)
    return inputs


def exclusion_summary(ws, run, corpus: pd.DataFrame, domains: pd.DataFrame, assignments: pd.DataFrame,
                      excluded_ids, document_topics: pd.Series | None = None,
                      cluster_topics: dict[int, str] | None = None, router=None) -> pd.DataFrame:
    """Per domain (``domains``' rows): id, label, kept documents and tokens (as exported), and what
    the exclusions removed: removed_docs, removed_tokens, removed_token_share (of the topic's tokens
    before). An excluded document counts for its stable id: ``document_topics`` (each run
    document's id, ``run_document_topics``) or, without it, its cluster's domain (``domains`` in
    cluster order, as ``run_domains`` makes them without a taxonomy). One the run was fitted without
    takes the cluster the model predicts for it: that cluster's topic (``cluster_topics``, the run's
    mapping) routed through merges and splits by ``router`` (``Taxonomy.router``). A row ``(no topic)`` counts those that cannot be placed (no embeddings)."""
    ids = pd.Index(corpus["id"].astype(str))
    excluded = pd.Index(pd.unique(np.asarray(excluded_ids, dtype=object).astype(str)))
    excluded = excluded[ids.get_indexer(excluded) >= 0]  # ids no longer in the corpus remove nothing
    tokens = corpus["n_tokens"].to_numpy(np.int64)
    a_ids = pd.Index(assignments["id"].astype(str))
    pos = a_ids.get_indexer(excluded)
    in_run = pos >= 0
    cluster = np.full(len(excluded), -1, dtype=np.int64)
    cluster[in_run] = assignments["cluster"].to_numpy(np.int64)[pos[in_run]]
    X_missing = None
    missing = np.flatnonzero(~in_run)
    if missing.size:  # fitted without them: where would the model put them?
        try:
            from gem.baselines import uses_raw_vectors  # lazy: gem.baselines imports scikit-learn (~0.8 s)

            rep = run.representation
            rows = ids.get_indexer(excluded[missing])
            X = ws.load_raw_embeddings(rep) if uses_raw_vectors(run.method) else ws.load_embeddings(rep, mmap=True)
            X_missing = np.asarray(X[rows], dtype=np.float32)
            cluster[missing] = np.asarray(run.model.predict(X_missing), dtype=np.int64)
        except (OSError, ValueError, AttributeError):
            X_missing = None
    topic = np.full(len(excluded), None, dtype=object)
    if document_topics is None:  # no taxonomy: domains are the clusters, in order
        placed = cluster >= 0
        topic[placed] = domains["id"].to_numpy(dtype=object)[cluster[placed]]
    else:
        topic[in_run] = document_topics.reindex(excluded[in_run]).to_numpy(dtype=object)
        predicted = missing[cluster[missing] >= 0]
        if predicted.size and X_missing is not None and cluster_topics:
            cluster_tid = np.asarray([cluster_topics.get(int(c)) for c in cluster[predicted]], dtype=object)
            known = np.asarray([t is not None for t in cluster_tid])
            if router is not None and known.any():
                cluster_tid[known] = router.route(cluster_tid[known], X_missing[cluster[missing] >= 0][known])
            topic[predicted] = cluster_tid
    d_index = pd.Index(domains["id"].astype(str))
    dpos = d_index.get_indexer(pd.Index(topic).astype(str))
    placed = np.asarray([t is not None for t in topic]) & (dpos >= 0)
    ex_tokens = tokens[ids.get_indexer(excluded)]
    n = len(domains)
    n_rem = np.bincount(dpos[placed], minlength=n)[:n]
    t_rem = np.bincount(dpos[placed], weights=ex_tokens[placed].astype(np.float64), minlength=n)[:n]
    kept_tokens = domains["n_tokens"].to_numpy(np.float64)
    out = pd.DataFrame({"id": domains["id"].to_numpy(), "label": domains["label"].to_numpy(),
                        "kept_docs": domains["n_docs"].to_numpy(np.int64),
                        "kept_tokens": kept_tokens.astype(np.int64),
                        "removed_docs": n_rem.astype(np.int64), "removed_tokens": t_rem.round().astype(np.int64)})
    if (~placed).any():
        out.loc[len(out)] = ["(no topic)", "excluded, not placed", 0, 0, int((~placed).sum()),
                             int(ex_tokens[~placed].sum())]
    before = out["kept_tokens"] + out["removed_tokens"]
    out["removed_token_share"] = np.where(before > 0, out["removed_tokens"] / before.clip(lower=1), 0.0)
    return out
