"""Syncing fitted runs into the taxonomy: member sketches (bottom-k MinHash), their Jaccard
estimate, and the two-tier matching of a run's clusters to the topics. ``match_clusters`` decides
(pure: directions and sketches in, ``Matching`` out, no database); ``SyncMixin.sync_run`` reads the
topics, calls it and writes its decisions in one transaction (``_record_sync``).

Matching: two tiers. Each pair (cluster of the new run, topic) is judged on the cosine of the mean
directions and, when the sync is given each cluster's member document ids (``members``;
``gem.workspace_ops.sync_saved_run`` passes them from the run's assignments, curator-excluded
documents left out) and the topic has a member sketch from its last sync, on the members' Jaccard
|A & B| / |A | B|, estimated from bottom-k MinHash sketches
(the 256 smallest blake2b-64 hashes of the ids, 2 KiB per topic, ``members_sketch``; exact for
topics of <= 256 documents, else standard error <= 0.031):

- refused: cosine < 0.6 (``MIN_COSINE``, the ``min_cosine`` argument) or Jaccard < 0.2
  (``MIN_JACCARD``). The cluster becomes a new topic (or revives a retired one); the topic, if
  nothing else matches it, retires with its labels kept.
- plain match: cosine >= 0.9 (``STRICT_COSINE``) and, when both sides have sketches, Jaccard >= 0.5
  (``STRICT_JACCARD``): id, name and every curator field kept, nothing flagged.
- changed: kept but in between. The topic keeps its id; a provisional (never curator-named) topic
  just follows its new keywords; a curator-named one keeps its name but is flagged
  ``name_unconfirmed`` (``needs_confirmation`` in ``topics()``), its review goes back to
  'unreviewed', it is listed in ``SyncReport.changed`` and audited (old and new keywords, cosine,
  Jaccard). Saving its name (even unchanged) or approving it clears the flag.

Jaccard, not |A & B| / min(|A|, |B|): when a small topic is absorbed into a bigger, different
cluster, most of the small side can lie in the big one (share of the smaller side high) while the
cluster is mostly other content (Jaccard low); that is how the re-pointing below happened.

Calibration (sample_data, final embeddings, GEM K = 24 at balance auto / 100 / 1000 / 5000 for seeds
0, 1, 2 cold, plus per seed the app's warm-started lambda chain auto -> 100 -> 1000 -> 5000 -> 100
-> auto; 27 runs, every ordered pair of runs matched by Hungarian on cosine: 8,424 pairs). Member
agreement against exact Jaccard: 6,272 pairs with J >= 0.5 ("same topic": 79-100 % share >= 3 of
their top-5 keywords), 1,637 with 0.2 <= J < 0.5 (mixed: 47-63 %), 515 with J < 0.2 ("re-pointed":
98-100 % share at most 1 keyword). Cosine of the same-topic pairs: min 0.838, 1 % quantile 0.919,
median 0.996; of the re-pointed ones: median 0.451, 99 % 0.857, max 0.923 (the old rule, cosine >=
0.5 alone, kept 232 of them). No pair with J >= 0.2 has cosine < 0.61, hence the 0.6 floor. Cosine
alone at 0.9: 2 re-pointed pairs (J 0.198, 0.199) would pass plain, 44 same-topic pairs are flagged.
With members (sketch estimates, |error| median 0.010, max 0.085): 0 re-pointed pairs kept plain
(502 refused, 13 near J = 0.2 flagged), 6,208 of 6,272 same-topic pairs plain, 64 flagged (all
cross-seed or cold re-fits; none on the warm lambda steps the app makes). Replaying the runs in
sequence as the app syncs them (curator names every topic; 3 warm chains, 3 cold balance sweeps,
2 seed changes): the old rule kept 12 re-pointed topics silently, among them seed 0, lambda 100 ->
1000 (warm): T019 "test, tests, testing" -> "tryton, debian, module" (cosine 0.700, Jaccard 0.12):
the reported defect. The new rule keeps none silently: cosine alone flags 6 (T019 among them), with
members every re-pointed pair is refused (T019 retires, its cluster becomes a new topic); with
members 42 of 44 partial pairs are flagged and 612 of 612 same-topic pairs keep their names
without a flag.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from gem.arrays import as_matrix, unit_rows
from gem.gis import provisional_name
from gem.store import utc_now_ms
from gem.taxonomy.db import TaxonomyDB, distinct_name, from_blob, name_key, to_blob

# matching thresholds (see the module docstring for the rule and the measurements behind them)
MIN_COSINE = 0.6  # hard floor on the mean-direction cosine: below it a pair is refused
STRICT_COSINE = 0.9  # a plain match (id and name kept, no flag) needs at least this cosine ...
MIN_JACCARD = 0.2  # hard floor on the members' Jaccard |A & B| / |A | B| (when both sides have sketches)
STRICT_JACCARD = 0.5  # ... and, when both sides have member sketches, at least this Jaccard
SKETCH_SIZE = 256  # bottom-k MinHash: the k smallest 64-bit blake2b hashes of a topic's member ids

@dataclass
class SyncReport:
    """Outcome of syncing a run: cluster -> topic id for matched / new / revived, retired topic ids.

    ``changed`` (cluster -> topic id) is the subset of ``matched`` and ``revived`` whose curator-given
    name was kept on a weaker match (between the floors and the strict thresholds): the topic is
    flagged (``needs_confirmation`` in ``Taxonomy.topics()``) until a curator renames or approves it.
    ``cosine`` and ``jaccard`` (cluster -> value; ``jaccard``, the members' estimated Jaccard, only
    where both sides have member sketches) are the figures of every kept pair."""

    run: str
    matched: dict[int, str] = field(default_factory=dict)
    new: dict[int, str] = field(default_factory=dict)
    revived: dict[int, str] = field(default_factory=dict)
    retired: list[str] = field(default_factory=list)
    changed: dict[int, str] = field(default_factory=dict)
    cosine: dict[int, float] = field(default_factory=dict)
    jaccard: dict[int, float] = field(default_factory=dict)

    @property
    def mapping(self) -> dict[int, str]:
        return dict(sorted({**self.matched, **self.new, **self.revived}.items()))

    def summary(self) -> str:
        text = (
            f"run {self.run}: {len(self.matched)} matched, {len(self.new)} new, "
            f"{len(self.revived)} revived, {len(self.retired)} retired"
        )
        if self.changed:
            text += f"; {len(self.changed)} changed, confirm their names: {', '.join(self.changed.values())}"
        return text


# ---------------------------------------------------------------------------- member sketches
def hash_ids(ids: Sequence[str]) -> np.ndarray:
    """Stable 64-bit hashes of document ids (blake2b of the UTF-8 text; the same on every machine
    and Python process, unlike ``hash()``)."""
    blake = hashlib.blake2b
    raw = b"".join(blake(str(i).encode("utf-8"), digest_size=8).digest() for i in ids)
    return np.frombuffer(raw, dtype="<u8").astype(np.uint64)


def member_sketch(ids: Sequence[str], size: int = SKETCH_SIZE) -> np.ndarray:
    """Bottom-k MinHash sketch of a set of document ids: the ``size`` smallest distinct hashes,
    sorted (2 KiB at 256). A set of at most ``size`` ids is held exactly."""
    return np.unique(hash_ids(ids))[:size]


def _sketch_to_blob(sketch: np.ndarray) -> bytes:
    return np.ascontiguousarray(sketch, dtype="<u8").tobytes()


def sketch_from_blob(b: bytes | None) -> np.ndarray | None:
    """A member sketch as ``topics.members_sketch`` stores it (little-endian uint64 bytes) back as a
    uint64 array (None stays None)."""
    return None if b is None else np.frombuffer(b, dtype="<u8").astype(np.uint64)


def sketch_jaccard(a: np.ndarray, b: np.ndarray, size: int = SKETCH_SIZE) -> float:
    """Estimated Jaccard |A & B| / |A | B| of two id sets from their bottom-k sketches: of the
    ``size`` smallest hashes of A | B (all among the two sketches), the fraction in both. Exact when
    both sets have at most ``size`` members; standard error about sqrt(J (1 - J) / size) otherwise
    (<= 0.031 at 256)."""
    if a.size == 0 or b.size == 0:
        return 0.0
    union = np.union1d(a, b)[:size]
    both = np.intersect1d(a, b, assume_unique=True)
    return float(np.isin(union, both, assume_unique=True).sum()) / union.size


def merged_survivors(con) -> dict[str, str]:
    """merged topic id -> the topic it was merged into, followed to the end of the chain."""
    into = dict(con.execute("SELECT id, merged_into FROM topics WHERE merged_into IS NOT NULL").fetchall())
    out = {}
    for tid in into:
        seen, cur = {tid}, into[tid]
        while cur in into and cur not in seen:  # merges flatten chains; a cycle cannot be written, but stop anyway
            seen.add(cur)
            cur = into[cur]
        out[tid] = cur
    return out


@dataclass(frozen=True)
class KnownTopic:
    """A topic of the taxonomy as the matching sees it: its id, status ("active", "new" or
    "retired"), mean direction (any norm), member sketch from its last sync (None: none), and
    ``merged_into``: the topic it maps to when merged (the end of the merge chain), else None."""

    id: str
    status: str
    direction: np.ndarray
    sketch: np.ndarray | None = None
    merged_into: str | None = None


@dataclass
class Matching:
    """The decisions of one matching (``match_clusters``), cluster indices as keys.

    ``matched``: cluster -> stable id, pass 1 (a live topic, or the survivor of the merged topic it
    matched, that one in ``via``); ``revived``: cluster -> retired topic, pass 2; ``new``: clusters
    no topic takes; ``retired``: live topics no cluster takes (in the order given). ``changed``: the
    kept clusters (matched or revived) whose pair lies between the floors and the strict thresholds
    (the sync flags the curator-named ones among them); ``cosine`` / ``jaccard``: the kept pairs'
    figures (``jaccard`` only where both sides have member sketches)."""

    matched: dict[int, str] = field(default_factory=dict)
    revived: dict[int, str] = field(default_factory=dict)
    new: list[int] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)
    via: dict[int, str] = field(default_factory=dict)
    changed: list[int] = field(default_factory=list)
    cosine: dict[int, float] = field(default_factory=dict)
    jaccard: dict[int, float] = field(default_factory=dict)

    @property
    def mapping(self) -> dict[int, str]:
        """cluster -> stable id of every kept cluster (matched and revived)."""
        return dict(sorted({**self.matched, **self.revived}.items()))


def match_clusters(
    mean_directions: np.ndarray,
    sketches: Sequence[np.ndarray | None] | None,
    topics: Sequence[KnownTopic],
    min_cosine: float = MIN_COSINE,
    strict_cosine: float = STRICT_COSINE,
    min_jaccard: float = MIN_JACCARD,
    strict_jaccard: float = STRICT_JACCARD,
) -> Matching:
    """Match a run's clusters (``mean_directions``: K rows, any norm; ``sketches``: per cluster the
    bottom-k sketch of its member ids, None or empty for none, or None for no members at all) to the
    taxonomy's ``topics`` by the two-tier rule of the module docstring. Pure: no database.

    Pass 1: Hungarian over the admissible pairs of clusters and live topics (plus the merged ones,
    which map to their survivor): plain pairs preferred, then cosine; refused pairs (cosine below
    ``min_cosine``, or members' Jaccard below ``min_jaccard`` where both sides have sketches) are
    never chosen. Pass 2: the clusters left over against the retired (not merged) topics. The rest
    are new; live topics left unmatched retire."""
    from scipy.optimize import linear_sum_assignment  # ~0.3 s to import: only when a run is matched

    M = unit_rows(as_matrix(mean_directions, "mean_directions"), name="mean_directions")
    K = M.shape[0]
    if sketches is not None and len(sketches) != K:
        raise ValueError(f"sketches has {len(sketches)} entries for {K} clusters")
    for t in topics:
        if np.shape(t.direction) != (M.shape[1],):
            raise ValueError(f"topic {t.id} has a direction of shape {np.shape(t.direction)}, the clusters "
                             f"have {M.shape[1]} dimensions")
    live = [t for t in topics if t.status != "retired"]
    # a topic merged into another keeps its direction and sketch: it matches with the live ones,
    # and the cluster it takes maps to the topic it was merged into (see gem.taxonomy.regroup)
    merged = [t for t in topics if t.status == "retired" and t.merged_into]
    retired = [t for t in topics if t.status == "retired" and not t.merged_into]
    out = Matching()
    unmatched = list(range(K))
    for pool, bucket in ((live + merged, out.matched), (retired, out.revived)):
        if not pool or not unmatched:
            continue
        D = np.stack([np.asarray(t.direction, dtype=np.float64) for t in pool])
        D /= np.linalg.norm(D, axis=1, keepdims=True)
        S = M[unmatched] @ D.T
        J = np.full(S.shape, np.nan)  # members' Jaccard, NaN where a side has no sketch
        if sketches is not None:
            for b, t in enumerate(pool):
                if t.sketch is None or not np.size(t.sketch):
                    continue
                for a, c in enumerate(unmatched):
                    mine = sketches[c]
                    if mine is not None and mine.size and S[a, b] >= min_cosine:  # pairs refused by cosine: moot
                        J[a, b] = sketch_jaccard(mine, t.sketch)
        known = ~np.isnan(J)
        admissible = (S >= min_cosine) & ~(known & (np.nan_to_num(J) < min_jaccard))
        plain = admissible & (S >= strict_cosine) & ~(known & (np.nan_to_num(J) < strict_jaccard))
        # every admissible pair scores in [1, 4] (plain ones 1 higher), refused ones 0
        score = np.where(admissible, 2.0 + S + plain, 0.0)
        ri, ci = linear_sum_assignment(score, maximize=True)
        for a, b in zip(ri, ci):
            if admissible[a, b]:
                c, t = unmatched[a], pool[b]
                bucket[c] = t.merged_into or t.id
                if t.merged_into:
                    out.via[c] = t.id
                if not plain[a, b]:
                    out.changed.append(c)
                out.cosine[c] = float(S[a, b])
                if known[a, b]:
                    out.jaccard[c] = float(J[a, b])
        unmatched = [c for c in unmatched if c not in bucket]
    out.new = unmatched
    out.changed.sort()
    kept = set(out.matched.values())
    out.retired = [t.id for t in live if t.id not in kept]
    return out


class SyncMixin(TaxonomyDB):
    """Syncing a fitted run into the taxonomy: ``match_clusters`` decides, ``_record_sync`` writes."""

    # ------------------------------------------------------------------ sync
    def sync_run(
        self,
        run_name: str,
        mean_directions: np.ndarray,
        keywords: Mapping[int, Sequence[str]] | Sequence[Sequence[str]] | None = None,
        sizes: Sequence[int] | None = None,
        min_cosine: float = MIN_COSINE,
        author: str = "system",
        members: Mapping[int, Sequence[str]] | Sequence[Sequence[str]] | None = None,
        strict_cosine: float = STRICT_COSINE,
        min_jaccard: float = MIN_JACCARD,
        strict_jaccard: float = STRICT_JACCARD,
    ) -> SyncReport:
        """Match a run's clusters to the taxonomy and record the mapping (see the module docstring).

        ``members``: per cluster, the ids of its documents (K sequences of str). Each topic keeps a
        bottom-k sketch of them, so the next sync can check that a matched pair shares members.

        Pairs are classed by the two-tier rule: refused below ``min_cosine`` (cosine) or
        ``min_jaccard`` (members' Jaccard, when both sides have sketches); a plain match at or above
        ``strict_cosine`` and (with sketches) ``strict_jaccard``; in between, kept but changed (a
        curator-named topic is flagged ``name_unconfirmed``, its review reset to unreviewed).
        Pass 1: Hungarian over the admissible pairs of clusters and active/new topics (plain pairs
        preferred, then cosine; refused pairs never chosen, so a cluster refused by one topic may
        still match another).
        Pass 2: the clusters left over against retired topics (revival, so curator work comes back
        when a cluster returns). The rest become new topics. Active topics left unmatched are
        retired. Syncing the same run again is idempotent. The matching is ``match_clusters``
        (pure); this reads the topics and writes its decisions in one transaction.
        """
        if not isinstance(run_name, str) or not run_name:
            raise ValueError("run_name must be a non-empty string")
        for name, value in (("min_cosine", min_cosine), ("strict_cosine", strict_cosine)):
            if not -1.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [-1, 1], got {value}")
        for name, value in (("min_jaccard", min_jaccard), ("strict_jaccard", strict_jaccard)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        M = unit_rows(as_matrix(mean_directions, "mean_directions"), name="mean_directions")
        K, d = M.shape
        kw = self._keywords_list(keywords, K)
        sketches = self._sketches(members, K)
        if sizes is None and members is not None:
            sizes = [n for _, n in sketches]
        if sizes is not None:
            sizes = [int(s) for s in sizes]
            if len(sizes) != K:
                raise ValueError(f"sizes has {len(sizes)} entries for {K} clusters")
        at = utc_now_ms()
        with self._connect(write=True) as con:
            # topics this run flagged when it was last synced: a re-sync reports them again
            prev_changed = {
                r[0] for r in con.execute("SELECT topic_id FROM run_topics WHERE run = ? AND changed = 1", (run_name,))
            }
            # a re-sync of the same run replaces its previous mapping
            con.execute("DELETE FROM runs WHERE name = ?", (run_name,))
            rows = con.execute(
                "SELECT id, status, direction, members_sketch, merged_into FROM topics"
                " WHERE kind = 'topic' AND direction IS NOT NULL"
            ).fetchall()
            for r in rows:
                if len(r["direction"]) != 4 * d:
                    raise ValueError(
                        f"run {run_name!r} has {d}-dimensional directions but topic {r['id']} was fitted on "
                        f"{len(r['direction']) // 4} dimensions (another embedding); use a new workspace "
                        "or the same representation"
                    )
            survivor = merged_survivors(con)
            topics = [KnownTopic(r["id"], r["status"], from_blob(r["direction"]),
                                 sketch_from_blob(r["members_sketch"]) if r["members_sketch"] else None,
                                 survivor.get(r["id"]))
                      for r in rows]
            decision = match_clusters(mean_directions, None if sketches is None else [s for s, _ in sketches], topics,
                                      min_cosine=min_cosine, strict_cosine=strict_cosine, min_jaccard=min_jaccard,
                                      strict_jaccard=strict_jaccard)
            live = {t.id: t.status for t in topics if t.status != "retired"}
            report = self._record_sync(con, run_name, decision, M, kw, sizes, sketches, min_cosine,
                                       first_sync=not rows, live=live, prev_changed=prev_changed, author=author, at=at)
        return report

    def _record_sync(self, con, run_name: str, decision: Matching, M: np.ndarray, kw: list[list[str]],
                     sizes: list[int] | None, sketches, min_cosine: float, first_sync: bool, live: Mapping[str, str],
                     prev_changed: set[str], author: str, at: str) -> SyncReport:
        """Write a matching's decisions for run ``run_name`` (inside ``sync_run``'s transaction): the
        run and its cluster -> topic rows, the matched and revived topics' new content (a provisional
        name following the keywords, a curator-named one flagged on a changed pair), the new topics,
        the retired ones, the current run. ``live``: id -> status of the live topics the matching saw."""
        report = SyncReport(run=run_name, matched=dict(decision.matched), revived=dict(decision.revived),
                            cosine=dict(decision.cosine), jaccard=dict(decision.jaccard))
        via, unmatched = decision.via, list(decision.new)
        tiers = {c: "changed" if c in decision.changed else "plain" for c in decision.mapping}
        con.execute(
            "INSERT INTO runs (name, synced_at, n_clusters, min_cosine) VALUES (?, ?, ?, ?)",
            (run_name, at, M.shape[0], float(min_cosine)),
        )

        def sketch_of(c):  # a sync without members leaves no sketch (it would describe older content)
            return None if sketches is None or not sketches[c][0].size else _sketch_to_blob(sketches[c][0])

        placed = {tid for c, tid in report.matched.items() if c not in via} | set(report.revived.values())
        names_for = self._provisional_names(con, (report.matched, report.revived), via, unmatched, kw, set(live))
        for outcome, bucket in (("matched", report.matched), ("revived", report.revived)):
            for c, tid in list(bucket.items()):
                if c in via:
                    self._sync_via(con, run_name, c, tid, via[c], M[c], kw[c], sizes, sketch_of(c), report,
                                   tid not in placed, author, at)
                    placed.add(tid)
                    continue
                old = con.execute(
                    "SELECT status, name, name_provisional, run, review, keywords, name_unconfirmed"
                    " FROM topics WHERE id = ?",
                    (tid,),
                ).fetchone()
                # a still-provisional name follows the keywords; a curator's name never changes here
                name = names_for.get(c, old["name"])  # names_for: the provisional ones with keywords
                # re-syncing the run that created a topic keeps it flagged new (idempotent re-sync)
                resync_new = old["status"] == "new" and old["run"] == run_name
                status = "new" if resync_new else "active"
                con.execute(
                    "UPDATE topics SET status = ?, cluster = ?, run = ?, direction = ?, keywords = ?,"
                    " n_docs = ?, name = ?, members_sketch = ? WHERE id = ?",
                    (status, c, run_name, to_blob(M[c]), json.dumps(kw[c]), None if sizes is None else sizes[c],
                     name, sketch_of(c), tid),
                )
                if old["status"] != status:
                    self._audit(con, author, tid, "status", old["status"], status, at)
                if name != old["name"]:  # a provisional name followed the keywords: audited, editors reload
                    con.execute("UPDATE topics SET version = version + 1, updated_at = ?, updated_by = ? WHERE id = ?",
                                (at, "system", tid))
                    self._audit(con, "system", tid, "name", old["name"], name, at)
                changed = False
                if tiers[c] == "changed" and not old["name_provisional"]:
                    # the content moved: keep the id, but the curator must confirm the name
                    changed = True
                    shared = f", members' Jaccard {report.jaccard[c]:.2f}" if c in report.jaccard else ""
                    old_kw = ", ".join(json.loads(old["keywords"])[:5])
                    con.execute(
                        "UPDATE topics SET name_unconfirmed = 1, review = 'unreviewed', version = version + 1,"
                        " updated_at = ?, updated_by = ? WHERE id = ?",
                        (at, author, tid),
                    )
                    self._audit(
                        con, author, tid, "name_unconfirmed", old["name_unconfirmed"],
                        f"1 (run {run_name}: cosine {report.cosine[c]:.2f}{shared}; keywords were "
                        f"[{old_kw}], now [{', '.join(kw[c][:5])}])", at,
                    )
                    if old["review"] != "unreviewed":
                        self._audit(con, author, tid, "review", old["review"], "unreviewed", at)
                elif tid in prev_changed and old["name_unconfirmed"]:
                    changed = True  # re-sync of the run that flagged it, not confirmed since
                if changed:
                    report.changed[c] = tid
                if resync_new:
                    del report.matched[c]
                    report.new[c] = tid
                con.execute(
                    "INSERT INTO run_topics (run, cluster, topic_id, cosine, outcome, jaccard, changed)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (run_name, c, tid, report.cosine[c], "new" if resync_new else outcome, report.jaccard.get(c),
                     int(changed)),
                )
        for c in unmatched:
            tid = self._next_id(con, "T")
            status = "active" if first_sync else "new"
            con.execute(
                "INSERT INTO topics (id, kind, name, status, cluster, run, direction, keywords, n_docs,"
                " members_sketch, created_at, updated_at, updated_by)"
                " VALUES (?, 'topic', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (tid, names_for[c], status, c, run_name, to_blob(M[c]), json.dumps(kw[c]),
                 None if sizes is None else sizes[c], sketch_of(c), at, at, author),
            )
            self._audit(con, author, tid, "status", None, status, at)
            con.execute(
                "INSERT INTO run_topics (run, cluster, topic_id, cosine, outcome) VALUES (?, ?, ?, NULL, 'new')",
                (run_name, c, tid),
            )
            report.new[c] = tid
        for tid in decision.retired:
            con.execute("UPDATE topics SET status = 'retired', cluster = NULL WHERE id = ?", (tid,))
            self._audit(con, author, tid, "status", live[tid], "retired", at)
            report.retired.append(tid)
        con.execute("INSERT OR REPLACE INTO settings (key, value) VALUES ('current_run', ?)", (run_name,))
        return report

    def _sync_via(self, con, run_name: str, c: int, tid: str, via: str, direction, keywords, sizes, sketch,
                  report: SyncReport, place: bool, author: str, at: str) -> None:
        """Record cluster ``c`` matched through ``via``, a topic merged into ``tid``: the merged topic
        keeps following its content (direction, keywords, sketch; still retired), the cluster maps to
        ``tid``; ``place``: ``tid`` took no cluster of this run directly, so it takes this one."""
        con.execute(
            "UPDATE topics SET run = ?, direction = ?, keywords = ?, n_docs = ?, members_sketch = ? WHERE id = ?",
            (run_name, to_blob(direction), json.dumps(keywords), None if sizes is None else sizes[c], sketch, via),
        )
        if place:
            old = con.execute("SELECT status FROM topics WHERE id = ?", (tid,)).fetchone()["status"]
            con.execute("UPDATE topics SET status = 'active', cluster = ?, run = ? WHERE id = ?", (c, run_name, tid))
            if old != "active":
                self._audit(con, author, tid, "status", old, "active", at)
        con.execute(
            "INSERT INTO run_topics (run, cluster, topic_id, cosine, outcome, jaccard, changed, via)"
            " VALUES (?, ?, ?, ?, 'matched', ?, 0, ?)",
            (run_name, c, tid, report.cosine[c], report.jaccard.get(c), via),
        )

    @staticmethod
    def _provisional_names(con, buckets, via: Mapping[int, str], unmatched: Sequence[int], kw,
                           matchable: set[str]) -> dict[int, str]:
        """The provisional name of every cluster whose topic takes one in this sync (a still
        provisional topic matched directly, with keywords; a new topic), no two of them and no other
        topic live after the sync sharing one: the keeping names (curator names, provisional topics
        without keywords, live topics outside the matching such as split children: every live topic
        but ``matchable`` ones, which this sync matches or retires) are taken first, then the provisional ones in id order (a new topic after
        every older one), each made distinct with its first keyword not in the name
        (``gem.taxonomy.db.distinct_name``). The same order on a re-sync gives the same names."""
        todo: dict[int, str] = {}  # cluster -> topic id
        named: set[str] = set()
        for bucket in buckets:
            for c, tid in bucket.items():
                row = con.execute("SELECT name, name_provisional FROM topics WHERE id = ?", (tid,)).fetchone()
                if c not in via and row["name_provisional"] and kw[c]:
                    todo[c] = tid
                else:
                    named.add(tid)
        taken = set(TaxonomyDB._live_names(con, exclude=matchable | set(todo.values())))
        for tid in named - set(todo.values()):
            taken.add(name_key(con.execute("SELECT name FROM topics WHERE id = ?", (tid,)).fetchone()["name"]))
        order = sorted(todo, key=lambda c: (len(todo[c]), todo[c])) + list(unmatched)
        out: dict[int, str] = {}
        for c in order:
            out[c] = distinct_name(provisional_name(kw[c]), kw[c], taken)
            taken.add(name_key(out[c]))
        return out

    @staticmethod
    def _sketches(members, K: int) -> list[tuple[np.ndarray, int]] | None:
        """(bottom-k sketch, number of ids) per cluster, or None without members."""
        if members is None:
            return None
        if isinstance(members, Mapping):
            members = [members.get(k, members.get(str(k), ())) for k in range(K)]
        members = list(members)
        if len(members) != K:
            raise ValueError(f"members has {len(members)} entries for {K} clusters")
        out = []
        for k, ids in enumerate(members):
            if isinstance(ids, (str, bytes)):
                raise ValueError(f"members[{k}] must be a sequence of document ids, not a single string")
            ids = [str(i) for i in ids]
            out.append((member_sketch(ids), len(ids)))
        return out

    @staticmethod
    def _keywords_list(keywords, K: int) -> list[list[str]]:
        if keywords is None:
            return [[] for _ in range(K)]
        if isinstance(keywords, Mapping):
            return [[str(w) for w in keywords.get(k, keywords.get(str(k), []))] for k in range(K)]
        keywords = list(keywords)
        if len(keywords) != K:
            raise ValueError(f"keywords has {len(keywords)} entries for {K} clusters")
        return [[str(w) for w in ks] for ks in keywords]

    def run_mapping(self, run_name: str | None = None) -> dict[int, str]:
        """cluster index -> topic id for a synced run (default: the current run)."""
        run_name = run_name or self.current_run
        with self._connect() as con:
            rows = con.execute("SELECT cluster, topic_id FROM run_topics WHERE run = ? ORDER BY cluster", (run_name,))
            return {int(r[0]): r[1] for r in rows}

