"""A saved run joined to the workspace's curation: its GIS analysis, its sync into the taxonomy, each
of its documents' stable topic id, and a split previewed on its documents.

The modules below work on arrays and databases and never open a run folder: ``gem.gis`` (GIS,
keywords, representatives), ``gem.taxonomy`` (topics, the matching, merge and split), ``gem.flags``
(the curators' document decisions). ``gem.runs`` reads and writes run folders (and leaves the
excluded documents out). This module joins them over a ``Workspace``; the app's pages, the CLI and
the fit policy (``gem.refit``) call it. See tests/test_layers.py for the layers.
"""
from __future__ import annotations

import numpy as np

from .gis import RunAnalysis, analyze
from .runs import flag_exclusions, load_run, load_run_documents
from .store import Workspace
from .taxonomy import MIN_COSINE, SplitProposal, SyncReport, Taxonomy, check_split_k, propose_split

__all__ = ["analyze_run", "sync_saved_run", "document_topic_ids", "run_document_topics", "propose_topic_split"]


def analyze_run(
    ws: Workspace,
    run_name: str,
    top: int = 10,
    n_keywords: int = 10,
    beta: float = 0.5,
    n_neighbors: int = 10,
    max_reference: int = 2000,
) -> RunAnalysis:
    """``gem.gis.analyze`` for a run saved with gem.runs.save_run: loads the run, its embeddings and
    the corpus. Rows follow the run's assignments order; ``extra['rows']`` are the corpus rows.
    Documents excluded by curators (``gem.flags``) are left out, also from a run fitted with them:
    they get no GIS, and neither the topic table nor the keywords count them
    (``extra['n_excluded']``: how many of the run's documents were left out)."""
    run, docs, rows, X = load_run_documents(ws, run_name, exclude_flagged=True)
    labels = run.assignments["cluster"].to_numpy()
    n_tokens = docs["n_tokens"].to_numpy() if "n_tokens" in docs.columns else None
    out = analyze(
        X, run.model, docs["text"].tolist(), labels=labels,
        ids=docs["id"].astype(str).to_numpy(), n_tokens=n_tokens, run=run_name, top=top, n_keywords=n_keywords,
        beta=beta, n_neighbors=n_neighbors, max_reference=max_reference,
    )
    out.extra.update({"representation": run.representation, "rows": rows, "n_excluded": run.n_excluded})
    return out


def sync_saved_run(ws: Workspace, run_name: str, analysis: RunAnalysis | None = None, min_cosine: float = MIN_COSINE,
                   author: str = "system") -> tuple[Taxonomy, SyncReport, RunAnalysis]:
    """Sync a saved run into the workspace taxonomy (``ws.taxonomy_db``), with keywords and sizes
    from ``analyze_run`` (computed when not given) and each cluster's member ids from the run's
    assignments (so matching checks shared members). Documents curators excluded (``gem.flags``)
    are left out of the members, also of a run fitted with them, as they are of the GIS, keywords
    and sizes. Returns (Taxonomy, SyncReport, analysis)."""
    if analysis is None:
        analysis = analyze_run(ws, run_name)
    assignments = load_run(ws, run_name).assignments
    K = int(np.asarray(analysis.mean_directions).shape[0])
    ids = assignments["id"].astype(str).to_numpy()
    clusters = assignments["cluster"].to_numpy().astype(np.int64)
    if clusters.size and (clusters.min() < 0 or clusters.max() >= K):
        raise ValueError(f"run {run_name!r}: assignments name clusters outside 0..{K - 1}")
    keep, _ = flag_exclusions(ws, ids)
    ids, clusters = ids[keep], clusters[keep]
    order = np.argsort(clusters, kind="stable")
    members = np.split(ids[order], np.searchsorted(clusters[order], np.arange(1, K)))
    tax = Taxonomy(ws.taxonomy_db)
    table = analysis.table
    report = tax.sync_run(
        run_name,
        analysis.mean_directions,
        keywords={int(k): list(v) for k, v in analysis.keywords.items()},
        sizes=table["n_docs"].tolist(),
        min_cosine=min_cosine,
        author=author,
        members=members,
    )
    return tax, report, analysis


