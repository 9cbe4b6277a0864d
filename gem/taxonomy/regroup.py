"""Merging and splitting topics, and the stable id of each document that follows from them.

Merge (``Taxonomy.merge_topics``): two or more topics become one. The survivor is the one named by
``into``, else the first id given; it keeps its id, name, description, exclusion and every other
curator field. The others are retired with ``merged_into`` pointing to it (audited on both sides,
their own labels kept). Their directions and member sketches stay, and a sync matches them alongside
the live topics: a cluster of a later run that matches a merged topic maps to its survivor
(``run_topics.via`` records through which), so several clusters of one run can share a stable id.
The mappings of already-synced runs are re-pointed at once. ``unmerge_topic`` undoes it: the
topic's clusters go back to it.

Split (``propose_split`` then ``Taxonomy.accept_split``): GEM is fitted on the embeddings of the
topic's documents (K = 2..8); the preview has each child's size, keywords (GIS-weighted c-TF-IDF,
``gem.gis.topic_keywords``), top-GIS example texts and mean direction, and changes nothing
(``propose_split`` is pure, on arrays; ``gem.workspace_ops.propose_topic_split`` reads a saved
run's documents of the topic and the topic's version for it).
Accepting creates one topic per child with a new stable id, ``split_from`` and ``parent`` naming
the split topic (which becomes their parent node) and the child's direction stored
(``split_direction``). The split topic keeps its cluster matching as before; its documents go to
the child whose direction is nearest (largest cosine), in every run. ``unsplit_topic`` retires the
children (their documents return to the parent).

A document's stable id (``Taxonomy.route_documents``; of a saved run's documents,
``gem.workspace_ops.document_topic_ids``): its cluster's topic in the run's mapping; while that
topic was split, the nearest child; a merged topic, its survivor. The mixture domains, the exports
and the student's training labels all use it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from gem.gis import gis_for_model, provisional_name, representatives, topic_keywords
from gem.store import utc_now_ms
from gem.taxonomy.db import TaxonomyDB, distinct_name, from_blob, name_key, to_blob
from gem.taxonomy.matching import merged_survivors

MIN_SPLIT_K, MAX_SPLIT_K = 2, 8
MIN_DOCS_PER_CHILD = 5  # a split into k needs at least k * 5 documents


@dataclass
class SplitProposal:
    """A previewed split of one topic (nothing stored yet): per child (largest first) its size,
    keywords, example texts (id, text) and unit mean direction. ``version``: the topic's version
    when proposed (``accept_split`` refuses if someone changed it since)."""

    topic_id: str
    run: str
    version: int
    sizes: list[int]
    keywords: list[list[str]]
    examples: list[list[tuple[str, str]]]
    directions: np.ndarray
    doc_ids: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)

    @property
    def k(self) -> int:
        return len(self.sizes)

    def table(self):
        """The preview as a DataFrame (child, documents, share, keywords, examples), plain text."""
        import pandas as pd

        n = max(1, sum(self.sizes))
        return pd.DataFrame({
            "child": [f"{self.topic_id}.{j + 1}" for j in range(self.k)],
            "documents": self.sizes,
            "share %": [round(100 * s / n, 1) for s in self.sizes],
            "keywords": [", ".join(k) for k in self.keywords],
            "examples": [" | ".join(" ".join(t.split())[:160] for _, t in ex) for ex in self.examples],
        })

    def to_json(self) -> dict:
        return {"topic_id": self.topic_id, "run": self.run, "k": self.k, "sizes": self.sizes,
                "keywords": self.keywords,
                "examples": [[{"id": i, "text": t} for i, t in ex] for ex in self.examples]}


def check_split_k(k) -> int:
    """``k`` as a whole number of children from MIN_SPLIT_K to MAX_SPLIT_K, else a ValueError."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not MIN_SPLIT_K <= k <= MAX_SPLIT_K:
        raise ValueError(f"k must be a whole number from {MIN_SPLIT_K} to {MAX_SPLIT_K}, got {k!r}")
    return int(k)


def propose_split(X: np.ndarray, texts: Sequence[str], ids: Sequence[str], k: int, topic_id: str = "",
                  run: str = "", version: int = 0, random_state: int = 0, n_examples: int = 3) -> SplitProposal:
    """Fit GEM with ``k`` clusters (2..8) on ``X`` (the unit embeddings of one topic's documents,
    rows aligned with ``texts`` and ``ids``) and return the preview of splitting it: per child (largest
    first) its size, keywords, top-GIS examples and unit direction; each document goes to the
    child with the nearest direction (the rule documents are routed by in every later run). Pure:
    no database; ``topic_id``, ``run`` and ``version`` are carried into the proposal
    (``gem.workspace_ops.propose_topic_split`` reads them for a saved run)."""
    # gem.baselines imports scikit-learn (~0.8 s): only when a split is fitted
    from gem.baselines import make_estimator

    k = check_split_k(k)
    Xm = np.asarray(X)
    texts = np.asarray([str(t) for t in texts], dtype=object)
    ids = np.asarray([str(i) for i in ids], dtype=object)
    if not Xm.shape[0] == texts.size == ids.size:
        raise ValueError(f"{Xm.shape[0]} embeddings, {texts.size} texts and {ids.size} ids: they must be rows of "
                         "the same documents")
    if Xm.shape[0] < k * MIN_DOCS_PER_CHILD:
        where = f" in run {run}" if run else ""
        raise ValueError(f"{topic_id or 'the topic'} has {Xm.shape[0]} documents{where}; a split into {k} needs at "
                         f"least {k * MIN_DOCS_PER_CHILD}")
    est = make_estimator("gem", k, random_state=random_state).fit(Xm)
    D = np.asarray(est.mean_directions_, dtype=np.float64)
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    labels = np.argmax(Xm @ D.T, axis=1)  # the rule documents are routed by, in every later run
    sizes = np.bincount(labels, minlength=k)
    keep = np.flatnonzero(sizes > 0)[np.argsort(-sizes[sizes > 0], kind="stable")]  # largest first
    if keep.size < 2:
        raise ValueError(f"GEM found a single group in {topic_id or 'the topic'} at k = {k}: nothing to split")
    D = D[keep]
    labels = np.argmax(Xm @ D.T, axis=1)
    gis = gis_for_model(Xm, est, labels=keep[labels])
    kw = topic_keywords(list(texts), labels, gis, n_keywords=8)
    top = representatives(labels, gis, top=n_examples)
    return SplitProposal(
        topic_id=topic_id, run=run, version=int(version),
        sizes=[int(s) for s in np.bincount(labels, minlength=keep.size)],
        keywords=[list(kw.get(j, [])) for j in range(keep.size)],
        examples=[[(str(ids[i]), str(texts[i])) for i in top.get(j, [])] for j in range(keep.size)],
        directions=D, doc_ids=ids, labels=labels)