def document_topic_ids(ws: Workspace, run_name: str, run=None, X: np.ndarray | None = None,
                       tax: Taxonomy | None = None) -> np.ndarray | None:
    """The stable id of every document of a saved run (rows of its assignments), or None when the
    run is not synced into the taxonomy (``tax``, default the workspace's). Embeddings are read
    only when a topic is split."""
    if tax is None:
        if not ws.taxonomy_db.exists():
            return None
        tax = Taxonomy(ws.taxonomy_db)
    mapping = tax.run_mapping(run_name)
    if not mapping:
        return None
    run = run if run is not None else load_run(ws, run_name)
    cluster = run.assignments["cluster"].to_numpy().astype(np.int64)
    missing = sorted(set(np.unique(cluster).tolist()) - set(mapping))
    if missing:
        raise ValueError(f"the taxonomy maps no topic to cluster(s) {missing[:5]} of run {run_name!r}: re-sync it")
    return tax.route_documents(np.asarray([mapping[c] for c in cluster], dtype=object),
                               X if X is not None else (lambda: load_run_documents(ws, run_name, columns=["id"])[3]))


def run_document_topics(ws: Workspace, tax: Taxonomy, run_name: str, run=None, X: np.ndarray | None = None):
    """(topics, document ids) of a synced run for the mixture: ``tax.topics(run=...)`` (one row per
    cluster) plus a row (cluster NA) for each split child that receives documents, and every
    document's stable id (``document_topic_ids``) as a Series indexed by document id (None when the
    run has no mapping). Raises KeyError when the run is not synced."""
    import pandas as pd

    topics = tax.topics(run=run_name)
    run = run if run is not None else load_run(ws, run_name)
    run_ids = run.assignments["id"].astype(str).to_numpy()
    doc_ids = document_topic_ids(ws, run_name, run=run, X=X, tax=tax)
    if doc_ids is None:
        return topics, None
    extra = sorted(set(doc_ids.tolist()) - set(topics["id"]))
    if extra:
        everyone = tax.topics()
        rows = everyone[everyone["id"].isin(extra)].assign(cluster=pd.NA)
        topics = pd.concat([topics, rows[[c for c in topics.columns if c in rows.columns]]], ignore_index=True)
        topics["cluster"] = topics["cluster"].astype("Int64")
    return topics, pd.Series(doc_ids, index=run_ids, name="topic_id")


def propose_topic_split(ws: Workspace, tax: Taxonomy, run_name: str, topic_id: str, k: int, random_state: int = 0,
                        n_examples: int = 3) -> SplitProposal:
    """Preview splitting ``topic_id`` into ``k`` children (2..8) on its documents in run
    ``run_name`` (``gem.taxonomy.propose_split`` on their embeddings, texts and ids); nothing is
    stored: ``tax.accept_split(proposal, author)`` stores it, unless the topic changed since."""
    k = check_split_k(k)
    version = tax.split_version(topic_id)
    run, docs, _, X = load_run_documents(ws, run_name, columns=["id", "text"])
    tids = document_topic_ids(ws, run_name, run=run, X=X, tax=tax)
    if tids is None:
        raise ValueError(f"run {run_name!r} is not synced into the taxonomy: open it on the Taxonomy page or "
                         f"run `gem taxonomy -w {ws.root} --run {run_name}` first")
    rows = np.flatnonzero(tids == topic_id)
    return propose_split(X[rows], docs["text"].astype(str).to_numpy()[rows], docs["id"].astype(str).to_numpy()[rows],
                         k, topic_id=topic_id, run=run_name, version=version, random_state=random_state,
                         n_examples=n_examples)