class RegroupMixin(TaxonomyDB):
    """Merge, unmerge, split (the topic's version for a proposal, accepting one), unsplit, and
    routing documents to stable ids."""

    # ------------------------------------------------------------------ merge
    def _live_topic(self, con, tid, what: str = "topic"):
        """The row of a topic that can be merged or split, else a ValueError saying why not."""
        if not isinstance(tid, str) or not tid:
            raise ValueError(f"{what} id must be text like 'T003', got {tid!r}")
        row = con.execute("SELECT * FROM topics WHERE id = ?", (tid,)).fetchone()
        if row is None:
            raise ValueError(f"no topic {tid} in {self.db_path}")
        if row["kind"] == "group":
            raise ValueError(f"{tid} is a group, not a topic: only topics can be merged or split")
        if row["status"] == "retired":
            where = f" (merged into {row['merged_into']})" if row["merged_into"] else ""
            raise ValueError(f"{tid} is retired{where}: only live topics can be merged or split")
        children = self._children(con, tid)
        if children:
            raise ValueError(f"{tid} was split into {', '.join(children)}: merge or split its "
                             "children, or unsplit it first")
        return row

    @staticmethod
    def _children(con, tid: str) -> list[str]:
        """The children a split topic routes its documents to (retired ones only when merged away)."""
        rows = con.execute(
            "SELECT id FROM topics WHERE split_from = ? AND (status != 'retired' OR merged_into IS NOT NULL)"
            " ORDER BY id", (tid,)).fetchall()
        return [r[0] for r in rows]

    def merge_topics(self, ids: Sequence[str], author: str, into: str | None = None) -> str:
        """Merge topics ``ids`` (two or more live topics) under one stable id: ``into`` if given (one
        of ``ids``), else the first. The others retire pointing to it (``merged_into``); the
        survivor's curator fields are kept. Audited; returns the survivor's id. Any bad id (unknown,
        retired, a group, a split topic, listed twice, fewer than two) changes nothing."""
        author = self._check_author(author)
        if isinstance(ids, str):
            raise ValueError("give the topic ids to merge as a list")
        ids = list(ids)
        dup = [t for t in ids if ids.count(t) > 1]
        if dup:
            raise ValueError(f"topic {dup[0]} is listed twice")
        if len(ids) < 2:
            raise ValueError(f"a merge needs at least two topics, got {len(ids)}")
        survivor = ids[0] if into is None else into
        if survivor not in ids:
            raise ValueError(f"--into {survivor} must be one of the merged topics ({', '.join(map(str, ids))})")
        at = utc_now_ms()
        with self._connect(write=True) as con:
            rows = {tid: self._live_topic(con, tid) for tid in ids}  # checked and written in one transaction
            for tid in ids:
                if tid == survivor:
                    continue
                row = rows[tid]
                con.execute("UPDATE topics SET status = 'retired', merged_into = ?, cluster = NULL,"
                            " version = version + 1, updated_at = ?, updated_by = ? WHERE id = ?",
                            (survivor, at, author, tid))
                self._audit(con, author, tid, "merged_into", None, survivor, at)
                self._audit(con, author, tid, "status", row["status"], "retired", at)
                # topics merged into it earlier now point to the survivor (chains stay one step)
                for (m,) in con.execute("SELECT id FROM topics WHERE merged_into = ?", (tid,)).fetchall():
                    con.execute("UPDATE topics SET merged_into = ? WHERE id = ?", (survivor, m))
                    self._audit(con, author, m, "merged_into", tid, survivor, at)
                # synced runs: the clusters of the merged topic map to the survivor (via it)
                con.execute("UPDATE run_topics SET via = COALESCE(via, topic_id), topic_id = ? WHERE topic_id = ?",
                            (survivor, tid))
            others = [t for t in ids if t != survivor]
            con.execute("UPDATE topics SET version = version + 1, updated_at = ?, updated_by = ? WHERE id = ?",
                        (at, author, survivor))
            self._audit(con, author, survivor, "merged", None, ", ".join(others), at)
        return survivor

    def unmerge_topic(self, topic_id: str, author: str) -> str:
        """Undo a merge for ``topic_id`` (merged into another): it points nowhere again, its clusters
        in the synced runs map back to it, and it is active again when the current run has one (else
        it stays retired until a sync brings its content back). Returns the topic it was merged into."""
        author = self._check_author(author)
        at = utc_now_ms()
        with self._connect(write=True) as con:
            row = con.execute("SELECT * FROM topics WHERE id = ?", (topic_id,)).fetchone()
            if row is None:
                raise ValueError(f"no topic {topic_id} in {self.db_path}")
            if not row["merged_into"]:
                raise ValueError(f"{topic_id} is not merged into another topic")
            into = row["merged_into"]
            con.execute("UPDATE run_topics SET topic_id = via, via = NULL WHERE via = ?", (topic_id,))
            cur = con.execute("SELECT value FROM settings WHERE key = 'current_run'").fetchone()
            here = None if cur is None else con.execute(
                "SELECT MIN(cluster) FROM run_topics WHERE run = ? AND topic_id = ?", (cur[0], topic_id)).fetchone()[0]
            split_child = row["split_from"] is not None
            status = "active" if (here is not None or split_child) else "retired"
            con.execute("UPDATE topics SET merged_into = NULL, status = ?, cluster = ?, version = version + 1,"
                        " updated_at = ?, updated_by = ? WHERE id = ?", (status, here, at, author, topic_id))
            self._audit(con, author, topic_id, "merged_into", into, None, at)
            if status != "retired":
                self._audit(con, author, topic_id, "status", "retired", status, at)
            con.execute("UPDATE topics SET version = version + 1, updated_at = ?, updated_by = ? WHERE id = ?",
                        (at, author, into))
            self._audit(con, author, into, "unmerged", topic_id, None, at)
        return into

    # ------------------------------------------------------------------ split
    def split_version(self, topic_id: str) -> int:
        """The version of ``topic_id`` when it can be split (a live topic, not a group, not split
        already; ValueError saying why not): a proposal records it, ``accept_split`` checks it."""
        with self._connect() as con:
            return int(self._live_topic(con, topic_id)["version"])

    def accept_split(self, proposal: SplitProposal, author: str) -> list[str]:
        """Store a previewed split: one new topic per child (provisional name from its keywords,
        made distinct from every live topic's name as a sync does,
        ``split_from`` and ``parent`` = the split topic, exclusion inherited, direction stored).
        Refused when the topic changed since the preview. Audited; returns the children's ids."""
        author = self._check_author(author)
        at = utc_now_ms()
        D = np.asarray(proposal.directions, dtype=np.float64)
        with self._connect(write=True) as con:
            row = self._live_topic(con, proposal.topic_id)
            if int(row["version"]) != int(proposal.version):
                raise ValueError(f"{proposal.topic_id} was changed by {row['updated_by'] or 'someone'} since the "
                                 "split was previewed; preview it again")
            dim = None if row["direction"] is None else len(row["direction"]) // 4
            if dim is not None and D.shape[1] != dim:
                raise ValueError(f"the split's directions have {D.shape[1]} dimensions, {proposal.topic_id} has {dim}")
            children = []
            taken = set(self._live_names(con))
            for j in range(proposal.k):
                cid = self._next_id(con, "T")
                name = distinct_name(provisional_name(proposal.keywords[j]), proposal.keywords[j], taken)
                taken.add(name_key(name))
                con.execute(
                    "INSERT INTO topics (id, kind, name, name_provisional, parent, excluded, status, run, keywords,"
                    " n_docs, split_from, split_direction, created_at, updated_at, updated_by)"
                    " VALUES (?, 'topic', ?, 1, ?, ?, 'active', ?, ?, ?, ?, ?, ?, ?, ?)",
                    (cid, name, proposal.topic_id, int(row["excluded"]),
                     proposal.run, json.dumps(proposal.keywords[j]), int(proposal.sizes[j]), proposal.topic_id,
                     to_blob(D[j]), at, at, author))
                self._audit(con, author, cid, "split_from", None, proposal.topic_id, at)
                children.append(cid)
            con.execute("UPDATE topics SET version = version + 1, updated_at = ?, updated_by = ? WHERE id = ?",
                        (at, author, proposal.topic_id))
            self._audit(con, author, proposal.topic_id, "split", None,
                        f"{', '.join(children)} (k {proposal.k}, run {proposal.run})", at)
        return children

    def unsplit_topic(self, topic_id: str, author: str) -> list[str]:
        """Undo a split: the children retire (labels kept) and the documents return to ``topic_id``."""
        author = self._check_author(author)
        at = utc_now_ms()
        with self._connect(write=True) as con:
            children = self._children(con, topic_id)
            if not children:
                raise ValueError(f"{topic_id} is not split")
            for cid in children:
                row = con.execute("SELECT status, merged_into FROM topics WHERE id = ?", (cid,)).fetchone()
                if row["merged_into"]:
                    raise ValueError(f"child {cid} of {topic_id} is merged into {row['merged_into']}: unmerge it first")
            for cid in children:
                con.execute("UPDATE topics SET status = 'retired', version = version + 1, updated_at = ?,"
                            " updated_by = ? WHERE id = ?", (at, author, cid))
                self._audit(con, author, cid, "status", "active", "retired", at)
            con.execute("UPDATE topics SET version = version + 1, updated_at = ?, updated_by = ? WHERE id = ?",
                        (at, author, topic_id))
            self._audit(con, author, topic_id, "unsplit", ", ".join(children), None, at)
        return children

    # ------------------------------------------------------------------ documents' stable ids
    def split_children(self) -> dict[str, tuple[list[str], np.ndarray]]:
        """split topic -> (its children's ids, their unit directions as rows)."""
        with self._connect() as con:
            return _split_children(con)

    def router(self) -> "TopicRouter":
        """A snapshot of the merges and splits that decide each document's stable id (one read), for
        callers that route many batches (``gem label``'s teacher) without reading the database each time."""
        with self._connect() as con:
            return TopicRouter(merged_survivors(con), _split_children(con))

    def route_documents(self, topic_ids: Sequence[str], X: np.ndarray | Callable[[], np.ndarray] | None = None
                        ) -> np.ndarray:
        """Stable id per document from its cluster's topic id: ``self.router().route(...)``."""
        return self.router().route(topic_ids, X)


def _split_children(con) -> dict[str, tuple[list[str], np.ndarray]]:
    rows = con.execute(
        "SELECT id, split_from, split_direction FROM topics WHERE split_from IS NOT NULL"
        " AND split_direction IS NOT NULL AND (status != 'retired' OR merged_into IS NOT NULL) ORDER BY id"
    ).fetchall()
    out: dict[str, tuple[list[str], list]] = {}
    for r in rows:
        ids, dirs = out.setdefault(r["split_from"], ([], []))
        ids.append(r["id"])
        dirs.append(from_blob(r["split_direction"]))
    return {p: (ids, np.stack(dirs)) for p, (ids, dirs) in out.items()}


@dataclass(frozen=True)
class TopicRouter:
    """merged topic -> survivor, and split topic -> (children's ids, their unit directions as rows)."""

    survivor: dict[str, str]
    children: dict[str, tuple[list[str], np.ndarray]]

    def route(self, topic_ids: Sequence[str], X: np.ndarray | Callable[[], np.ndarray] | None = None) -> np.ndarray:
        """Stable id per document from its cluster's topic id (``topic_ids``): a split topic's
        documents go to the child with the nearest direction (``X``: their embeddings, rows aligned,
        or a function returning them, called only when some topic is split), a merged topic's to its
        survivor. Returns an object array."""
        ids = np.asarray(topic_ids, dtype=object).copy()
        survivor, children = self.survivor, self.children
        for _ in range(16):  # splits nest at most as deep as curators split children
            if survivor:
                ids = np.asarray([survivor.get(t, t) for t in ids], dtype=object)
            todo = [t for t in dict.fromkeys(ids) if t in children]
            if not todo:
                break
            if callable(X):
                X = X()
            if X is None:
                raise ValueError(f"topic(s) {', '.join(todo)} are split: their documents' embeddings are needed")
            X = np.asarray(X)
            if X.shape[0] != ids.size:
                raise ValueError(f"{X.shape[0]} embeddings for {ids.size} documents")
            for t in todo:
                rows = np.flatnonzero(ids == t)
                child_ids, D = children[t]
                ids[rows] = np.asarray(child_ids, dtype=object)[np.argmax(X[rows] @ D.T, axis=1)]
        return ids


def topic_rows(table):
    """One row per stable id of a per-cluster topic table (``RunAnalysis.table`` merged with
    ``Taxonomy.topics(run)``): clusters merged into one topic are summed (n_docs, n_tokens, share),
    their mean_gis / kappa / tightness averaged weighted by documents, the other columns taken from
    the largest cluster; ``clusters`` lists them."""
    import pandas as pd

    if table.empty or table["id"].is_unique:
        return table.assign(clusters=[[int(c)] for c in table["cluster"]])
    t = table.sort_values("n_docs", ascending=False, kind="stable")
    out = t.groupby("id", sort=False).first()
    g = t.groupby("id", sort=False)
    for col in ("n_docs", "n_tokens", "share"):
        if col in t.columns:
            out[col] = g[col].sum()
    w = t["n_docs"].clip(lower=0).astype(float)
    for col in ("mean_gis", "kappa", "tightness"):
        if col in t.columns:
            num = (t[col].astype(float) * w).groupby(t["id"], sort=False).sum()
            den = w.groupby(t["id"], sort=False).sum()
            out[col] = (num / den.where(den > 0)).fillna(g[col].mean())
    out["clusters"] = g["cluster"].agg(lambda s: sorted(int(c) for c in s))
    return pd.DataFrame(out).reset_index()[list(table.columns) + ["clusters"]]
